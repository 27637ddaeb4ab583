"""Keras' image augmentation layers: random while training, the identity at inference (as in Keras).

``RandomFlip``, ``RandomRotation``, ``RandomZoom``, ``RandomTranslation`` and ``RandomContrast``
take Keras' arguments. Each image of a batch gets its own random draw. The geometric ones
are one affine resampling (``torch.nn.functional.grid_sample``), which also gives Keras' fill
modes: ``reflect`` (the default), ``nearest`` and ``constant`` (``fill_value``). A ``seed``
makes a layer's draws repeatable; without one they follow torch's global generator, which
:func:`cnnkit.seed_everything` seeds.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError
from cnnkit.layers.base import Layer, Shape, check_data_format, expect_image_shape

__all__ = ["RandomContrast", "RandomFlip", "RandomRotation", "RandomTranslation", "RandomZoom"]

_FILL_MODES = {"reflect": "reflection", "nearest": "border", "constant": "zeros"}


def _range(factor: float | Sequence[float], what: str) -> tuple[float, float]:
    """Keras' factor: ``f`` means ``(-f, f)``; a pair is ``(lower, upper)``."""
    if isinstance(factor, (int, float)):
        lower, upper = -abs(float(factor)), abs(float(factor))
    else:
        values = [float(v) for v in factor]
        if len(values) != 2:
            raise ConfigError(f"{what} must be a number or a (lower, upper) pair, got {factor!r}")
        lower, upper = values
    if lower > upper:
        raise ConfigError(f"{what}: lower {lower} is above upper {upper}")
    return lower, upper


class _Random(Layer):
    """A layer that draws random numbers while training and passes its input through otherwise."""

    def __init__(self, seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.seed = seed
        self._generator: torch.Generator | None = None

    def compute_output_shape(self, input_shape: Shape) -> Shape:
        expect_image_shape(self, input_shape)
        return tuple(input_shape)

    def _uniform(self, n: int, low: float, high: float, device: torch.device) -> torch.Tensor:
        if self.seed is not None and self._generator is None:
            self._generator = torch.Generator().manual_seed(self.seed)
        return (torch.rand(n, generator=self._generator) * (high - low) + low).to(device)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.augment(x) if self.training else x

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "seed": self.seed}


class RandomFlip(_Random):
    """Flip each image with probability 1/2 (``mode``: ``horizontal``, ``vertical`` or both)."""

    def __init__(self, mode: str = "horizontal_and_vertical", seed: int | None = None, **kwargs: Any) -> None:
        super().__init__(seed, **kwargs)
        if mode not in ("horizontal", "vertical", "horizontal_and_vertical"):
            raise ConfigError(f"RandomFlip mode must be horizontal, vertical or horizontal_and_vertical, got {mode!r}")
        self.mode = mode

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        for axis, on in ((3, "horizontal" in self.mode), (2, "vertical" in self.mode)):
            if on:
                flip = (self._uniform(len(x), 0, 1, x.device) < 0.5).view(-1, 1, 1, 1)
                x = torch.where(flip, x.flip(axis), x)
        return x

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "mode": self.mode}


class _Affine(_Random):
    """Random affine resampling with Keras' fill modes and interpolation."""

    def __init__(self, fill_mode: str = "reflect", interpolation: str = "bilinear", seed: int | None = None,
                 fill_value: float = 0.0, data_format: str | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(seed, **kwargs)
        check_data_format(data_format)
        if fill_mode not in _FILL_MODES:
            raise ConfigError(f"fill_mode must be one of {', '.join(_FILL_MODES)} in cnnkit, got {fill_mode!r}")
        if interpolation not in ("bilinear", "nearest"):
            raise ConfigError(f"interpolation must be bilinear or nearest, got {interpolation!r}")
        self.fill_mode, self.interpolation, self.fill_value = fill_mode, interpolation, float(fill_value)

    def matrices(self, n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        """``(n, 2, 3)``: for each image, output pixel -> input pixel, in pixels about the centre."""
        raise NotImplementedError

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        n, _, h, w = x.shape
        theta = self.matrices(n, h, w, x.device)
        # affine_grid works in [-1, 1] coordinates: scale pixels about the centre to them and back.
        scale = torch.tensor([w / 2, h / 2], device=x.device)
        theta = torch.cat([theta[:, :, :2] * scale[None, None, :] / scale[None, :, None],
                           (theta[:, :, 2] / scale)[:, :, None]], dim=2)  # fmt: skip
        grid = F.affine_grid(theta.to(x.dtype), list(x.shape), align_corners=False)
        shift = self.fill_value if self.fill_mode == "constant" else 0.0  # zeros padding, moved to fill_value
        out = F.grid_sample(x - shift, grid, mode=self.interpolation, padding_mode=_FILL_MODES[self.fill_mode],
                            align_corners=False)  # fmt: skip
        return out + shift

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "fill_mode": self.fill_mode, "interpolation": self.interpolation,
                "fill_value": self.fill_value}  # fmt: skip


def _identity(n: int, device: torch.device) -> torch.Tensor:
    return torch.eye(2, 3, device=device).repeat(n, 1, 1)


class RandomRotation(_Affine):
    """Rotate each image by a random fraction of a full turn (``factor=0.1``: up to +-36 degrees)."""

    def __init__(self, factor: float | Sequence[float], fill_mode: str = "reflect", interpolation: str = "bilinear",
                 seed: int | None = None, fill_value: float = 0.0, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.factor = _range(factor, "RandomRotation factor")

    def matrices(self, n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        angle = self._uniform(n, *self.factor, device) * 2 * math.pi
        cos, sin = torch.cos(angle), torch.sin(angle)
        theta = _identity(n, device)
        theta[:, 0, 0], theta[:, 0, 1], theta[:, 1, 0], theta[:, 1, 1] = cos, -sin, sin, cos
        return theta

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": list(self.factor)}


class RandomZoom(_Affine):
    """Zoom each image by a random factor (positive: out, negative: in; ``width_factor=None`` keeps the
    aspect ratio)."""

    def __init__(self, height_factor: float | Sequence[float], width_factor: float | Sequence[float] | None = None,
                 fill_mode: str = "reflect", interpolation: str = "bilinear", seed: int | None = None,
                 fill_value: float = 0.0, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.height_factor = _range(height_factor, "RandomZoom height_factor")
        self.width_factor = None if width_factor is None else _range(width_factor, "RandomZoom width_factor")
        if self.height_factor[0] <= -1 or (self.width_factor and self.width_factor[0] <= -1):
            raise ConfigError("RandomZoom factors must be above -1 (a zoom of -100% leaves nothing)")

    def matrices(self, n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        zoom_h = 1 + self._uniform(n, *self.height_factor, device)
        zoom_w = zoom_h if self.width_factor is None else 1 + self._uniform(n, *self.width_factor, device)
        theta = _identity(n, device)
        theta[:, 0, 0], theta[:, 1, 1] = zoom_w, zoom_h  # an output pixel reads farther out: zoomed out
        return theta

    def get_config(self) -> dict[str, Any]:
        width = list(self.width_factor) if self.width_factor is not None else None
        return {**super().get_config(), "height_factor": list(self.height_factor), "width_factor": width}


class RandomTranslation(_Affine):
    """Shift each image by a random fraction of its height and width."""

    def __init__(self, height_factor: float | Sequence[float], width_factor: float | Sequence[float],
                 fill_mode: str = "reflect", interpolation: str = "bilinear", seed: int | None = None,
                 fill_value: float = 0.0, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(fill_mode, interpolation, seed, fill_value, **kwargs)
        self.height_factor = _range(height_factor, "RandomTranslation height_factor")
        self.width_factor = _range(width_factor, "RandomTranslation width_factor")

    def matrices(self, n: int, height: int, width: int, device: torch.device) -> torch.Tensor:
        theta = _identity(n, device)
        theta[:, 0, 2] = -self._uniform(n, *self.width_factor, device) * width  # content moves right by dx
        theta[:, 1, 2] = -self._uniform(n, *self.height_factor, device) * height
        return theta

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "height_factor": list(self.height_factor),
                "width_factor": list(self.width_factor)}  # fmt: skip


class RandomContrast(_Random):
    """Scale each image's contrast about its per-channel mean by a random factor in ``[1 - lower, 1 + upper]``,
    clipped to ``value_range``."""

    def __init__(self, factor: float | Sequence[float], value_range: Sequence[float] = (0, 255),
                 seed: int | None = None, **kwargs: Any) -> None:  # fmt: skip
        super().__init__(seed, **kwargs)
        lower, upper = (factor, factor) if isinstance(factor, (int, float)) else tuple(factor)
        if not (0 <= lower <= 1 and upper >= 0):
            raise ConfigError(f"RandomContrast factor must be in [0, 1] (or a (lower, upper) pair), got {factor!r}")
        self.factor = (float(lower), float(upper))
        self.value_range = (float(value_range[0]), float(value_range[1]))

    def augment(self, x: torch.Tensor) -> torch.Tensor:
        factor = self._uniform(len(x), 1 - self.factor[0], 1 + self.factor[1], x.device).view(-1, 1, 1, 1)
        mean = x.mean(dim=(2, 3), keepdim=True)
        return ((x - mean) * factor.to(x.dtype) + mean).clamp(*self.value_range)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "factor": list(self.factor), "value_range": list(self.value_range)}
