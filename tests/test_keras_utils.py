"""keras.utils: to_categorical, image_dataset_from_directory (Keras' split and order), load_img, img_to_array."""

from __future__ import annotations

import json

import numpy as np
import pytest
from PIL import Image

import cnnkit as keras
from cnnkit import layers
from cnnkit.errors import CnnkitError


def _folder(root, classes=("cat", "dog"), per_class=6, size=(20, 16)):
    for c, name in enumerate(classes):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            value = 40 + 150 * c + i  # the class is in the brightness
            Image.new("RGB", size, (value, value, value)).save(root / name / f"{i:02d}.png")
    (root / "dog" / "notes.txt").write_text("not an image")
    return root


def test_to_categorical_as_keras():
    np.testing.assert_array_equal(keras.utils.to_categorical([0, 2, 1]), np.eye(3, dtype=np.float32)[[0, 2, 1]])
    one_hot = keras.utils.to_categorical(np.array([[3], [1]], np.uint8), num_classes=5)  # CIFAR's (N, 1)
    assert one_hot.shape == (2, 5) and one_hot.dtype == np.float32 and one_hot[0, 3] == 1
    with pytest.raises(CnnkitError, match="0..1"):
        keras.utils.to_categorical([0, 2], num_classes=2)


def test_keras_split_is_keras_order_and_both_subsets_partition_the_files(tmp_path):
    root = _folder(tmp_path / "pets")
    train, val = keras.utils.image_dataset_from_directory(
        root, validation_split=0.25, subset="both", seed=123, image_size=(8, 10), batch_size=4, verbose=False
    )
    assert train.class_names == ["cat", "dog"] and len(train.file_paths) == 9 and len(val.file_paths) == 3
    assert not set(train.file_paths) & set(val.file_paths)
    # Keras' order: paths sorted by class then name, shuffled once by RandomState(seed), the last quarter held out
    expected = [str(root / c / f"{i:02d}.png") for c in ("cat", "dog") for i in range(6)]
    order = np.arange(12)
    np.random.RandomState(123).shuffle(order)
    assert train.file_paths + val.file_paths == [expected[i] for i in order]
    images, labels = next(iter(train))
    assert images.shape == (4, 8, 10, 3) and images.dtype == np.float32 and labels.dtype == np.int32
    assert images.max() > 1.5  # 0..255, as Keras yields them
    np.testing.assert_array_equal(train.as_arrays()[1], [int("/dog/" in p) for p in train.file_paths])
    assert len(train) == 3  # batches
    with pytest.raises(CnnkitError, match="pass a seed"):
        keras.utils.image_dataset_from_directory(root, validation_split=0.2, subset="training", verbose=False)


def test_label_modes_and_grayscale(tmp_path):
    root = _folder(tmp_path / "pets")
    ds = keras.utils.image_dataset_from_directory(root, label_mode="binary", color_mode="grayscale",
                                                  image_size=(4, 4), shuffle=False, verbose=False)  # fmt: skip
    x, y = ds.as_arrays()
    assert x.shape == (12, 4, 4, 1) and y.shape == (12, 1) and y.dtype == np.float32
    np.testing.assert_array_equal(y[:, 0], [0] * 6 + [1] * 6)
    np.testing.assert_allclose(x[0, 0, 0, 0], 40, atol=0.5)  # the pixels, decoded and resized, in 0..255
    cat = keras.utils.image_dataset_from_directory(root, label_mode="categorical", image_size=(4, 4), batch_size=5,
                                                   class_names=["dog", "cat"], shuffle=False, verbose=False)  # fmt: skip
    assert cat.class_names == ["dog", "cat"] and "/dog/" in cat.file_paths[0]  # the order given
    assert cat.as_arrays()[1][0].tolist() == [1, 0]
    assert len(cat.take(2)) == 2 and cat.prefetch(8) is cat


def test_fit_evaluate_predict_take_the_dataset_a_binary_classifier_as_keras_cats_vs_dogs(tmp_path):
    root = _folder(tmp_path / "pets", per_class=16)
    train, val = keras.utils.image_dataset_from_directory(
        root, validation_split=0.25, subset="both", seed=1, image_size=(8, 8), batch_size=8, verbose=False
    )
    keras.utils.set_random_seed(0)
    model = keras.models.Sequential([
        layers.Input((8, 8, 3)), layers.Rescaling(1.0 / 255), layers.Conv2D(4, 3, activation="relu"),
        layers.Flatten(), layers.Dense(1, activation="sigmoid"),
    ])  # fmt: skip
    model.compile(optimizer=keras.optimizers.Adam(3e-2), loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(train, epochs=8, validation_data=val, verbose=0)
    assert history.history["val_accuracy"][-1] == 1.0  # brightness separates the classes
    probs = model.predict(val, verbose=0)
    assert probs.shape == (8, 1) and ((probs >= 0) & (probs <= 1)).all()
    np.testing.assert_array_equal(probs[:, 0] > 0.5, val.as_arrays()[1] == 1)  # int labels, as Keras' example
    loss, acc = model.evaluate(val, verbose=0)
    assert acc == 1.0 and loss < 0.5
    assert model.class_names == ["cat", "dog"]  # the folder's classes name the model's two outcomes
    assert model.pixel_max == 255.0  # trained on the dataset's 0..255 pixels, as Keras yields them
    model.save(tmp_path / "pets.keras")
    from cnnkit.inference import load_predictor

    predictor = load_predictor(tmp_path / "pets.keras", "torch")  # what `cnnkit predict` and serve run
    assert predictor.class_names == ["cat", "dog"]
    np.testing.assert_allclose(predictor.predict_proba(val.file_paths)[:, 1], probs[:, 0], atol=1e-4)


def test_load_img_and_img_to_array(tmp_path):
    path = tmp_path / "a.png"
    Image.new("RGBA", (30, 20), (200, 100, 50, 255)).save(path)
    img = keras.utils.load_img(path, target_size=(10, 15))
    assert img.mode == "RGB" and img.size == (15, 10)
    array = keras.utils.img_to_array(img)
    assert array.shape == (10, 15, 3) and array.dtype == np.float32 and array[0, 0].tolist() == [200, 100, 50]
    grey = keras.utils.img_to_array(keras.utils.load_img(path, color_mode="grayscale"))
    assert grey.shape == (20, 30, 1)
    (tmp_path / "bad.png").write_bytes(b"not a png")
    with pytest.raises(CnnkitError, match="not an image"):
        keras.utils.load_img(tmp_path / "bad.png")
    with pytest.raises(AttributeError, match="keras.utils.text_dataset_from_directory is not in cnnkit"):
        keras.utils.text_dataset_from_directory  # noqa: B018


def test_normalize_clone_model_and_json_round_trip(tmp_path):
    x = np.array([[3.0, 4.0], [0.0, 0.0]])
    np.testing.assert_allclose(keras.utils.normalize(x), [[0.6, 0.8], [0, 0]])
    model = keras.Sequential([layers.Input((6, 6, 1)), layers.Conv2D(2, 3), layers.Flatten(), layers.Dense(3)])
    model.class_names = ["a", "b", "c"]
    clone = keras.models.clone_model(model)
    assert clone.get_config() == model.get_config() and clone.class_names == ["a", "b", "c"]
    assert not all(np.array_equal(a, b) for a, b in zip(clone.get_weights(), model.get_weights()))  # fresh weights
    again = keras.models.model_from_json(model.to_json())
    assert again.get_config() == model.get_config()
    keras_json = json.dumps(
        {
            "class_name": "Sequential",
            "keras_version": "3.15.1",
            "config": {
                "name": "k",
                "layers": [
                    {"class_name": "InputLayer", "config": {"batch_shape": [None, 6, 6, 1]}},
                    {"class_name": "Conv2D", "config": {"filters": 2, "kernel_size": [3, 3], "activation": "relu"}},
                ],
            },
        }
    )  # what Keras' own to_json writes (trimmed)
    assert keras.models.model_from_json(keras_json).output_shape == (None, 4, 4, 2)
    with pytest.raises(CnnkitError, match="model_from_json takes the JSON"):
        keras.models.model_from_json("not json")
