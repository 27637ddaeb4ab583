"""Bring images to a model's input: channels, size, and the (N, C, H, W) tensor layout."""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnkit.data.decode import MAX_PIXELS, open_image, to_array
from cnnkit.errors import DataError, ShapeError

__all__ = ["conform", "image_to_input", "images_to_tensor", "load_input", "read_input"]

# Modes Pillow's integer box reduction handles; others (P, CMYK, I;16) are reduced after conversion.
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "I", "F"}

# ITU-R 601 luma, the weights PIL uses for its "L" mode.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def images_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Keras-style images ``(N, H, W, C)`` or ``(N, H, W)`` -> float32 ``(N, C, H, W)``.

    For a C-contiguous NumPy array this is a view: the result is stored channels-last,
    which is the layout the engine computes in.
    """
    x = torch.as_tensor(images)
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x[..., None]
    if x.ndim != 4:
        raise ShapeError(f"images must be (N, H, W, C) or (N, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    elif x.dtype != torch.float32:
        x = x.to(torch.float32)
    return x.permute(0, 3, 1, 2)  # (N, C, H, W), channels-last memory


def conform(x: torch.Tensor, input_shape: Sequence[int | None]) -> torch.Tensor:
    """Convert ``(N, C, H, W)`` images to the model's ``input_shape`` ``(H, W, C)``.

    Grey becomes RGB by repetition and RGB becomes grey by luma; the size changes by
    antialiased bilinear resizing. Images already in shape pass through untouched.
    """
    height, width, channels = input_shape
    if x.shape[1] != channels:
        if x.shape[1] == 3 and channels == 1:
            x = torch.einsum("nchw,c->nhw", x, _LUMA.to(x))[:, None]
        elif x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            raise DataError(f"cannot convert {x.shape[1]}-channel images to the model's {channels} channels")
    size = (height or x.shape[2], width or x.shape[3])
    if tuple(x.shape[2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x


def image_to_input(img: Image.Image, input_shape: Sequence[int]) -> np.ndarray:
    """A decoded image as ``(H, W, C)`` float32 in [0, 1] at a model's ``input_shape`` ``(H, W, C)``.

    The one conversion from a file's pixels to a model's input, for training and prediction
    alike. A picture many times larger than the input is first box-averaged by an integer
    factor (cheap, and an exact average, so nothing aliases) and then resized like any
    other image by :func:`conform`.
    """
    height, width, channels = input_shape
    factor = min(img.width // (2 * width), img.height // (2 * height))
    if factor >= 2 and img.mode in _REDUCIBLE:
        img = img.reduce(factor)
    x = torch.from_numpy(to_array(img, channels)).permute(2, 0, 1)[None]  # (1, C, h, w)
    return conform(x, input_shape)[0].permute(1, 2, 0).contiguous().numpy()  # (H, W, C)


def read_input(
    source: str | os.PathLike | bytes,
    input_shape: Sequence[int],
    *,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
) -> tuple[np.ndarray, tuple[int, int]]:
    """Decode an image file (or its bytes) to a model's input, and say how big the image was.

    Returns ``(H, W, C)`` float32 in [0, 1] at ``input_shape`` and the image's own
    ``(width, height)`` (as shown, after EXIF rotation). A JPEG much larger than the input
    is decoded at reduced size (``draft``); the result is what training data goes through,
    so :func:`load_input`, ``cnnkit predict`` and ``cnnkit serve`` all call this. ``name`` is
    what error messages call a ``bytes`` source; raises :class:`~cnnkit.errors.ImageError`
    (:class:`~cnnkit.errors.ImageTooLargeError` over ``max_pixels``,
    :class:`~cnnkit.errors.UnsupportedImageError` for a non-image).
    """
    height, width, _ = input_shape
    decoded = open_image(source, max_pixels=max_pixels, name=name, draft=(2 * width, 2 * height))
    return image_to_input(decoded.image, input_shape), decoded.size


def load_input(
    source: str | os.PathLike | bytes, input_shape: Sequence[int], *, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode an image file (or its bytes) straight to a model's input: ``(H, W, C)`` float32 in [0, 1]."""
    return read_input(source, input_shape, max_pixels=max_pixels)[0]
