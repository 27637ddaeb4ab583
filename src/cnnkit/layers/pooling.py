"""Pooling: max and average over windows (Keras' padding semantics), and global pooling."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit.errors import ShapeError
from cnnkit.layers.base import (
    Layer,
    Shape,
    check_data_format,
    check_padding,
    expect_image_shape,
    out_length,
    pair,
    same_pads,
)

__all__ = ["AveragePooling2D", "GlobalAveragePooling2D", "GlobalMaxPooling2D", "MaxPooling2D"]


class _Pooling2D(Layer):
    """Max or average pooling over windows, Keras' padding semantics included."""

    mode = "max"

    def __init__(
        self,
        pool_size: int | Sequence[int] = (2, 2),
        strides: int | Sequence[int] | None = None,
        padding: str = "valid",
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_data_format(data_format)
        self.pool_size = pair(pool_size, "pool_size")
        self.strides = pair(strides, "strides") if strides is not None else self.pool_size
        self.padding = check_padding(padding)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w, c = expect_image_shape(self, input_shape)
        out = [out_length(n, k, s, 1, self.padding) for n, k, s in zip((h, w), self.pool_size, self.strides)]
        if any(o is not None and o < 1 for o in out):
            raise ShapeError(
                f"{type(self).__name__} layer {self.name!r} with pool_size {self.pool_size} got a {h}x{w} "
                f"input, smaller than its window: use padding='same' or a larger input_shape"
            )
        return (out[0], out[1], c)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        k, s = self.pool_size, self.strides
        if self.padding == "same":
            top, bottom = same_pads(x.shape[2], k[0], s[0])
            left, right = same_pads(x.shape[3], k[1], s[1])
            if top or bottom or left or right:
                return self._pool_padded(x, (left, right, top, bottom))
        return F.max_pool2d(x, k, s) if self.mode == "max" else F.avg_pool2d(x, k, s)

    def _pool_padded(self, x: torch.Tensor, pads: tuple[int, int, int, int]) -> torch.Tensor:
        k, s = self.pool_size, self.strides
        if self.mode == "max":  # padded cells never win a max
            return F.max_pool2d(F.pad(x, pads, value=float("-inf")), k, s)
        # Keras averages over the real pixels of each window only, not the padding.
        sums = F.avg_pool2d(F.pad(x, pads), k, s, divisor_override=1)
        ones = torch.ones((1, 1, *x.shape[2:]), dtype=x.dtype, device=x.device)
        counts = F.avg_pool2d(F.pad(ones, pads), k, s, divisor_override=1)
        return sums / counts

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "pool_size": list(self.pool_size),
            "strides": list(self.strides),
            "padding": self.padding,
        }


class MaxPooling2D(_Pooling2D):
    """Max pooling (``MaxPooling2D(pool_size=(2, 2), strides=None, padding='valid')``)."""

    mode = "max"


class AveragePooling2D(_Pooling2D):
    """Average pooling; like Keras 3, ``pool_size`` has no default."""

    mode = "avg"

    def __init__(self, pool_size: int | Sequence[int], strides: int | Sequence[int] | None = None,
                 padding: str = "valid", data_format: str | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(pool_size, strides, padding, data_format, **kwargs)


class _GlobalPooling2D(Layer):
    def __init__(self, data_format: str | None = None, keepdims: bool = False, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_data_format(data_format)
        self.keepdims = keepdims

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        _, _, c = expect_image_shape(self, input_shape)
        return (1, 1, c) if self.keepdims else (c,)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "keepdims": self.keepdims}


class GlobalAveragePooling2D(_GlobalPooling2D):
    """Mean over height and width: ``(None, H, W, C) -> (None, C)``."""

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.mean(dim=(2, 3), keepdim=self.keepdims)


class GlobalMaxPooling2D(_GlobalPooling2D):
    """Max over height and width: ``(None, H, W, C) -> (None, C)``."""

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return x.amax(dim=(2, 3), keepdim=self.keepdims)
