"""Depthwise and depthwise-separable convolutions, with Keras' arguments and weight layout.

``DepthwiseConv2D`` is a grouped convolution (one group per input channel, ``depth_multiplier``
filters each); its output channel ``c * depth_multiplier + m`` is Keras' too, so Keras'
``(kh, kw, in, multiplier)`` kernel maps onto torch's ``(in * multiplier, 1, kh, kw)`` by a reshape.
``SeparableConv2D`` is that depthwise convolution (no bias) followed by a 1x1 convolution.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.errors import ConfigError
from cnnkit.layers.base import Layer, Shape, expect_image_shape, initialize
from cnnkit.layers.conv import Conv2D

__all__ = ["DepthwiseConv2D", "SeparableConv2D"]


class DepthwiseConv2D(Conv2D):
    """Depthwise 2-D convolution (``DepthwiseConv2D(kernel_size, strides, padding, depth_multiplier, ...)``)."""

    def __init__(
        self,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1),
        padding: str = "valid",
        depth_multiplier: int = 1,
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = (1, 1),
        activation: str | nn.Module | None = None,
        use_bias: bool = True,
        depthwise_initializer: str = "glorot_uniform",
        bias_initializer: str = "zeros",
        **kwargs: Any,
    ) -> None:
        if not isinstance(depth_multiplier, int) or depth_multiplier <= 0:
            raise ConfigError(f"DepthwiseConv2D depth_multiplier must be a positive int, got {depth_multiplier!r}")
        super().__init__(
            1, kernel_size, strides, padding, data_format, dilation_rate, 1, activation, use_bias,
            depthwise_initializer, bias_initializer, **kwargs,
        )  # fmt: skip
        self.depth_multiplier = depth_multiplier

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        channels = expect_image_shape(self, input_shape)[2]
        # One group per input channel: what Conv2D computes with these filters and groups.
        self.filters, self.groups = channels * self.depth_multiplier, channels
        return super().compute_output_shape(input_shape)

    def get_weights(self) -> list[np.ndarray]:
        # torch (in*mult, 1, kh, kw) -> Keras (kh, kw, in, mult)
        w = self.conv.weight.detach().cpu()
        kernel = w[:, 0].permute(1, 2, 0).reshape(*self.kernel_size, self.groups, self.depth_multiplier)
        return [kernel.numpy()] + ([self.conv.bias.detach().cpu().numpy()] if self.use_bias else [])

    def _set_weights(self, weights: list[torch.Tensor]) -> None:
        kh, kw = self.kernel_size
        with torch.no_grad():
            self.conv.weight.copy_(weights[0].reshape(kh, kw, -1).permute(2, 0, 1)[:, None])
            if self.use_bias:
                self.conv.bias.copy_(weights[1])

    def get_config(self) -> dict[str, Any]:
        config = super().get_config()
        for key in ("filters", "groups", "kernel_initializer"):
            config.pop(key)
        return {**config, "depth_multiplier": self.depth_multiplier, "depthwise_initializer": self.kernel_initializer}


class SeparableConv2D(Layer):
    """Depthwise-separable 2-D convolution (``SeparableConv2D(filters, kernel_size, ...)``), as Keras'."""

    def __init__(
        self,
        filters: int,
        kernel_size: int | Sequence[int],
        strides: int | Sequence[int] = (1, 1),
        padding: str = "valid",
        data_format: str | None = None,
        dilation_rate: int | Sequence[int] = (1, 1),
        depth_multiplier: int = 1,
        activation: str | nn.Module | None = None,
        use_bias: bool = True,
        depthwise_initializer: str = "glorot_uniform",
        pointwise_initializer: str = "glorot_uniform",
        bias_initializer: str = "zeros",
        **kwargs: Any,
    ) -> None:
        super().__init__(activation, **kwargs)
        if not isinstance(filters, int) or filters <= 0:
            raise ConfigError(f"SeparableConv2D filters must be a positive int, got {filters!r}")
        self.filters, self.use_bias = filters, use_bias
        self.pointwise_initializer, self.bias_initializer = pointwise_initializer, bias_initializer
        self.depthwise = DepthwiseConv2D(
            kernel_size, strides, padding, depth_multiplier, data_format, dilation_rate,
            use_bias=False, depthwise_initializer=depthwise_initializer, name="depthwise",
        )  # fmt: skip

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w, _ = self.depthwise.compute_output_shape(input_shape)
        return (h, w, self.filters)

    def _build(self, input_shape: Shape) -> None:
        self.depthwise.build(input_shape)
        self.pointwise = nn.Conv2d(self.depthwise.filters, self.filters, 1, bias=self.use_bias)
        initialize(self.pointwise.weight, self.pointwise_initializer)
        if self.use_bias:
            initialize(self.pointwise.bias, self.bias_initializer)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return self.pointwise(self.depthwise(x))

    def get_weights(self) -> list[np.ndarray]:
        # Keras: depthwise (kh, kw, in, mult), pointwise (1, 1, in*mult, filters), bias
        pointwise = self.pointwise.weight.detach().permute(2, 3, 1, 0).cpu().numpy()
        bias = [self.pointwise.bias.detach().cpu().numpy()] if self.use_bias else []
        return [*self.depthwise.get_weights(), pointwise, *bias]

    def _set_weights(self, weights: list[torch.Tensor]) -> None:
        self.depthwise._set_weights(weights[:1])
        with torch.no_grad():
            self.pointwise.weight.copy_(weights[1].permute(3, 2, 0, 1))
            if self.use_bias:
                self.pointwise.bias.copy_(weights[2])

    def get_config(self) -> dict[str, Any]:
        d = self.depthwise
        return {
            **super().get_config(),
            "filters": self.filters,
            "kernel_size": list(d.kernel_size),
            "strides": list(d.strides),
            "padding": d.padding,
            "dilation_rate": list(d.dilation_rate),
            "depth_multiplier": d.depth_multiplier,
            "use_bias": self.use_bias,
            "depthwise_initializer": d.kernel_initializer,
            "pointwise_initializer": self.pointwise_initializer,
            "bias_initializer": self.bias_initializer,
        }
