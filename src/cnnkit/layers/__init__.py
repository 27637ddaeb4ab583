"""Keras-style layers on torch.nn, with Keras' names, arguments, defaults and shapes.

Each layer is built once its input shape is known (``build``), which creates its
parameters and checks the shape; a mistake such as a ``Dense`` after a convolution
without ``Flatten`` is reported there, naming the layer and the fix. See
:mod:`cnnkit.layers.base` for the shape conventions.
"""

from __future__ import annotations

from typing import Any

from cnnkit.errors import ConfigError
from cnnkit.layers.activation import LeakyReLU, ReLU, Softmax
from cnnkit.layers.augmentation import RandomContrast, RandomFlip, RandomRotation, RandomTranslation, RandomZoom
from cnnkit.layers.base import INITIALIZERS, Layer
from cnnkit.layers.conv import Conv2D
from cnnkit.layers.core import Activation, Dense, Dropout, Flatten, Input, InputLayer, Rescaling, SpatialDropout2D
from cnnkit.layers.depthwise import DepthwiseConv2D, SeparableConv2D
from cnnkit.layers.merge import Add, Average, Concatenate, Maximum, Minimum, Multiply, Subtract
from cnnkit.layers.normalization import BatchNormalization
from cnnkit.layers.pooling import AveragePooling2D, GlobalAveragePooling2D, GlobalMaxPooling2D, MaxPooling2D
from cnnkit.layers.reshaping import Reshape, Resizing, UpSampling2D, ZeroPadding2D
from cnnkit.layers.symbolic import KerasTensor

__all__ = [
    "INITIALIZERS",
    "LAYERS",
    "Activation",
    "Add",
    "Average",
    "AveragePooling2D",
    "BatchNormalization",
    "Concatenate",
    "Conv2D",
    "Dense",
    "DepthwiseConv2D",
    "Dropout",
    "Flatten",
    "GlobalAveragePooling2D",
    "GlobalMaxPooling2D",
    "Input",
    "InputLayer",
    "KerasTensor",
    "Layer",
    "LeakyReLU",
    "MaxPooling2D",
    "Maximum",
    "Minimum",
    "Multiply",
    "RandomContrast",
    "RandomFlip",
    "RandomRotation",
    "RandomTranslation",
    "RandomZoom",
    "ReLU",
    "Rescaling",
    "Reshape",
    "Resizing",
    "SeparableConv2D",
    "Softmax",
    "SpatialDropout2D",
    "Subtract",
    "UpSampling2D",
    "ZeroPadding2D",
    "layer_from_config",
]

LAYERS: dict[str, type[Layer]] = {
    cls.__name__: cls
    for cls in (
        Activation, AveragePooling2D, BatchNormalization, Conv2D, Dense, Dropout, Flatten,
        GlobalAveragePooling2D, GlobalMaxPooling2D, InputLayer, MaxPooling2D, Rescaling,
        DepthwiseConv2D, SeparableConv2D, ZeroPadding2D, Resizing,
        RandomFlip, RandomRotation, RandomZoom, RandomTranslation, RandomContrast,
        Add, Subtract, Multiply, Average, Maximum, Minimum, Concatenate,
        ReLU, LeakyReLU, Softmax, SpatialDropout2D, UpSampling2D, Reshape,
    )
}  # fmt: skip


def layer_from_config(spec: dict[str, Any]) -> Layer:
    """Rebuild a layer from ``{"class_name": ..., "config": {...}}`` (what a model file stores)."""
    class_name = spec.get("class_name")
    if class_name not in LAYERS:
        raise ConfigError(f"unknown layer {class_name!r}; cnnkit knows: {', '.join(sorted(LAYERS))}")
    try:
        return LAYERS[class_name](**spec.get("config", {}))
    except TypeError as e:
        raise ConfigError(f"bad config for {class_name}: {e}") from None


def __getattr__(name: str) -> Any:
    from cnnkit._keras_names import missing  # a Keras layer cnnkit lacks: say what to use instead

    raise missing(__name__, name)
