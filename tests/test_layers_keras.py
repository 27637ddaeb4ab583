"""The layers issue 17 added: Keras' outputs (a fixture made by real Keras), torch references, Keras'
parameter counts, and the augmentation layers' training-only behaviour."""

from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit import layers
from cnnkit.errors import ConfigError, ShapeError
from cnnkit.models.keras_import import keras_layer

ORACLE = np.load(Path(__file__).parent / "fixtures" / "keras_layers_oracle.npz")
CASES = sorted({key.split("/")[0] for key in ORACLE.files if "/" in key})


@pytest.mark.parametrize("case", CASES)
def test_matches_keras_output(case):
    """Each layer rebuilt from the config Keras wrote (through the importer's registry), with Keras' weights."""
    layer = keras_layer(json.loads(str(ORACLE[f"{case}/config"])))
    x = ORACLE[f"{case}/x"]
    layer.build(x.shape[1:])
    weights = [ORACLE[f"{case}/w{i}"] for i in range(len(layer.get_weights()))]
    layer.set_weights(weights)
    layer.eval()
    x_t = torch.from_numpy(x)
    y = layer(x_t.permute(0, 3, 1, 2) if x_t.ndim == 4 else x_t).detach()  # images in as (B, C, H, W)
    y = (y.permute(0, 2, 3, 1) if y.ndim == 4 else y).numpy()
    assert y.shape == ORACLE[f"{case}/y"].shape
    np.testing.assert_allclose(y, ORACLE[f"{case}/y"], rtol=1e-4, atol=1e-5)
    for got, want in zip(layer.get_weights(), weights):  # Keras' layout survives the round trip
        np.testing.assert_array_equal(got, want)


def test_oracle_covers_the_new_layers():
    kinds = {json.loads(str(ORACLE[f"{case}/config"]))["class_name"] for case in CASES}
    assert kinds == {"DepthwiseConv2D", "SeparableConv2D", "ZeroPadding2D", "Resizing", "Rescaling", "ReLU",
                     "LeakyReLU", "Softmax", "UpSampling2D", "Reshape", "SpatialDropout2D"}  # fmt: skip


def test_depthwise_is_a_grouped_convolution():
    layer = layers.DepthwiseConv2D(3, depth_multiplier=2, padding="same")
    layer.build((6, 5, 3))
    x = torch.randn(2, 3, 6, 5)
    kernel = torch.randn(3, 3, 3, 2)  # Keras: (kh, kw, in, multiplier)
    bias = torch.randn(6)
    layer.set_weights([kernel.numpy(), bias.numpy()])
    # Output channel c * multiplier + m is input channel c's m-th filter.
    weight = kernel.permute(2, 3, 0, 1).reshape(6, 1, 3, 3)
    torch.testing.assert_close(layer(x), F.conv2d(x, weight, bias, padding=1, groups=3))


def test_separable_is_depthwise_then_pointwise():
    layer = layers.SeparableConv2D(4, 3, use_bias=False)
    layer.build((7, 7, 2))
    x = torch.randn(1, 2, 7, 7)
    depthwise, pointwise = (torch.from_numpy(w) for w in layer.get_weights())
    step = F.conv2d(x, depthwise.permute(2, 3, 0, 1).reshape(2, 1, 3, 3), groups=2)
    torch.testing.assert_close(layer(x), torch.einsum("bchw,co->bohw", step, pointwise[0, 0]))


@pytest.mark.parametrize(
    "layer,shape,params",
    [  # Keras 3's model.summary() counts for the same layers
        (lambda: layers.DepthwiseConv2D(3, depth_multiplier=2), (8, 8, 5), 100),
        (lambda: layers.SeparableConv2D(5, 3), (8, 8, 4), 61),
        (lambda: layers.SeparableConv2D(5, 3), (8, 8, 3), 47),
        (lambda: layers.DepthwiseConv2D(5, use_bias=False), (9, 9, 16), 400),
        (lambda: layers.ZeroPadding2D(2), (4, 4, 3), 0),
    ],
)
def test_parameter_counts_are_keras(layer, shape, params):
    built = layer()
    built.build(shape)
    assert built.count_params() == params


def test_shapes_and_config_round_trip():
    for layer, shape, out in [
        (layers.ZeroPadding2D(((1, 2), (3, 4))), (5, 5, 2), (8, 12, 2)),
        (layers.ZeroPadding2D((1, 2)), (5, 5, 2), (7, 9, 2)),
        (layers.Resizing(3, 4), (10, 10, 3), (3, 4, 3)),
        (layers.DepthwiseConv2D(3, strides=2, padding="same", depth_multiplier=3), (9, 9, 2), (5, 5, 6)),
        (layers.SeparableConv2D(7, 3, padding="same"), (9, 9, 2), (9, 9, 7)),
    ]:
        assert layer.build(shape) == out
        again = layers.layer_from_config({"class_name": type(layer).__name__, "config": layer.get_config()})
        assert again.build(shape) == out
        assert again.get_config() == layer.get_config()


def test_bad_arguments_are_one_clear_error():
    with pytest.raises(ConfigError, match="depth_multiplier"):
        layers.DepthwiseConv2D(3, depth_multiplier=0)
    with pytest.raises(ConfigError, match="interpolation"):
        layers.Resizing(4, 4, interpolation="lanczos7")
    with pytest.raises(ConfigError, match="fill_mode"):
        layers.RandomRotation(0.1, fill_mode="wrap")
    with pytest.raises(ShapeError, match="expects images"):
        layers.RandomFlip().build((10,))


# -- augmentation: random in training, the identity otherwise ---------------------------------------
AUGMENTATIONS = [
    lambda: layers.RandomFlip(),
    lambda: layers.RandomRotation(0.2),
    lambda: layers.RandomZoom(0.3),
    lambda: layers.RandomTranslation(0.2, 0.2),
    lambda: layers.RandomContrast(0.5),
]


@pytest.mark.parametrize("make", AUGMENTATIONS)
def test_augmentation_is_the_identity_at_inference_and_random_in_training(make):
    layer = make()
    layer.build((12, 12, 3))
    x = torch.rand(16, 3, 12, 12)
    layer.eval()
    assert torch.equal(layer(x), x)
    layer.train()
    out = layer(x)
    assert out.shape == x.shape
    assert not torch.allclose(out, x)


def test_augmentation_runs_in_fit_and_not_in_predict():
    from cnnkit import models

    model = models.Sequential([layers.Input((6, 6, 1)), layers.RandomFlip("horizontal", seed=1), layers.Flatten(),
                               layers.Dense(2, activation="softmax")])  # fmt: skip
    x = np.random.default_rng(0).random((8, 6, 6, 1), dtype=np.float32)
    first = model.predict(x, verbose=0)
    np.testing.assert_array_equal(first, model.predict(x, verbose=0))  # inference: deterministic
    model.train()
    flipped = model(torch.from_numpy(x).permute(0, 3, 1, 2))
    assert not torch.allclose(torch.softmax(flipped, 1), torch.from_numpy(first))


def test_flip_gives_each_image_itself_or_its_mirror():
    layer = layers.RandomFlip("horizontal", seed=3)
    layer.build((4, 5, 1))
    layer.train()
    x = torch.randn(32, 1, 4, 5)
    out = layer(x)
    same = (out == x).flatten(1).all(1)
    mirrored = (out == x.flip(3)).flatten(1).all(1)
    assert bool((same | mirrored).all()) and same.any() and mirrored.any()


def test_seeded_layers_repeat_their_draws():
    a, b = layers.RandomRotation(0.3, seed=7), layers.RandomRotation(0.3, seed=7)
    for layer in (a, b):
        layer.build((8, 8, 1))
        layer.train()
    x = torch.rand(4, 1, 8, 8)
    torch.testing.assert_close(a(x), b(x))


def test_quarter_turn_is_rot90():
    layer = layers.RandomRotation((0.25, 0.25), interpolation="nearest")
    layer.build((6, 6, 1))
    layer.train()
    x = torch.randn(2, 1, 6, 6)
    out = layer(x)
    assert torch.equal(out, torch.rot90(x, 1, (2, 3))) or torch.equal(out, torch.rot90(x, -1, (2, 3)))


def test_translation_shifts_by_the_fraction_and_fills_constant():
    layer = layers.RandomTranslation((0.25, 0.25), (0.5, 0.5), fill_mode="constant", fill_value=-1.0,
                                     interpolation="nearest")  # fmt: skip
    layer.build((8, 4, 1))
    layer.train()
    x = torch.randn(1, 1, 8, 4)
    out = layer(x)
    # Down by 2 rows (8 * 0.25), right by 2 columns (4 * 0.5); what came in from outside is fill_value.
    expected = torch.full_like(x, -1.0)
    expected[:, :, 2:, 2:] = x[:, :, :6, :2]
    torch.testing.assert_close(out, expected)


def test_zoom_out_by_half_shows_the_image_at_half_size():
    layer = layers.RandomZoom((1.0, 1.0), fill_mode="constant")  # factor 2: zoomed out
    layer.build((8, 8, 1))
    layer.train()
    x = torch.ones(1, 1, 8, 8)
    out = layer(x)
    assert torch.allclose(out[:, :, 2:6, 2:6], torch.ones(1, 1, 4, 4))
    assert out[:, :, 0, :].abs().max() == 0 and out[:, :, :, 0].abs().max() == 0


def test_contrast_keeps_each_channel_mean_and_clips_to_the_value_range():
    layer = layers.RandomContrast((0.0, 1.0), value_range=(0, 1), seed=0)  # factor in [1, 2]
    layer.build((6, 6, 2))
    layer.train()
    x = torch.rand(4, 2, 6, 6) * 0.2 + 0.4  # no clipping at factor <= 2
    out = layer(x)
    torch.testing.assert_close(out.mean((2, 3)), x.mean((2, 3)))
    assert (out.std((2, 3)) >= x.std((2, 3)) - 1e-6).all()
    assert layer(torch.rand(4, 2, 6, 6) * 10).max() <= 1.0


def test_activation_layers_and_functions_in_a_model_that_trains_saves_and_exports(tmp_path):
    """ReLU/LeakyReLU/Softmax layers, keras.activations functions as activation=, Reshape and
    UpSampling2D: a model of them trains (Softmax() last keeps the logits for the loss), round-trips
    its file and exports."""
    import cnnkit as keras
    from cnnkit.export import export_model

    model = keras.Sequential([
        keras.Input((8, 8, 1)),
        layers.Conv2D(4, 3, padding="same", activation=keras.activations.relu),
        layers.LeakyReLU(negative_slope=0.1),
        layers.UpSampling2D(2),
        layers.SpatialDropout2D(0.2),
        layers.MaxPooling2D(4),
        layers.Reshape((-1,)),
        layers.Dense(3),
        layers.ReLU(max_value=4.0, negative_slope=0.05),
        layers.Dense(3),
        layers.Softmax(),
    ])  # fmt: skip
    assert model.output_activation == "softmax" and model.layers[0].activation_name == "relu"
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    x, y = rng.random((32, 8, 8, 1), dtype=np.float32), rng.integers(0, 3, 32)
    model.fit(x, y, epochs=2, verbose=0)
    p = model.predict(x, verbose=0)
    np.testing.assert_allclose(p.sum(1), 1, atol=1e-5)
    model.save(tmp_path / "m.safetensors")
    again = keras.models.load_model(tmp_path / "m.safetensors")
    np.testing.assert_allclose(again.predict(x, verbose=0), p, atol=1e-6)
    export_model(tmp_path / "m.safetensors", "onnx", out=tmp_path / "m.onnx")  # parity-checked


def test_spatial_dropout_drops_whole_channels_only_in_training():
    layer = layers.SpatialDropout2D(0.5)
    layer.build((4, 4, 16))
    x = torch.ones(2, 16, 4, 4)
    layer.train()
    out = layer(x)
    per_map = out.flatten(2)  # (B, C, H*W): each map all zero or all 2.0
    assert ((per_map == 0).all(2) | (per_map == 2).all(2)).all() and (per_map == 0).any()
    layer.eval()
    assert torch.equal(layer(x), x)
    with pytest.raises(ShapeError, match="expects images"):
        layers.SpatialDropout2D(0.5).build((10,))


def test_reshape_and_settings_are_checked():
    with pytest.raises(ShapeError, match="has 48 values"):
        layers.Reshape((7, 7)).build((4, 4, 3))
    with pytest.raises(ConfigError, match="at most one -1"):
        layers.Reshape((-1, -1))
    with pytest.raises(ConfigError, match="axis=-1"):
        layers.Softmax(axis=1)
    with pytest.raises(ConfigError, match="negative_slope must be >= 0"):
        layers.LeakyReLU(negative_slope=-1)
    assert layers.LeakyReLU(alpha=0.2).negative_slope == 0.2  # Keras 2's name, in legacy .h5 files
