"""Core layers: Input, Flatten, Dense, Dropout, Activation, Rescaling."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.errors import ConfigError, ShapeError
from cnnkit.layers.base import Layer, Shape, check_data_format, expect_image_shape, initialize
from cnnkit.layers.symbolic import KerasTensor, unique_name

__all__ = ["Activation", "Dense", "Dropout", "Flatten", "Input", "InputLayer", "Rescaling"]


class InputLayer(Layer):
    """Declares a model's input shape (Keras' ``InputLayer``); shown in no summary."""

    def __init__(self, shape: Sequence[int | None] | None = None, *, batch_size: int | None = None, **kwargs: Any):
        input_shape = kwargs.pop("input_shape", None)
        super().__init__(**kwargs)
        self.shape = tuple(shape if shape is not None else input_shape or ())
        if not self.shape:
            raise ConfigError("InputLayer needs shape=(height, width, channels)")

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "shape": list(self.shape)}


def Input(shape: Sequence[int | None], *, name: str | None = None, batch_size: int | None = None) -> KerasTensor:  # noqa: N802 - Keras' name
    """``keras.Input(shape=(28, 28, 1))``: a model's input, as in Keras.

    The first item of a ``Sequential([...])`` list, or the start of the functional API:
    ``inputs = keras.Input((28, 28, 1)); x = layers.Conv2D(8, 3)(inputs); ...;
    keras.Model(inputs, outputs)``.
    """
    layer = InputLayer(shape, name=name, batch_size=batch_size)
    if layer.name is None:
        layer.name = unique_name(layer)
    layer.build(layer.shape)
    return KerasTensor((None, *layer.shape), layer)


class Flatten(Layer):
    """``(None, H, W, C) -> (None, H*W*C)`` in Keras' (channels-last) order."""

    def __init__(self, data_format: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_data_format(data_format)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if any(n is None for n in input_shape):
            raise ShapeError(f"Flatten layer {self.name!r} needs a fixed input size, got {(None, *input_shape)}")
        return (math.prod(input_shape),)  # type: ignore[arg-type]

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # (B, C, H, W) -> (B, H, W, C): free on channels-last memory
            x = x.permute(0, 2, 3, 1)
        return x.flatten(1)


class Dense(Layer):
    """Fully connected layer (``Dense(units, activation=None, use_bias=True, ...)``)."""

    def __init__(
        self,
        units: int,
        activation: str | nn.Module | None = None,
        use_bias: bool = True,
        kernel_initializer: str = "glorot_uniform",
        bias_initializer: str = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(activation, **kwargs)
        if not isinstance(units, int) or units <= 0:
            raise ConfigError(f"Dense units must be a positive int, got {units!r}")
        self.units, self.use_bias = units, use_bias
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 1:
            # The article's code forgets this: Keras would silently apply Dense to the
            # last axis and fail much later with a confusing loss-shape error.
            raise ShapeError(
                f"Dense layer {self.name!r} got a {len(input_shape) + 1}-D input {(None, *input_shape)}, "
                f"but Dense needs flat features (None, features). Add layers.Flatten() before it "
                f"(or layers.GlobalAveragePooling2D() to average each feature map)."
            )
        return (self.units,)

    def _build(self, input_shape: Shape) -> None:
        self.linear = nn.Linear(input_shape[0], self.units, bias=self.use_bias)
        initialize(self.linear.weight, self.kernel_initializer)
        if self.use_bias:
            initialize(self.linear.bias, self.bias_initializer)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x)

    def get_weights(self) -> list[np.ndarray]:
        weights = [self.linear.weight.detach().T.cpu().numpy()]  # Keras: (in, out)
        if self.use_bias:
            weights.append(self.linear.bias.detach().cpu().numpy())
        return weights

    def _set_weights(self, weights: list[torch.Tensor]) -> None:
        with torch.no_grad():
            self.linear.weight.copy_(weights[0].T)
            if self.use_bias:
                self.linear.bias.copy_(weights[1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "units": self.units,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        }


class Dropout(Layer):
    """Zeroes a fraction ``rate`` of the inputs while training."""

    def __init__(self, rate: float, noise_shape: Any = None, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if not 0 <= rate < 1:
            raise ConfigError(f"Dropout rate must be in [0, 1), got {rate!r}")
        if noise_shape is not None:
            raise ConfigError("Dropout noise_shape is not supported")
        self.rate = float(rate)
        self.dropout = nn.Dropout(self.rate)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return self.dropout(x)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "rate": self.rate}


class SpatialDropout2D(Dropout):
    """Zeroes whole feature maps (a fraction ``rate`` of the channels) while training, as Keras does."""

    def __init__(self, rate: float, data_format: str | None = None, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(rate, seed=seed, **kwargs)
        check_data_format(data_format)
        self.dropout = nn.Dropout2d(self.rate)  # (B, C, H, W): one draw per channel

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return expect_image_shape(self, input_shape)


class Activation(Layer):
    """Applies an activation by name (``Activation('relu')``)."""

    def __init__(self, activation: str | nn.Module | None, **kwargs: Any) -> None:
        super().__init__(activation, **kwargs)


class Rescaling(Layer):
    """``x * scale + offset``, e.g. ``Rescaling(1/255)`` for 0..255 pixel arrays."""

    def __init__(self, scale: float, offset: float = 0.0, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.scale, self.offset = float(scale), float(offset)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x * self.scale + self.offset

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "scale": self.scale, "offset": self.offset}
