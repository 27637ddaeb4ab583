"""Sequential against Keras' published shapes and counts, and Keras' training API."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnkit import callbacks, kernels, layers, losses, models, optimizers
from cnnkit.errors import ConfigError, DataError, ShapeError

# Figures printed by Keras 3.15.1 on TensorFlow 2.21 (`layer.name`, `layer.output.shape`,
# `layer.count_params()`) for the same three models built in Keras by tests/fixtures/keras_shapes.py.
# The article's model also matches TensorFlow's CNN tutorial (93,322 parameters).
ARTICLE_KERAS = [
    ("conv2d", "Conv2D", (None, 26, 26, 32), 320),
    ("max_pooling2d", "MaxPooling2D", (None, 13, 13, 32), 0),
    ("conv2d_1", "Conv2D", (None, 11, 11, 64), 18496),
    ("max_pooling2d_1", "MaxPooling2D", (None, 5, 5, 64), 0),
    ("conv2d_2", "Conv2D", (None, 3, 3, 64), 36928),
    ("flatten", "Flatten", (None, 576), 0),
    ("dense", "Dense", (None, 64), 36928),
    ("dense_1", "Dense", (None, 10), 650),
]
EVERY_LAYER_KERAS = (
    [(None, 16, 16, 16), (None, 16, 16, 16), (None, 16, 16, 16), (None, 16, 16, 24), (None, 8, 8, 24),
     (None, 2, 4, 32), (None, 2, 4, 32), (None, 2, 4, 32), (None, 32), (None, 7)],
    [768, 64, 0, 2328, 0, 19232, 0, 0, 0, 231], 22623, 22591,
)  # fmt: skip
ODD_SHAPES_KERAS = (
    [(None, 27, 19, 8), (None, 27, 19, 8), (None, 9, 7, 8), (None, 5, 4, 12), (None, 2, 2, 12), (None, 12),
     (None, 20), (None, 20), (None, 20), (None, 3)],
    [80, 24, 0, 876, 0, 0, 240, 80, 0, 63], 1363, 1307,
)  # fmt: skip


def article_model() -> models.Sequential:
    model = models.Sequential()
    model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))
    model.add(layers.Dense(10, activation="softmax"))
    return model


def every_layer_model() -> models.Sequential:
    return models.Sequential([
        layers.Input(shape=(32, 32, 3)),
        layers.Conv2D(16, 4, strides=2, padding="same", use_bias=False),
        layers.BatchNormalization(),
        layers.Activation("relu"),
        layers.Conv2D(24, (2, 3), padding="same", activation="tanh"),
        layers.AveragePooling2D((3, 3), strides=2, padding="same"),
        layers.Conv2D(32, (5, 5), strides=(2, 1), padding="valid", activation="sigmoid"),
        layers.MaxPooling2D(pool_size=(2, 2), strides=1, padding="same"),
        layers.Dropout(0.25),
        layers.GlobalAveragePooling2D(),
        layers.Dense(7, activation="softmax"),
    ])  # fmt: skip


def odd_shapes_model() -> models.Sequential:
    return models.Sequential([
        layers.Input(shape=(27, 19, 1)),
        layers.Conv2D(8, 3, padding="same", activation="relu"),
        layers.BatchNormalization(center=False),
        layers.MaxPooling2D(3, padding="same"),
        layers.Conv2D(12, (3, 3), strides=2, padding="same", activation="linear"),
        layers.AveragePooling2D(2),
        layers.GlobalMaxPooling2D(),
        layers.Dense(20, activation="relu", use_bias=False),
        layers.BatchNormalization(),
        layers.Dropout(0.5),
        layers.Dense(3),
    ])  # fmt: skip


def test_article_model_matches_keras_names_shapes_and_counts():
    model = article_model()
    got = [(layer.name, type(layer).__name__, layer.output_shape, layer.count_params()) for layer in model.layers]
    assert got == ARTICLE_KERAS
    assert model.count_params() == 93_322


@pytest.mark.parametrize(
    "build,expected", [(every_layer_model, EVERY_LAYER_KERAS), (odd_shapes_model, ODD_SHAPES_KERAS)]
)
def test_architectures_match_keras(build, expected):
    shapes, params, total, trainable = expected
    model = build()
    assert [layer.output_shape for layer in model.layers] == shapes
    assert [layer.count_params() for layer in model.layers] == params
    assert model.count_params() == total
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == trainable
    with torch.no_grad():
        h, w, c = model.image_shape
        model.eval()
        assert tuple(model(torch.randn(2, c, h, w)).shape) == (2, shapes[-1][-1])


def test_summary_prints_keras_table():
    lines = []
    article_model().summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert "conv2d_1 (Conv2D)" in text and "(None, 11, 11, 64)" in text and "18,496" in text
    assert "Total params: 93,322 (364.54 KB)" in text
    assert "Non-trainable params: 0" in text


def test_article_model_without_flatten_fails_at_add():
    model = models.Sequential()
    model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Conv2D(64, (3, 3), activation="relu"))
    with pytest.raises(ShapeError, match=r"Dense layer 'dense' got a 4-D input \(None, 3, 3, 64\).*Flatten\(\)"):
        model.add(layers.Dense(64, activation="relu"))
    assert len(model.layers) == 5  # the failed add left the model usable
    model.add(layers.Flatten())
    model.add(layers.Dense(64, activation="relu"))


def test_shape_error_at_fit_when_no_input_shape_was_given(rng):
    model = models.Sequential([layers.Conv2D(4, 3), layers.Dense(2, activation="softmax")])  # forgot Flatten
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    with pytest.raises(ShapeError, match="Flatten"):
        model.fit(rng.random((8, 10, 10, 1), dtype=np.float32), np.zeros(8), verbose=0)


def test_deferred_build_from_data_and_grayscale_nhw(rng):
    model = models.Sequential(
        [layers.Conv2D(4, 3, activation="relu"), layers.Flatten(), layers.Dense(3, activation="softmax")]
    )
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = rng.random((16, 9, 9), dtype=np.float32)  # (N, H, W): grayscale without the channel axis
    model.fit(x, rng.integers(0, 3, 16), epochs=1, verbose=0)
    assert model.input_shape == (None, 9, 9, 1)
    probs = model.predict(x[:4])
    assert probs.shape == (4, 3) and np.allclose(probs.sum(1), 1, atol=1e-5)


def test_fit_learns_with_validation_split_and_history(rng):
    x = rng.random((120, 8, 8, 1), dtype=np.float32)
    y = (x[:, :4].mean(axis=(1, 2, 3)) > x[:, 4:].mean(axis=(1, 2, 3))).astype(int)  # top half brighter?
    model = models.Sequential([layers.Input((8, 8, 1)), layers.Flatten(), layers.Dense(16, activation="relu"),
                               layers.Dense(2, activation="softmax")])  # fmt: skip
    model.compile(
        optimizer=optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy", metrics=["accuracy"]
    )
    history = model.fit(x, y, epochs=30, batch_size=16, validation_split=0.25, verbose=0)
    assert set(history.history) == {"loss", "accuracy", "val_loss", "val_accuracy"}
    assert len(history.history["loss"]) == 30 and history.epoch == list(range(30))
    assert history.history["loss"][-1] < history.history["loss"][0]
    assert history.history["accuracy"][-1] > 0.9


def test_evaluate_return_forms(rng):
    model = models.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    x, y = rng.random((10, 4, 4, 1), dtype=np.float32), rng.integers(0, 3, 10)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    assert isinstance(model.evaluate(x, y, verbose=0), float)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    loss, acc = model.evaluate(x, y, verbose=0)
    with torch.no_grad():
        logits = model(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert loss == pytest.approx(float(torch.nn.functional.cross_entropy(logits, torch.from_numpy(y))), rel=1e-5)
    assert model.evaluate(x, y, verbose=0, return_dict=True).keys() == {"loss", "accuracy"}


def test_categorical_crossentropy_with_one_hot_labels(rng):
    model = models.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    y = np.eye(3)[rng.integers(0, 3, 12)]
    history = model.fit(rng.random((12, 4, 4, 1), dtype=np.float32), y, epochs=2, verbose=0)
    assert 0 <= history.history["accuracy"][-1] <= 1


def test_loss_is_computed_from_logits_not_clipped_probabilities():
    """A confidently wrong prediction has a huge loss, not Keras' clipped log(1e-7) = 16.1."""
    model = models.Sequential([layers.Input((1, 1, 1)), layers.Flatten(), layers.Dense(2, activation="softmax")])
    model.layers[-1].set_weights([np.array([[100.0, -100.0]], np.float32), np.zeros(2, np.float32)])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    loss = model.evaluate(np.ones((1, 1, 1, 1), np.float32), np.array([1]), verbose=0)
    assert loss == pytest.approx(200.0, rel=1e-4)


def test_loss_and_output_mismatch_is_explained():
    model = models.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    with pytest.raises(ConfigError, match="from_logits=True.*softmax"):
        model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    model = models.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(3)])
    with pytest.raises(ConfigError, match="no softmax"):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))


def test_labels_out_of_range_and_mismatched_lengths(rng):
    model = models.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.random((6, 4, 4, 1), dtype=np.float32)
    with pytest.raises(DataError, match=r"0\.\.2"):
        model.fit(x, np.array([0, 1, 2, 3, 0, 1]), verbose=0)
    with pytest.raises(DataError, match="6 images but 5 labels"):
        model.fit(x, np.zeros(5), verbose=0)
    with pytest.raises(ShapeError, match=r"\(None, 4, 4, 1\)"):
        model.predict(rng.random((2, 5, 5, 1), dtype=np.float32))


def test_fit_before_compile_and_unknown_names():
    model = models.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    with pytest.raises(ConfigError, match="compile"):
        model.fit(np.zeros((2, 4, 4, 1)), np.zeros(2))
    with pytest.raises(ConfigError, match="unknown optimizer"):
        model.compile(optimizer="adamax", loss="sparse_categorical_crossentropy")
    with pytest.raises(ConfigError, match="unknown metric"):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["auc"])


def test_get_and_set_weights_in_keras_layout():
    model = article_model()
    shapes = [w.shape for w in model.get_weights()]
    assert shapes[0] == (3, 3, 1, 32) and shapes[6] == (576, 64)
    model.set_weights([np.full(s, 0.01, np.float32) for s in shapes])
    assert all(np.all(w == 0.01) for w in model.get_weights())


def test_config_round_trip():
    model = every_layer_model()
    again = models.Sequential.from_config(model.get_config())
    assert again.get_config() == model.get_config()
    assert again.count_params() == model.count_params()


def test_any_torch_module_trains_through_the_same_engine(rng):
    net = nn.Sequential(nn.Conv2d(1, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 6 * 6, 2))
    model = models.Model(net, input_shape=(8, 8, 1), name="custom")
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = rng.random((32, 8, 8, 1), dtype=np.float32)
    history = model.fit(x, rng.integers(0, 2, 32), epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    assert model.predict(x[:3]).shape == (3, 2)
    rows = model.summary_rows()
    assert rows[0] == ("0", "Conv2d", "(None, 6, 6, 4)", 40)


def test_callbacks_early_stopping_checkpoint_and_csv(tmp_path, rng):
    x = rng.random((40, 4, 4, 1), dtype=np.float32)
    y = rng.integers(0, 2, 40)
    model = models.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(2, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(learning_rate=1e-9), loss="sparse_categorical_crossentropy")
    stop = callbacks.EarlyStopping(monitor="loss", patience=2, min_delta=1.0)
    ckpt = callbacks.ModelCheckpoint(tmp_path / "epoch{epoch:02d}.safetensors")
    log = callbacks.CSVLogger(tmp_path / "log.csv")
    history = model.fit(x, y, epochs=50, callbacks=[stop, ckpt, log], verbose=0)
    assert len(history.epoch) == 3 and stop.stopped_epoch == 2  # nothing improves by 1.0
    assert sorted(p.name for p in tmp_path.glob("*.safetensors")) == [
        "epoch01.safetensors",
        "epoch02.safetensors",
        "epoch03.safetensors",
    ]
    assert (tmp_path / "log.csv").read_text().splitlines()[0].startswith("epoch,loss")
    assert len((tmp_path / "log.csv").read_text().splitlines()) == 4
    reloaded = models.load_model(tmp_path / "epoch03.safetensors")
    np.testing.assert_allclose(reloaded.predict(x), model.predict(x), atol=1e-6)


def test_model_checkpoint_save_best_only_and_restore_best_weights(tmp_path, rng):
    x = rng.random((40, 4, 4, 1), dtype=np.float32)
    y = rng.integers(0, 2, 40)
    model = models.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(2, activation="softmax")])
    model.compile(optimizer=optimizers.Adam(learning_rate=0.05), loss="sparse_categorical_crossentropy")
    best = callbacks.ModelCheckpoint(tmp_path / "best.safetensors", monitor="loss", save_best_only=True)
    stop = callbacks.EarlyStopping(monitor="loss", patience=100, restore_best_weights=True)
    history = model.fit(x, y, epochs=8, callbacks=[best, stop], verbose=0)
    losses_ = history.history["loss"]
    assert best._monitor.best == pytest.approx(min(losses_))
    assert (tmp_path / "best.safetensors").exists()


def test_nan_loss_stops_with_a_clear_error(rng):
    from cnnkit.errors import TrainingError

    model = models.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.random((8, 4, 4, 1), dtype=np.float32)
    x[0, 0, 0, 0] = np.nan
    with pytest.raises(TrainingError, match="NaN"):
        model.fit(x, np.zeros(8, int), epochs=1, verbose=0)


def test_class_weight_weighs_the_loss(rng):
    x = rng.random((20, 4, 4, 1), dtype=np.float32)
    y = np.array([0] * 10 + [1] * 10)
    model = models.Sequential([layers.Input((4, 4, 1)), layers.Flatten(), layers.Dense(2, activation="softmax")])
    model.compile(optimizer=optimizers.SGD(learning_rate=1e-9), loss="sparse_categorical_crossentropy")
    plain = model.fit(x, y, epochs=1, shuffle=False, verbose=0).history["loss"][0]
    weighted = model.fit(x, y, epochs=1, shuffle=False, class_weight={0: 0.0, 1: 2.0}, verbose=0).history["loss"][0]
    with torch.no_grad():
        logits = model(torch.from_numpy(x).permute(0, 3, 1, 2))
    per_sample = torch.nn.functional.cross_entropy(logits, torch.from_numpy(y), reduction="none")
    assert plain == pytest.approx(float(per_sample.mean()), rel=1e-4)
    assert weighted == pytest.approx(float((per_sample[10:] * 2).sum() / 20), rel=1e-4)


@pytest.mark.parametrize("activation", ["relu", "tanh", "sigmoid"])
def test_training_applies_activations_after_max_pooling_with_identical_results(activation):
    """The fast training path (kernels.fuse) pools before a monotone activation; values and gradients are unchanged."""
    model = models.Sequential([
        layers.Input((12, 12, 2)), layers.Conv2D(4, 3, activation=activation), layers.MaxPooling2D(2),
        layers.Conv2D(4, 3, activation=activation, padding="same"), layers.MaxPooling2D(3, strides=2, padding="same"),
        layers.Flatten(), layers.Dense(3, activation="softmax"),
    ])  # fmt: skip
    model.train()
    x, y = torch.randn(6, 2, 12, 12), torch.randint(0, 3, (6,))
    params = list(model.parameters())
    fused = kernels.fuse(model)
    assert len(fused.blocks) == 2  # both blocks run pool-first

    def loss_and_grads(forward):
        loss = torch.nn.functional.cross_entropy(forward(x), y)
        return loss, torch.autograd.grad(loss, params)

    fast_loss, fast_grads = loss_and_grads(fused)
    plain_loss, plain_grads = loss_and_grads(model)  # forward: every layer as written
    torch.testing.assert_close(fast_loss, plain_loss)
    for fast, plain in zip(fast_grads, plain_grads):
        torch.testing.assert_close(fast, plain)


def test_sequential_does_not_know_the_kernels_exist():
    # The fast path is a pass over the model (kernels.fuse), applied by the engine and the predictors;
    # tests/test_architecture.py checks the imports, this the words.
    import inspect

    from cnnkit.models import sequential

    source = inspect.getsource(sequential)
    assert "kernels" not in source and "fuse" not in source and "pool_first" not in source
