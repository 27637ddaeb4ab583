"""Keras' functional API and top-level names: ``import cnnkit as keras``, ``keras.Input``, ``keras.Model(inputs,
outputs)`` with branches, Keras 3's summary, training, saving (also named ``.keras``) and explaining."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch

import cnnkit as keras
from cnnkit import explain, layers, models
from cnnkit.errors import ConfigError, ShapeError
from cnnkit.kernels import fuse
from cnnkit.layers import KerasTensor


def residual(num_classes: int = 3) -> models.Model:
    """The model tests/fixtures' probe built with Keras 3 (500 parameters, 8 of them non-trainable)."""
    inp = keras.Input(shape=(8, 8, 3))
    x = layers.Conv2D(4, 3, padding="same", activation="relu")(inp)
    y = layers.Conv2D(4, 3, padding="same")(x)
    z = layers.Add()([x, y])
    z = layers.BatchNormalization()(z)
    z = layers.SeparableConv2D(5, 3)(z)
    z = layers.DepthwiseConv2D(3, depth_multiplier=2)(z)
    c = layers.Concatenate()([z, z])
    f = layers.GlobalAveragePooling2D()(c)
    out = layers.Dense(num_classes, activation="softmax")(f)
    return keras.Model(inp, out)


def data(n: int = 24) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(0)
    return rng.random((n, 8, 8, 3), dtype=np.float32), rng.integers(0, 3, n)


def test_keras_names_at_the_top_of_cnnkit():
    assert keras.Sequential is models.Sequential and keras.Model is models.Model
    assert keras.Input is layers.Input is models.Input
    inputs = keras.Input(shape=(28, 28, 1))
    assert isinstance(inputs, KerasTensor) and inputs.shape == (None, 28, 28, 1)
    model = keras.Sequential([inputs, layers.Conv2D(2, 3), layers.Flatten(), layers.Dense(2)])
    assert model.input_shape == (None, 28, 28, 1) and model.count_params() == 20 + 2706
    added = keras.Sequential()
    added.add(keras.Input((4, 4, 1)))
    added.add(layers.Flatten())
    assert added.layers[0].output_shape == (None, 16)


def test_layer_calls_infer_shapes_and_model_is_functional():
    model = residual()
    assert isinstance(model, models.Functional) and isinstance(model, models.Model)
    assert [layer.name.split("_")[0] for layer in model.layers][:3] == ["conv2d", "conv2d", "add"]
    assert model.output.shape == (None, 3) and model.inputs[0].shape == (None, 8, 8, 3)
    assert model.count_params() == 500  # Keras 3's summary of the same model: Total params: 500
    assert sum(p.numel() for p in model.parameters() if p.requires_grad) == 492


def test_forward_is_the_graph_of_its_layers():
    model = residual()
    model.eval()
    x = torch.rand(2, 3, 8, 8)
    conv, conv_1, add, bn, sep, dw, cat, gap, dense = model.layers
    a = conv(x)
    z = dw(sep(bn(add([a, conv_1(a)]))))
    expected = dense.call(gap(cat([z, z])))  # logits: the softmax is predict's
    torch.testing.assert_close(model(x), expected)


def test_summary_has_keras_connected_to_column():
    model = residual()
    out = io.StringIO()
    model.summary(print_fn=lambda line: print(line, file=out))
    text = out.getvalue()
    assert "Connected to" in text and "(InputLayer)" in text
    add = next(layer for layer in model.layers if isinstance(layer, layers.Add))
    assert f"{add.name} (Add)" in text
    assert "Total params: 500" in text and "Non-trainable params: 8" in text
    rows = {row[0]: row for row in model.summary_rows()}
    assert rows[add.name][4] == ", ".join(f"{t.layer.name}[0][0]" for t in _tensor_of(model, add).inputs)
    assert rows[model.input_name][4] == "-"


def _tensor_of(model, layer):
    stack = [model.output]
    while stack:
        tensor = stack.pop()
        if tensor.layer is layer:
            return tensor
        stack.extend(tensor.inputs)
    raise AssertionError


def test_fit_evaluate_predict_and_save_as_dot_keras(tmp_path):
    model = residual()
    x, y = data()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert len(history.history["loss"]) == 2
    loss, accuracy = model.evaluate(x, y, verbose=0)
    probabilities = model.predict(x, verbose=0)
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)
    path = tmp_path / "model.keras"
    model.save(path)
    assert path.read_bytes()[8:9] == b"{"  # cnnkit's safetensors format, whatever the name says
    again = models.load_model(path)
    assert isinstance(again, models.Functional)
    assert [la.name for la in again.layers] == [la.name for la in model.layers]
    np.testing.assert_allclose(again.predict(x, verbose=0), probabilities, rtol=1e-5, atol=1e-6)
    assert again.evaluate(x, y, verbose=0)[0] == pytest.approx(loss, rel=1e-5)
    assert again.get_config() == model.get_config()


def test_sequential_saves_as_dot_keras_too(tmp_path):
    model = keras.Sequential([keras.Input((4, 4, 1)), layers.Flatten(), layers.Dense(3, activation="softmax")])
    model.save(tmp_path / "s.keras")
    x = np.random.default_rng(1).random((5, 4, 4, 1), dtype=np.float32)
    np.testing.assert_allclose(models.load_model(tmp_path / "s.keras").predict(x, verbose=0),
                               model.predict(x, verbose=0), rtol=1e-6)  # fmt: skip


def test_shared_layer_is_two_nodes_of_one_layer():
    inp = keras.Input((6, 6, 2))
    conv = layers.Conv2D(2, 3, padding="same")
    out = layers.Flatten()(layers.Add()([conv(inp), conv(conv(inp))]))
    model = keras.Model(inputs=inp, outputs=layers.Dense(2)(out))
    assert sum(isinstance(la, layers.Conv2D) for la in model.layers) == 1
    config = model.get_config()
    conv_spec = next(s for s in config["config"]["layers"] if s["class_name"] == "Conv2D")
    assert len(conv_spec["inbound_nodes"]) == 3
    rebuilt = models.model_from_config(config)
    rebuilt.load_state_dict(model.state_dict())
    x = torch.rand(3, 2, 6, 6)
    torch.testing.assert_close(rebuilt(x), model(x))


def test_explain_and_fuse_work_on_a_graph():
    model = residual()
    model.eval()
    image = torch.rand(3, 8, 8)
    heat = explain.layercam(model, image)
    assert heat.shape == (8, 8)
    assert fuse(model) is model  # a graph is never fused as if it were a stack
    assert "conv2d" in " ".join(explain.conv_layer_names(model))


def test_mistakes_are_reported_at_the_call():
    inp = keras.Input((8, 8, 3))
    a = layers.Conv2D(4, 3)(inp)
    b = layers.Conv2D(5, 3)(inp)
    with pytest.raises(ShapeError, match="one shape"):
        layers.Add()([a, b])
    with pytest.raises(ShapeError, match="Flatten"):
        layers.Dense(3)(a)
    with pytest.raises(ConfigError, match="one image input"):
        keras.Model([inp, keras.Input((8, 8, 3))], layers.Flatten()(a))
    with pytest.raises(ConfigError, match="not the model's input"):
        keras.Model(keras.Input((8, 8, 3)), layers.Flatten()(a))
    with pytest.raises(ConfigError, match="add"):
        residual().add(layers.Dense(2))


def test_concatenate_axis_and_merge_layers():
    inp = keras.Input((4, 4, 2))
    rows = layers.Concatenate(axis=1)([inp, inp])
    assert rows.shape == (None, 8, 4, 2)
    model = keras.Model(inp, layers.Flatten()(layers.Multiply()([inp, layers.Average()([inp, inp])])))
    x = torch.rand(2, 2, 4, 4)
    torch.testing.assert_close(model(x), (x * x).permute(0, 2, 3, 1).flatten(1))
    cat = layers.Concatenate(axis=1)
    cat.build([(4, 4, 2), (4, 4, 2)])
    assert cat([x, x]).shape == (2, 2, 8, 4)  # Keras' axis 1 (height) is torch's dim 2


def test_a_sequential_model_is_a_layer_of_a_functional_one(tmp_path):
    """Keras' tutorials: ``data_augmentation = keras.Sequential([...])``, then ``x = data_augmentation(inputs)``."""
    augmentation = keras.Sequential([layers.RandomFlip("horizontal"), layers.RandomRotation(0.1)])
    inputs = keras.Input((8, 8, 1))
    x = layers.Conv2D(4, 3, activation="relu")(augmentation(inputs))
    head = keras.Sequential([layers.Flatten(), layers.Dense(3, activation="softmax")], name="head")
    model = keras.Model(inputs, head(x))
    assert model.output_activation == "softmax" and model.count_params() == 40 + 435
    rows = {row[0]: row for row in model.summary_rows()}
    assert rows["head"][1:] == ("Sequential", "(None, 3)", 435, f"{model.layers[1].name}[0][0]")
    x_np = np.random.default_rng(2).random((6, 8, 8, 1), dtype=np.float32)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    model.fit(x_np, np.arange(6) % 3, epochs=1, verbose=0)
    probabilities = model.predict(x_np, verbose=0)
    np.testing.assert_allclose(probabilities.sum(1), 1, rtol=1e-5)
    model.save(tmp_path / "nested.keras")
    np.testing.assert_allclose(models.load_model(tmp_path / "nested.keras").predict(x_np, verbose=0), probabilities,
                               rtol=1e-5, atol=1e-6)  # fmt: skip
    # In the middle of a graph, a nested model's softmax is applied (only the outer model's last is left to predict).
    inner = keras.Sequential([layers.Flatten(), layers.Dense(4, activation="softmax")])
    inp = keras.Input((2, 2, 1))
    outer = keras.Model(inp, layers.Dense(2)(inner(inp)))
    t = torch.rand(3, 1, 2, 2)
    expected = outer.layers[1](torch.softmax(inner(t), 1))
    torch.testing.assert_close(outer(t), expected)


def test_inside_view_walks_a_graph_in_execution_order():
    model = residual()
    model.eval()
    view = explain.inside(model, torch.rand(3, 8, 8))
    names = [layer.name for layer in view.layers]
    assert names == [layer.name for layer in model.layers]
    shapes = {layer.name: tuple(layer.output_shape) for layer in view.layers}
    assert shapes[model.layers[2].name] == (8, 8, 4)  # the Add's output, from its hook on a list input
    assert view.layers[-1].output_shape == (3,)


def test_keras_simple_mnist_convnet_runs_with_only_the_import_changed():
    """Keras' "Simple MNIST convnet" example's model, as written there (Keras prints 34,826 parameters)."""
    input_shape, num_classes = (28, 28, 1), 10
    model = keras.Sequential(
        [
            keras.Input(shape=input_shape),
            layers.Conv2D(32, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Conv2D(64, kernel_size=(3, 3), activation="relu"),
            layers.MaxPooling2D(pool_size=(2, 2)),
            layers.Flatten(),
            layers.Dropout(0.5),
            layers.Dense(num_classes, activation="softmax"),
        ]
    )
    assert model.count_params() == 34_826
    assert model.layers[-1].output_shape == (None, 10)
