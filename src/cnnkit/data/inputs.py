"""From an image file to a model's input, without torch: decoding, channels, and which axes an array has.

What :mod:`cnnkit.data.transforms` builds on, split out so that ``cnnkit predict`` can decode a
folder and run an ONNX export without paying torch's start-up (seconds): an image already at
the model's size (the common case: a folder predicted by a model trained on such images) never
needs torch; one of another size is resized by :func:`cnnkit.data.resize.conform`, which
imports torch then.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
from PIL import Image

from cnnkit.data.decode import MAX_PIXELS, DecodedImage, open_image, to_array
from cnnkit.errors import ShapeError

__all__ = ["array_layout", "box_reduced", "image_to_input", "load_input", "open_input"]

# Modes Pillow's integer box reduction handles; others (P, CMYK, I;16) are reduced after conversion.
_REDUCIBLE = {"L", "LA", "RGB", "RGBA", "I", "F"}

ACCEPTS = (
    "an image file path or its bytes, a PIL image, a NumPy array (H, W), (H, W, C), (N, H, W) or (N, H, W, C), "
    "a tensor (C, H, W) or (N, C, H, W), or a list of these"
)
_IMAGE_CHANNELS = {1, 3, 4}  # what the last axis of an (H, W, C) image can be (grey, RGB, RGBA)


def image_to_input(img: Image.Image, input_shape: Sequence[int]) -> np.ndarray:
    """A decoded image as ``(H, W, C)`` float32 in [0, 1] at a model's ``input_shape`` ``(H, W, C)``.

    The one conversion from a file's pixels to a model's input, for training and prediction
    alike. A picture many times larger than the input is first box-averaged by an integer
    factor (cheap, and an exact average, so nothing aliases) and then resized like any
    other image by :func:`~cnnkit.data.resize.conform`.
    """
    height, width, channels = input_shape
    if img.size == (width, height):
        return to_array(img, channels)  # (H, W, C) already: conform() would return it untouched
    import torch  # only for an image that needs resizing: the antialiased resize is torch's

    from cnnkit.data.resize import conform

    img = box_reduced(img, width, height)
    x = torch.from_numpy(to_array(img, channels)).permute(2, 0, 1)[None]  # (1, C, h, w)
    return conform(x, input_shape)[0].permute(1, 2, 0).contiguous().numpy()  # (H, W, C)


def box_reduced(img: Image.Image, width: int, height: int) -> Image.Image:
    """``img`` box-averaged by the largest integer factor that keeps it at least twice ``width`` x ``height``
    (itself when that factor is below 2): the cheap, exact first step of shrinking a large picture."""
    factor = min(img.width // (2 * width), img.height // (2 * height))
    return img.reduce(factor) if factor >= 2 and img.mode in _REDUCIBLE else img


def open_input(
    source: str | os.PathLike | bytes,
    input_shape: Sequence[int],
    *,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
) -> DecodedImage:
    """Decode an image file (or its bytes) for a model input of ``input_shape`` ``(H, W, C)``.

    A JPEG much larger than the input is decoded at reduced size (``draft``);
    :func:`image_to_input` (or :func:`~cnnkit.data.transforms.to_batch`) then makes the input, and
    ``.size`` says how big the image was (as shown, after EXIF rotation). ``name`` is what error
    messages call a ``bytes`` source; raises :class:`~cnnkit.errors.ImageError`
    (:class:`~cnnkit.errors.ImageTooLargeError` over ``max_pixels``,
    :class:`~cnnkit.errors.UnsupportedImageError` for a non-image).
    """
    height, width, _ = input_shape
    draft = (2 * width, 2 * height) if height and width else None
    return open_image(source, max_pixels=max_pixels, name=name, draft=draft)


def load_input(
    source: str | os.PathLike | bytes, input_shape: Sequence[int], *, max_pixels: int = MAX_PIXELS
) -> np.ndarray:
    """Decode an image file (or its bytes) straight to a model's input: ``(H, W, C)`` float32 in [0, 1].

    What training data goes through; :func:`~cnnkit.data.transforms.to_batch` gives the same
    pixels as ``(1, C, H, W)``.
    """
    return image_to_input(open_input(source, input_shape, max_pixels=max_pixels).image, input_shape)


def fits(dims: Sequence[int], expected: Sequence[int | None]) -> bool:
    """Whether ``dims`` are ``expected`` (``None``: any size)."""
    return len(dims) == len(expected) and all(e is None or d == e for d, e in zip(dims, expected))


def array_layout(shape: tuple[int, ...], input_shape: Sequence[int | None] | None) -> str:
    """Which axes an array has: ``hw``, ``hwc``, ``nhw``, ``nhwc`` (Keras), or ``chw``, ``nchw``.

    The rules are :func:`~cnnkit.data.transforms.to_batch`'s (its docstring says them in words).
    """
    if len(shape) == 2:
        return "hw"
    if len(shape) not in (3, 4):
        raise ShapeError(f"cannot read an array of shape {shape} as images; give {ACCEPTS}")
    height, width, channels = input_shape if input_shape is not None else (None, None, None)
    if (
        input_shape is not None
        and fits(shape[-3:], (channels, height, width))
        and not fits(shape[-3:], (height, width, channels))
    ):
        return "chw" if len(shape) == 3 else "nchw"  # already channels-first, as exports take it
    if len(shape) == 4:
        return "nhwc"
    if input_shape is not None and fits(shape, (height, width, channels)):
        return "hwc"  # exactly one of the model's images
    if height is not None and width is not None and shape[1:] == (height, width):
        return "nhw"  # a stack of grey images of the model's size
    return "hwc" if shape[-1] in _IMAGE_CHANNELS | {channels} else "nhw"
