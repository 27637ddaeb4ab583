"""Shape layers: ``ZeroPadding2D``, ``Resizing``, ``UpSampling2D`` and ``Reshape``, with Keras' arguments."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError, ShapeError
from cnnkit.layers.base import Layer, Shape, check_data_format, expect_image_shape, pair

__all__ = ["Reshape", "Resizing", "UpSampling2D", "ZeroPadding2D"]


def _padding(padding: int | Sequence[Any]) -> tuple[tuple[int, int], tuple[int, int]]:
    """Keras' three spellings: ``1``, ``(rows, cols)``, ``((top, bottom), (left, right))``."""
    if isinstance(padding, int):
        padding = (padding, padding)
    parts = list(padding)
    if len(parts) == 2 and all(isinstance(p, int) for p in parts):
        parts = [(parts[0], parts[0]), (parts[1], parts[1])]
    try:
        (top, bottom), (left, right) = (tuple(p) for p in parts)
    except (TypeError, ValueError):
        raise ConfigError(f"ZeroPadding2D padding must be an int, (rows, cols) or ((top, bottom), (left, right)), "
                          f"got {padding!r}") from None  # fmt: skip
    if any(not isinstance(p, int) or p < 0 for p in (top, bottom, left, right)):
        raise ConfigError(f"ZeroPadding2D padding must be non-negative ints, got {padding!r}")
    return (top, bottom), (left, right)


class ZeroPadding2D(Layer):
    """Zeros around the image (``ZeroPadding2D(padding=(1, 1))``)."""

    def __init__(self, padding: int | Sequence[Any] = (1, 1), data_format: str | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        check_data_format(data_format)
        self.padding = _padding(padding)

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w, c = expect_image_shape(self, input_shape)
        (top, bottom), (left, right) = self.padding
        return (None if h is None else h + top + bottom, None if w is None else w + left + right, c)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        (top, bottom), (left, right) = self.padding
        return F.pad(x, (left, right, top, bottom))

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "padding": [list(p) for p in self.padding]}


# Keras' interpolation names -> torch's (TensorFlow resizes with half-pixel centres, as torch's
# align_corners=False does; its "nearest" is torch's "nearest-exact").
_MODES = {"bilinear": "bilinear", "nearest": "nearest-exact", "bicubic": "bicubic", "area": "area"}


class Resizing(Layer):
    """Resize images to ``(height, width)`` (``Resizing(height, width, interpolation='bilinear')``)."""

    def __init__(
        self,
        height: int,
        width: int,
        interpolation: str = "bilinear",
        crop_to_aspect_ratio: bool = False,
        data_format: str | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        check_data_format(data_format)
        if interpolation not in _MODES:
            raise ConfigError(f"Resizing interpolation must be one of {', '.join(_MODES)}, got {interpolation!r}")
        if not all(isinstance(n, int) and n > 0 for n in (height, width)):
            raise ConfigError(f"Resizing height and width must be positive ints, got {height!r}, {width!r}")
        self.height, self.width = height, width
        self.interpolation, self.crop_to_aspect_ratio = interpolation, crop_to_aspect_ratio

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        return (self.height, self.width, expect_image_shape(self, input_shape)[2])

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if self.crop_to_aspect_ratio:  # the largest centred crop with the target's aspect ratio
            h, w = x.shape[2], x.shape[3]
            crop_h = min(h, round(w * self.height / self.width))
            crop_w = min(w, round(h * self.width / self.height))
            top, left = (h - crop_h) // 2, (w - crop_w) // 2
            x = x[:, :, top : top + crop_h, left : left + crop_w]
        mode = _MODES[self.interpolation]
        corners = False if mode in ("bilinear", "bicubic") else None
        return F.interpolate(x, size=(self.height, self.width), mode=mode, align_corners=corners)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "height": self.height,
            "width": self.width,
            "interpolation": self.interpolation,
            "crop_to_aspect_ratio": self.crop_to_aspect_ratio,
        }


class UpSampling2D(Layer):
    """Repeat rows and columns (``UpSampling2D(size=(2, 2), interpolation='nearest')``); ``bilinear``
    interpolates with half-pixel centres, as Keras does."""

    def __init__(
        self, size: int | Sequence[int] = (2, 2), data_format: str | None = None, interpolation: str = "nearest",
        **kwargs: Any,
    ) -> None:  # fmt: skip
        super().__init__(**kwargs)
        check_data_format(data_format)
        self.size = pair(size, "UpSampling2D size")
        if interpolation not in ("nearest", "bilinear"):
            raise ConfigError(f"UpSampling2D interpolation must be 'nearest' or 'bilinear', got {interpolation!r}")
        self.interpolation = interpolation

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        h, w, c = expect_image_shape(self, input_shape)
        return (None if h is None else h * self.size[0], None if w is None else w * self.size[1], c)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if self.interpolation == "nearest":  # each pixel repeated: exact, whatever the sizes
            return x.repeat_interleave(self.size[0], dim=2).repeat_interleave(self.size[1], dim=3)
        return F.interpolate(x, scale_factor=self.size, mode="bilinear", align_corners=False)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "size": list(self.size), "interpolation": self.interpolation}


class Reshape(Layer):
    """Keras' ``Reshape(target_shape)`` over the values in Keras' (channels-last) order; one ``-1`` is inferred."""

    def __init__(self, target_shape: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.target_shape = tuple(int(n) for n in target_shape)
        if not self.target_shape or self.target_shape.count(-1) > 1 or any(n == 0 or n < -1 for n in self.target_shape):
            raise ConfigError(f"Reshape target_shape must be positive sizes with at most one -1, got {target_shape!r}")

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        if any(n is None for n in input_shape):
            raise ShapeError(f"Reshape layer {self.name!r} needs a fixed input size, got {(None, *input_shape)}")
        total, known = math.prod(input_shape), math.prod(n for n in self.target_shape if n != -1)  # type: ignore[arg-type]
        if -1 in self.target_shape:
            if total % known:
                raise ShapeError(f"Reshape layer {self.name!r} cannot make {(None, *input_shape)} into "
                                 f"{(None, *self.target_shape)}")  # fmt: skip
            return tuple(total // known if n == -1 else n for n in self.target_shape)
        if known != total:
            raise ShapeError(f"Reshape layer {self.name!r}: {(None, *input_shape)} has {total} values, "
                             f"{(None, *self.target_shape)} holds {known}")  # fmt: skip
        return self.target_shape

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if x.ndim == 4:  # (B, C, H, W) -> Keras' (B, H, W, C) order of the values
            x = x.permute(0, 2, 3, 1)
        y = x.flatten(1).unflatten(1, self.output_shape[1:])  # no batch size in the graph: exports keep it dynamic
        return y.permute(0, 3, 1, 2) if y.ndim == 4 else y  # an image again: (B, C, H, W)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "target_shape": list(self.target_shape)}
