"""The article's code example, corrected (Flatten, compile, fit), with only the import changed."""

from __future__ import annotations

import numpy as np


def test_article_code_runs_as_keras_would(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    # --- verbatim from the issue -----------------------------------------------------------------
    from cnnkit import datasets, layers, models

    (train_images, train_labels), (val_images, val_labels) = datasets.load_data("digits")
    model = models.Sequential()
    model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))
    model.add(layers.Dense(10, activation="softmax"))
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(train_images, train_labels, epochs=10, validation_data=(val_images, val_labels))
    model.summary()
    loss, acc = model.evaluate(val_images, val_labels)
    probs = model.predict(val_images[:5])  # (5, 10) NumPy, rows sum to 1
    model.save("digits.safetensors")
    again = models.load_model("digits.safetensors")
    # ------------------------------------------------------------------------------------------------
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert all(len(values) == 10 for values in history.history.values())
    assert history.history["val_accuracy"][-1] >= 0.95 and acc >= 0.95
    assert acc == history.history["val_accuracy"][-1] and loss == history.history["val_loss"][-1]
    assert model.count_params() == 93_322
    out = capsys.readouterr().out
    assert "Total params: 93,322" in out and "epoch 10/10" in out
    assert isinstance(probs, np.ndarray) and probs.shape == (5, 10)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, atol=1e-5)
    np.testing.assert_array_equal(again.predict(val_images[:5]), probs)
