"""Layers against Keras itself (recorded outputs) and against torch.nn.functional references."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from cnnkit import layers
from cnnkit.errors import ConfigError, ShapeError

ORACLE = np.load(Path(__file__).parent / "fixtures" / "keras_oracle.npz")

# The same layers as tests/fixtures/make_keras_oracle.py, built with cnnkit.
CASES = {
    "conv_even_kernel_stride2_same": lambda: layers.Conv2D(5, (4, 4), strides=2, padding="same"),
    "conv_2x3_same": lambda: layers.Conv2D(4, (2, 3), padding="same", activation="tanh"),
    "conv_stride21_valid_nobias": lambda: layers.Conv2D(4, 3, strides=(2, 1), use_bias=False),
    "conv_dilated_same": lambda: layers.Conv2D(3, 3, dilation_rate=2, padding="same"),
    "maxpool_3_stride2_same": lambda: layers.MaxPooling2D(3, strides=2, padding="same"),
    "maxpool_default": lambda: layers.MaxPooling2D(),
    "avgpool_3_stride2_same": lambda: layers.AveragePooling2D((3, 3), strides=2, padding="same"),
    "avgpool_2_same": lambda: layers.AveragePooling2D(2, padding="same"),
    "avgpool_2x3_stride1_valid": lambda: layers.AveragePooling2D((2, 3), strides=1),
    "global_avg": lambda: layers.GlobalAveragePooling2D(),
    "global_max_keepdims": lambda: layers.GlobalMaxPooling2D(keepdims=True),
    "flatten": lambda: layers.Flatten(),
    "dense_softmax": lambda: layers.Dense(6, activation="softmax"),
    "batchnorm_image": lambda: layers.BatchNormalization(epsilon=0.01),
    "batchnorm_no_center": lambda: layers.BatchNormalization(center=False),
}


def _to_torch(x: np.ndarray) -> torch.Tensor:
    t = torch.from_numpy(x)
    return t.permute(0, 3, 1, 2) if t.ndim == 4 else t  # NHWC -> NCHW


def _to_keras(t: torch.Tensor) -> np.ndarray:
    t = t.detach()
    return (t.permute(0, 2, 3, 1) if t.ndim == 4 else t).numpy()


@pytest.mark.parametrize("case", sorted(CASES))
def test_layer_matches_keras_output(case):
    x, expected = ORACLE[f"{case}/x"], ORACLE[f"{case}/y"]
    layer = CASES[case]()
    out_shape = layer.build(x.shape[1:])
    assert (None, *out_shape) == (None, *expected.shape[1:]), "shape inference differs from Keras"
    weights = [ORACLE[f"{case}/w{i}"] for i in range(len(layer.get_weights()))]
    layer.set_weights(weights)
    layer.eval()
    with torch.no_grad():
        got = _to_keras(layer(_to_torch(x)))
    np.testing.assert_allclose(got, expected, rtol=1e-5, atol=1e-5)
    # and the weights come back in Keras' layout
    for mine, theirs in zip(layer.get_weights(), weights):
        np.testing.assert_array_equal(mine, theirs)


def test_oracle_covers_every_case():
    recorded = {key.split("/")[0] for key in ORACLE.files if "/" in key}
    assert recorded == set(CASES)


# -- torch.nn.functional references ---------------------------------------------------------------
def test_conv_same_stride1_odd_kernel_equals_symmetric_torch_padding():
    x = torch.randn(2, 3, 9, 7)
    layer = layers.Conv2D(4, 3, padding="same")
    layer.build((9, 7, 3))
    ref = F.conv2d(x, layer.conv.weight, layer.conv.bias, padding=1)
    torch.testing.assert_close(layer(x), ref)


@pytest.mark.parametrize("size,kernel,stride", [(8, 2, 1), (9, 4, 2), (10, 3, 2), (7, 2, 3)])
def test_conv_same_pads_extra_pixel_at_bottom_right(size, kernel, stride):
    """TF's rule: total = max((ceil(n/s)-1)*s + k - n, 0), the odd pixel after."""
    x = torch.randn(1, 2, size, size)
    layer = layers.Conv2D(3, kernel, strides=stride, padding="same")
    layer.build((size, size, 2))
    total = max((-(-size // stride) - 1) * stride + kernel - size, 0)
    before, after = total // 2, total - total // 2
    ref = F.conv2d(F.pad(x, (before, after, before, after)), layer.conv.weight, layer.conv.bias, stride=stride)
    torch.testing.assert_close(layer(x), ref)
    assert layer(x).shape[2] == -(-size // stride)


def test_pooling_valid_equals_torch():
    x = torch.randn(2, 3, 11, 10)
    mp = layers.MaxPooling2D((3, 2), strides=(2, 1))
    ap = layers.AveragePooling2D((2, 2))
    mp.build((11, 10, 3))
    ap.build((11, 10, 3))
    torch.testing.assert_close(mp(x), F.max_pool2d(x, (3, 2), (2, 1)))
    torch.testing.assert_close(ap(x), F.avg_pool2d(x, 2))


def test_flatten_uses_keras_channels_last_order():
    x = torch.arange(2 * 3 * 2 * 2, dtype=torch.float32).view(2, 3, 2, 2)  # (B, C, H, W)
    flat = layers.Flatten()
    flat.build((2, 2, 3))
    torch.testing.assert_close(flat(x), x.permute(0, 2, 3, 1).reshape(2, -1))


def test_dense_equals_linear_and_activations():
    x = torch.randn(4, 5)
    for name, fn in [("relu", torch.relu), ("sigmoid", torch.sigmoid), ("tanh", torch.tanh),
                     ("softmax", lambda t: torch.softmax(t, -1)), ("linear", lambda t: t), (None, lambda t: t)]:  # fmt: skip
        dense = layers.Dense(3, activation=name)
        dense.build((5,))
        torch.testing.assert_close(dense(x), fn(F.linear(x, dense.linear.weight, dense.linear.bias)))


def test_softmax_activation_on_feature_maps_uses_channels():
    x = torch.randn(2, 4, 3, 3)
    act = layers.Activation("softmax")
    act.build((3, 3, 4))
    torch.testing.assert_close(act(x).sum(dim=1), torch.ones(2, 3, 3))


def test_batchnorm_uses_keras_momentum_and_epsilon():
    bn = layers.BatchNormalization()
    bn.build((4, 4, 3))
    assert bn.bn.eps == pytest.approx(1e-3) and bn.bn.momentum == pytest.approx(0.01)
    bn.train()
    x = torch.randn(8, 3, 4, 4) * 3 + 2
    bn(x)
    expected = 0.99 * 0 + 0.01 * x.mean(dim=(0, 2, 3))
    torch.testing.assert_close(bn.bn.running_mean, expected)


def test_dropout_only_in_training():
    drop = layers.Dropout(0.5)
    drop.build((10,))
    x = torch.ones(100, 10)
    drop.eval()
    torch.testing.assert_close(drop(x), x)
    drop.train()
    assert (drop(x) == 0).any()


def test_keras_default_initializers():
    conv = layers.Conv2D(8, 3)
    conv.build((10, 10, 4))
    assert torch.all(conv.conv.bias == 0)
    limit = (6 / (3 * 3 * 4 + 3 * 3 * 8)) ** 0.5  # glorot_uniform
    assert conv.conv.weight.abs().max() <= limit


# -- shapes and errors ------------------------------------------------------------------------------
def test_dense_after_conv_without_flatten_names_layer_and_fix():
    conv = layers.Conv2D(64, 3, name="conv2d_2")
    conv.build((5, 5, 64))
    dense = layers.Dense(64, name="dense")
    with pytest.raises(ShapeError) as err:
        dense.build(conv.output_shape[1:])
    message = str(err.value)
    assert "'dense'" in message and "(None, 3, 3, 64)" in message and "4-D" in message
    assert "Flatten()" in message and "GlobalAveragePooling2D()" in message


def test_too_small_input_is_a_clear_error():
    with pytest.raises(ShapeError, match="too small"):
        layers.Conv2D(4, 5, name="c").build((3, 3, 1))
    with pytest.raises(ShapeError, match="smaller than its window"):
        layers.MaxPooling2D(4).build((3, 3, 1))


@pytest.mark.parametrize("bad", [
    lambda: layers.Conv2D(0, 3), lambda: layers.Conv2D(8, (3, 0)), lambda: layers.Conv2D(8, 3, padding="full"),
    lambda: layers.Dense(10, activation="swoosh"), lambda: layers.Dropout(1.5),
    lambda: layers.Conv2D(8, 3, data_format="channels_first"), lambda: layers.Conv2D(8, 3, kernel_initializer="magic"),
    lambda: layers.Conv2D(8, 3, bogus=1),
])  # fmt: skip
def test_bad_arguments_raise_config_errors(bad):
    with pytest.raises((ConfigError, TypeError)):
        layer = bad()
        layer.build((8, 8, 3))


def test_config_round_trip_rebuilds_identical_layers():
    for layer in [layers.Conv2D(8, (2, 3), strides=2, padding="same", activation="relu", use_bias=False),
                  layers.AveragePooling2D(3, strides=1, padding="same"), layers.Dense(7, activation="softmax"),
                  layers.BatchNormalization(center=False), layers.Dropout(0.3), layers.GlobalMaxPooling2D(keepdims=True)]:  # fmt: skip
        config = {"class_name": type(layer).__name__, "config": layer.get_config()}
        again = layers.layer_from_config(config)
        assert again.get_config() == layer.get_config()


def test_unknown_layer_in_config():
    with pytest.raises(ConfigError, match="unknown layer 'LSTM'"):
        layers.layer_from_config({"class_name": "LSTM", "config": {}})
