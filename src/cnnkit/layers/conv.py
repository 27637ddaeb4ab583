"""Convolution: ``Conv2D`` with Keras' arguments and TensorFlow's 'same' padding."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import ConfigError, ShapeError
from cnnkit.layers.base import (
    Layer,
    Shape,
    check_data_format,
    check_padding,
    expect_image_shape,
    initialize,
    out_length,
    pair,
    same_pads,
)  # fmt: skip

__all__ = ["Conv2D"]


class Conv2D(Layer):
    """2-D convolution (``Conv2D(filters, kernel_size, strides, padding, ...)``), as Keras'."""

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1),
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = (1, 1),
        groups: int = 1,
        activation: str | nn.Module | None = None,
        use_bias: bool = True,
        kernel_initializer: str = "glorot_uniform",
        bias_initializer: str = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(activation, **kwargs)
        check_data_format(data_format)
        if not isinstance(filters, int) or filters <= 0:
            raise ConfigError(f"Conv2D filters must be a positive int, got {filters!r}")
        self.filters, self.groups, self.use_bias = filters, groups, use_bias
        self.kernel_size = pair(kernel_size, "kernel_size")
        self.strides = pair(strides, "strides")
        self.dilation_rate = pair(dilation_rate, "dilation_rate")
        self.padding = check_padding(padding)
        self.kernel_initializer, self.bias_initializer = kernel_initializer, bias_initializer

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w, c = expect_image_shape(self, input_shape)
        if c % self.groups or self.filters % self.groups:
            raise ShapeError(f"{self.name}: channels ({c}) and filters ({self.filters}) must divide by groups")
        out = [
            out_length(n, k, s, d, self.padding)
            for n, k, s, d in zip((h, w), self.kernel_size, self.strides, self.dilation_rate)
        ]
        if any(o is not None and o < 1 for o in out):
            raise ShapeError(
                f"Conv2D layer {self.name!r} with a {self.kernel_size[0]}x{self.kernel_size[1]} kernel got a "
                f"{h}x{w} input, too small for a 'valid' convolution: use padding='same', fewer "
                f"pooling layers, or a larger input_shape"
            )
        return (out[0], out[1], self.filters)

    def _build(self, input_shape: Shape) -> None:
        h, w, c = input_shape
        # 'same' with an even kernel or a stride pads one more pixel at the bottom/right,
        # which nn.Conv2d cannot express: those cases pad explicitly before the conv.
        self._pads: tuple[int, int, int, int] | None = None  # (left, right, top, bottom)
        conv_padding: tuple[int, int] = (0, 0)
        if self.padding == "same" and h is not None and w is not None:
            top, bottom = same_pads(h, self.kernel_size[0], self.strides[0], self.dilation_rate[0])
            left, right = same_pads(w, self.kernel_size[1], self.strides[1], self.dilation_rate[1])
            if top == bottom and left == right:
                conv_padding = (top, left)
            else:
                self._pads = (left, right, top, bottom)
        self._dynamic_same = self.padding == "same" and (h is None or w is None)
        self.conv = nn.Conv2d(
            c, self.filters, self.kernel_size, self.strides, conv_padding,
            self.dilation_rate, self.groups, bias=self.use_bias,
        )  # fmt: skip
        initialize(self.conv.weight, self.kernel_initializer)
        if self.use_bias:
            initialize(self.conv.bias, self.bias_initializer)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if self._dynamic_same:  # input size unknown at build time
            top, bottom = same_pads(x.shape[2], self.kernel_size[0], self.strides[0], self.dilation_rate[0])
            left, right = same_pads(x.shape[3], self.kernel_size[1], self.strides[1], self.dilation_rate[1])
            x = F.pad(x, (left, right, top, bottom))
        elif self._pads is not None:
            x = F.pad(x, self._pads)
        return self.conv(x)

    def get_weights(self) -> list[np.ndarray]:
        # torch (filters, in/groups, kh, kw) -> Keras (kh, kw, in/groups, filters)
        weights = [self.conv.weight.detach().permute(2, 3, 1, 0).cpu().numpy()]
        if self.use_bias:
            weights.append(self.conv.bias.detach().cpu().numpy())
        return weights

    def _set_weights(self, weights: list[torch.Tensor]) -> None:
        with torch.no_grad():
            self.conv.weight.copy_(weights[0].permute(3, 2, 0, 1))
            if self.use_bias:
                self.conv.bias.copy_(weights[1])

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(self.kernel_size),
            "strides": list(self.strides),
            "padding": self.padding,
            "dilation_rate": list(self.dilation_rate),
            "groups": self.groups,
            "use_bias": self.use_bias,
            "kernel_initializer": self.kernel_initializer,
            "bias_initializer": self.bias_initializer,
        }
