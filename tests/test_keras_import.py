"""Real Keras models in: ``.keras`` (Keras 3's zip) and legacy ``.h5`` files, built here without Keras (a zip
of JSON and HDF5, as Keras writes them) and checked against a NumPy forward pass; plus files made by real
Keras 3 (tests/fixtures/make_keras_models.py) whose predictions cnnkit must reproduce."""

from __future__ import annotations

import json
import zipfile
from pathlib import Path

import h5py
import numpy as np
import pytest
from PIL import Image

from cnnkit import models
from cnnkit.errors import ModelFileError
from cnnkit.export import export_model
from conftest import run_main

FIXTURES = Path(__file__).parent / "fixtures"
RNG = np.random.default_rng(0)
POLICY = {"module": "keras", "class_name": "DTypePolicy", "config": {"name": "float32"}, "registered_name": None}
GLOROT = {"module": "keras.initializers", "class_name": "GlorotUniform", "config": {"seed": None}}


def layer(kind: str, name: str, **config) -> dict:
    """One layer as Keras 3 serializes it (its dtype policy, initializers and null regularizers included)."""
    extras = {"trainable": True, "dtype": POLICY}
    if kind in ("Conv2D", "Dense"):
        extras |= {"kernel_initializer": GLOROT, "kernel_regularizer": None, "bias_regularizer": None,
                   "kernel_constraint": None, "bias_constraint": None, "activity_regularizer": None}  # fmt: skip
    return {"module": "keras.layers", "class_name": kind, "config": {"name": name, **extras, **config},
            "registered_name": None}  # fmt: skip


def tensor(name: str) -> dict:
    return {"class_name": "__keras_tensor__", "config": {"shape": None, "dtype": "float32",
                                                         "keras_history": [name, 0, 0]}}  # fmt: skip


def with_nodes(spec: dict, *sources: str, listed: bool = False) -> dict:
    args = [[tensor(s) for s in sources]] if listed else [tensor(s) for s in sources]
    return {**spec, "name": spec["config"]["name"], "inbound_nodes": [{"args": args, "kwargs": {}}] if sources else []}


def input_layer(name: str, shape: tuple[int, ...]) -> dict:
    return {"module": "keras.layers", "class_name": "InputLayer",
            "config": {"batch_shape": [None, *shape], "dtype": "float32", "name": name}}  # fmt: skip


def write_keras(path: Path, config: dict, weights: dict[str, list[np.ndarray]]) -> Path:
    """A Keras 3 ``.keras`` zip: config.json, metadata.json, and model.weights.h5 keyed by class as Keras keys it."""
    h5_path = path.with_suffix(".weights.h5")
    with h5py.File(h5_path, "w") as h5:
        used: dict[str, int] = {}
        for spec in config["config"]["layers"]:
            key = {"Conv2D": "conv2d", "Dense": "dense", "BatchNormalization": "batch_normalization"}.get(
                spec["class_name"], spec["class_name"].lower()
            )
            used[key] = used.get(key, -1) + 1
            group = h5.create_group(f"layers/{key}{'_' + str(used[key]) if used[key] else ''}/vars")
            for i, array in enumerate(weights.get(spec["config"]["name"], [])):
                group.create_dataset(str(i), data=array)
    with zipfile.ZipFile(path, "w") as archive:
        archive.writestr("config.json", json.dumps(config))
        archive.writestr("metadata.json", json.dumps({"keras_version": "3.test"}))
        archive.write(h5_path, "model.weights.h5")
    return path


def write_h5(path: Path, config: dict, weights: dict[str, list[tuple[str, np.ndarray]]]) -> Path:
    """A legacy Keras ``.h5``: the config as an attribute, each layer's weights ordered by ``weight_names``."""
    with h5py.File(path, "w") as h5:
        h5.attrs["model_config"] = json.dumps(config)
        h5.attrs["keras_version"] = "2.test"
        root = h5.create_group("model_weights")
        names = [spec["config"]["name"] for spec in config["config"]["layers"]]
        root.attrs["layer_names"] = np.array([n.encode() for n in names])
        for name in names:
            group = root.create_group(name)
            named = weights.get(name, [])
            group.attrs["weight_names"] = np.array([f"{name}/{w}".encode() for w, _ in named])
            for w, array in named:
                group.create_dataset(f"{name}/{w}", data=array)
    return path


# -- a NumPy forward pass, channels last, as Keras computes ------------------------------------------
def conv_same(x: np.ndarray, kernel: np.ndarray, bias: np.ndarray) -> np.ndarray:
    kh, kw = kernel.shape[:2]
    padded = np.pad(x, ((0, 0), (kh // 2, kh // 2), (kw // 2, kw // 2), (0, 0)))
    h, w = x.shape[1:3]
    out = sum(np.einsum("nhwc,co->nhwo", padded[:, i : i + h, j : j + w], kernel[i, j])
              for i in range(kh) for j in range(kw))  # fmt: skip
    return out + bias


def batchnorm(x, gamma, beta, mean, var, eps=1e-3):
    return (x - mean) / np.sqrt(var + eps) * gamma + beta


def softmax(z):
    e = np.exp(z - z.max(1, keepdims=True))
    return e / e.sum(1, keepdims=True)


def relu(x):
    return np.maximum(x, 0)


def sequential_case():
    """A small CNN: conv (same, relu), BatchNorm, max pool, flatten, dense softmax."""
    w = {
        "conv2d": [RNG.standard_normal((3, 3, 2, 4), dtype=np.float32), RNG.standard_normal(4, dtype=np.float32)],
        "batch_normalization": [RNG.standard_normal(4, dtype=np.float32), RNG.standard_normal(4, dtype=np.float32),
                                RNG.standard_normal(4, dtype=np.float32), RNG.random(4, dtype=np.float32) + 0.5],
        "dense": [RNG.standard_normal((36, 5), dtype=np.float32), RNG.standard_normal(5, dtype=np.float32)],
    }  # fmt: skip
    layers = [
        input_layer("input_layer", (6, 6, 2)),
        layer("Conv2D", "conv2d", filters=4, kernel_size=[3, 3], strides=[1, 1], padding="same",
              data_format="channels_last", dilation_rate=[1, 1], groups=1, activation="relu", use_bias=True),
        layer("BatchNormalization", "batch_normalization", axis=-1, momentum=0.99, epsilon=0.001, center=True,
              scale=True, beta_initializer={"class_name": "Zeros"}, gamma_regularizer=None, synchronized=False),
        layer("MaxPooling2D", "max_pooling2d", pool_size=[2, 2], strides=[2, 2], padding="valid",
              data_format="channels_last"),
        layer("Flatten", "flatten", data_format="channels_last"),
        layer("Dense", "dense", units=5, activation="softmax", use_bias=True, quantization_config=None),
    ]  # fmt: skip
    config = {"module": "keras", "class_name": "Sequential", "config": {"name": "seq", "layers": layers}}

    def forward(x):
        y = batchnorm(relu(conv_same(x, *w["conv2d"])), *w["batch_normalization"])
        y = y.reshape(len(x), 3, 2, 3, 2, 4).max(axis=(2, 4))
        return softmax(y.reshape(len(x), -1) @ w["dense"][0] + w["dense"][1])

    return config, w, forward


def functional_case():
    """A residual block: conv -> conv, added to the first conv's output, global average, dense."""
    w = {
        "conv2d": [RNG.standard_normal((3, 3, 1, 3), dtype=np.float32), RNG.standard_normal(3, dtype=np.float32)],
        "conv2d_1": [RNG.standard_normal((3, 3, 3, 3), dtype=np.float32), RNG.standard_normal(3, dtype=np.float32)],
        "dense": [RNG.standard_normal((3, 2), dtype=np.float32), RNG.standard_normal(2, dtype=np.float32)],
    }
    conv = {"kernel_size": [3, 3], "strides": [1, 1], "padding": "same", "filters": 3, "use_bias": True}
    layers = [
        with_nodes({**input_layer("input_layer", (5, 5, 1)), "inbound_nodes": []}),
        with_nodes(layer("Conv2D", "conv2d", activation="relu", **conv), "input_layer"),
        with_nodes(layer("Conv2D", "conv2d_1", activation="linear", **conv), "conv2d"),
        with_nodes(layer("Add", "add"), "conv2d", "conv2d_1", listed=True),
        with_nodes(layer("GlobalAveragePooling2D", "gap", data_format="channels_last", keepdims=False), "add"),
        with_nodes(layer("Dense", "dense", units=2, activation="softmax", use_bias=True), "gap"),
    ]
    inner = {"name": "res", "layers": layers, "input_layers": ["input_layer", 0, 0], "output_layers": ["dense", 0, 0]}
    config = {"module": "keras.src.models.functional", "class_name": "Functional", "config": inner}

    def forward(x):
        a = relu(conv_same(x, *w["conv2d"]))
        b = conv_same(a, *w["conv2d_1"])
        return softmax((a + b).mean(axis=(1, 2)) @ w["dense"][0] + w["dense"][1])

    return config, w, forward


H5_NAMES = {"Conv2D": ["kernel", "bias"], "Dense": ["kernel", "bias"],
            "BatchNormalization": ["gamma", "beta", "moving_mean", "moving_variance"]}  # fmt: skip


def h5_weights(config, weights):
    kinds = {spec["config"]["name"]: spec["class_name"] for spec in config["config"]["layers"]}
    return {name: list(zip(H5_NAMES[kinds[name]], arrays)) for name, arrays in weights.items()}


@pytest.mark.parametrize("case", [sequential_case, functional_case])
@pytest.mark.parametrize("kind", ["keras", "h5"])
def test_keras_files_predict_as_keras_computes(tmp_path, case, kind):
    config, weights, forward = case()
    path = tmp_path / f"model.{kind}"
    if kind == "keras":
        write_keras(path, config, weights)
    else:
        write_h5(path, config, h5_weights(config, weights))
    model = models.load_model(path)
    shape = model.image_shape
    x = RNG.standard_normal((3, *shape)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), forward(x), rtol=1e-4, atol=1e-5)
    # Then it is a cnnkit model like any other: it saves in cnnkit's format and loads back the same.
    model.save(tmp_path / "again.safetensors")
    np.testing.assert_allclose(models.load_model(tmp_path / "again.safetensors").predict(x, verbose=0),
                               forward(x), rtol=1e-4, atol=1e-5)  # fmt: skip


def test_keras_2_h5_with_list_inbound_nodes(tmp_path):
    """tf.keras 2's config: batch_input_shape, inbound nodes as [[layer, node, tensor, kwargs]], Model class."""
    config, weights, forward = functional_case()
    for spec in config["config"]["layers"]:
        for node in spec.get("inbound_nodes", []):
            args = node["args"][0] if isinstance(node["args"][0], list) else node["args"]
            spec["inbound_nodes"] = [[[t["config"]["keras_history"][0], 0, 0, {}] for t in args]]
        if spec["class_name"] == "InputLayer":
            spec["config"] = {"batch_input_shape": [None, 5, 5, 1], "dtype": "float32", "name": "input_layer"}
            spec["inbound_nodes"] = []
        spec["config"]["dtype"] = "float32"  # tf.keras 2: a plain dtype name, not a policy
    config["class_name"] = "Model"
    config["config"]["input_layers"] = [["input_layer", 0, 0]]
    config["config"]["output_layers"] = [["dense", 0, 0]]
    model = models.load_model(write_h5(tmp_path / "old.h5", config, h5_weights(config, weights)))
    x = RNG.standard_normal((2, 5, 5, 1)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), forward(x), rtol=1e-4, atol=1e-5)


def test_keras_2_sequential_h5_with_its_old_spellings(tmp_path):
    """tf.keras 2: the input shape on the first layer, BatchNormalization's built axis as a list, ':0' names."""
    config, weights, forward = sequential_case()
    layers = config["config"]["layers"]
    layers.pop(0)
    layers[0]["config"]["batch_input_shape"] = [None, 6, 6, 2]
    layers[1]["config"]["axis"] = [3]
    named = {name: [(f"{w}:0", a) for w, a in pairs] for name, pairs in h5_weights(config, weights).items()}
    model = models.load_model(write_h5(tmp_path / "tf2.h5", config, named))
    x = RNG.standard_normal((2, 6, 6, 2)).astype(np.float32)
    np.testing.assert_allclose(model.predict(x, verbose=0), forward(x), rtol=1e-4, atol=1e-5)


def test_lambda_and_unknown_layers_are_refused_by_name(tmp_path):
    config, weights, _ = sequential_case()
    config["config"]["layers"].insert(2, {"class_name": "Lambda", "config": {"name": "lam", "function": "gASV..."}})
    config["config"]["layers"].insert(3, {"class_name": "Attention2D", "registered_name": "my_pkg>Attention2D",
                                          "config": {"name": "att"}})  # fmt: skip
    path = write_keras(tmp_path / "bad.keras", config, weights)
    with pytest.raises(ModelFileError) as error:
        models.load_model(path)
    message = str(error.value)
    assert "Lambda 'lam' (Python code, which cnnkit never runs)" in message
    assert "Attention2D (registered as 'my_pkg>Attention2D')" in message
    assert "\n" not in message


def test_a_setting_cnnkit_lacks_is_named(tmp_path):
    config, weights, _ = sequential_case()
    config["config"]["layers"][-1]["config"]["lora_rank"] = 4
    with pytest.raises(ModelFileError, match="'dense' \\(Dense\\): cnnkit does not support its setting lora_rank=4"):
        models.load_model(write_keras(tmp_path / "lora.keras", config, weights))


def test_missing_weights_and_weights_only_files(tmp_path):
    config, weights, _ = sequential_case()
    del weights["dense"]
    with pytest.raises(ModelFileError, match="no weights for layer 'dense'"):
        models.load_model(write_keras(tmp_path / "partial.keras", config, weights))
    with h5py.File(tmp_path / "only.weights.h5", "w") as h5:
        h5.create_dataset("x", data=np.zeros(3))
    with pytest.raises(ModelFileError, match="without a model config"):
        models.load_model(tmp_path / "only.weights.h5")


# -- files made by real Keras 3 ----------------------------------------------------------------------
REAL = np.load(FIXTURES / "keras_models.npz")


@pytest.mark.parametrize("name", ["keras_seq", "keras_res"])
@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_real_keras_files_reproduce_keras_predictions(name, suffix):
    model = models.load_model(FIXTURES / f"{name}{suffix}")
    if name == "keras_res":  # two Sequential models nested as layers: data augmentation, and a block with weights
        nested = [layer for layer in model.layers if isinstance(layer, models.Sequential)]
        assert [n.name for n in nested] == ["augmentation", "block"] and nested[1].count_params() == 20 + 16
    np.testing.assert_allclose(model.predict(REAL[f"{name}/x"], verbose=0), REAL[f"{name}/y"], rtol=1e-4, atol=1e-6)


def test_real_keras_model_through_predict_evaluate_and_export(tmp_path):
    from PIL import Image

    path = tmp_path / "keras_res.keras"
    path.write_bytes((FIXTURES / "keras_res.keras").read_bytes())
    Image.fromarray((RNG.random((10, 10)) * 255).astype(np.uint8)).save(tmp_path / "img.png")
    result = run_main("predict", str(path), str(tmp_path / "img.png"), "--format", "csv")
    assert result.returncode == 0, result.stderr
    assert "img.png" in result.stdout
    model = models.load_model(path)
    x, y = REAL["keras_res/x"], REAL["keras_res/y"].argmax(1)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    assert model.evaluate(x, y, verbose=0)[1] == 1.0  # Keras' own predictions as labels
    report = export_model(path, "onnx", out=tmp_path / "res.onnx")
    assert (tmp_path / "res.onnx").exists() and report is not None


def test_real_keras_model_is_served_and_explained(tmp_path):
    import warnings

    from _serve_util import png_bytes

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        from fastapi.testclient import TestClient
    from cnnkit.serve import ServeConfig, create_app

    path = tmp_path / "keras_seq.h5"
    path.write_bytes((FIXTURES / "keras_seq.h5").read_bytes())
    image = (RNG.random((12, 12, 3)) * 255).astype(np.uint8)
    (tmp_path / "img.png").write_bytes(png_bytes(image))
    with TestClient(create_app(path, ServeConfig(backend="torch"))) as client:
        answer = client.post("/v1/predict", content=png_bytes(image), headers={"content-type": "image/png"})
    assert answer.status_code == 200, answer.text
    result = run_main("explain", str(path), str(tmp_path / "img.png"), "--out", str(tmp_path / "why.png"))
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "why.png").stat().st_size > 0


@pytest.mark.parametrize("suffix", [".keras", ".h5"])
def test_a_keras_model_that_takes_0_to_255_reads_image_files_as_keras_would(tmp_path, suffix):
    """keras_seq starts with Rescaling(1/255): Keras feeds it 0..255 pixels, cnnkit's files decode to
    [0, 1]; predict, the predictors (so serve) and exports scale them to what the model takes."""
    from cnnkit.inference import load_predictor

    path = tmp_path / f"keras_seq{suffix}"
    path.write_bytes((FIXTURES / f"keras_seq{suffix}").read_bytes())
    model = models.load_model(path)
    assert model.pixel_max == 255.0 and models.load_model(FIXTURES / "keras_res.keras").pixel_max == 1.0
    image = (RNG.random((2, 12, 12, 3)) * 255).astype(np.uint8)
    files = []
    for i, pixels in enumerate(image):
        Image.fromarray(pixels).save(tmp_path / f"{i}.png")
        files.append(str(tmp_path / f"{i}.png"))
    expected = model.predict(image.astype(np.float32), verbose=0)  # Keras' way: the 0..255 array as it is
    np.testing.assert_allclose(model.predict(files, verbose=0), expected, atol=1e-5)
    onnx = export_model(path, "onnx", out=tmp_path / "seq.onnx").path
    for predictor in (load_predictor(path, "torch"), load_predictor(path, "onnx"), load_predictor(onnx)):
        np.testing.assert_allclose(predictor.predict_proba(files), expected, atol=1e-4)
    saved = tmp_path / "as_cnnkit.safetensors"
    model.save(saved)  # the range travels with cnnkit's own file
    assert models.load_model(saved).pixel_max == 255.0
