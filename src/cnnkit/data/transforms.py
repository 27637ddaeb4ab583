"""Bring images to a model's input: channels, size, and the (N, C, H, W) tensor layout.

:func:`to_batch` is the one conversion of what a user holds (a file, its bytes, a PIL image,
an array, a tensor, a list of them) to a model's input batch; ``Model.predict``, the
predictors, ``cnnkit.explain``, ``cnnkit predict`` and the server all call it.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F
from PIL import Image

from cnnkit.data.decode import MAX_PIXELS, DecodedImage, open_image, to_array
from cnnkit.errors import DataError, ShapeError

__all__ = ["ImageSource", "conform", "image_to_input", "images_to_tensor", "load_input", "open_input", "to_batch"]

# What to_batch takes (a list may hold any of the others).
ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray | torch.Tensor | Sequence["ImageSource"]

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
    if img.size == (width, height):
        return to_array(img, channels)  # (H, W, C) already: conform() would return it untouched
    factor = min(img.width // (2 * width), img.height // (2 * height))
    if factor >= 2 and img.mode in _REDUCIBLE:
        img = img.reduce(factor)
    x = torch.from_numpy(to_array(img, channels)).permute(2, 0, 1)[None]  # (1, C, h, w)
    return conform(x, input_shape)[0].permute(1, 2, 0).contiguous().numpy()  # (H, W, C)


def open_input(
    source: str | os.PathLike | bytes,
    input_shape: Sequence[int],
    *,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
) -> DecodedImage:
    """Decode an image file (or its bytes) for a model input of ``input_shape`` ``(H, W, C)``.

    A JPEG much larger than the input is decoded at reduced size (``draft``);
    :func:`image_to_input` (or :func:`to_batch`) then makes the input, and ``.size`` says how
    big the image was (as shown, after EXIF rotation). ``name`` is what error messages call a
    ``bytes`` source; raises :class:`~cnnkit.errors.ImageError`
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

    What training data goes through; :func:`to_batch` gives the same pixels as ``(1, C, H, W)``.
    """
    return image_to_input(open_input(source, input_shape, max_pixels=max_pixels).image, input_shape)


# -- to_batch: whatever a user holds -> (N, C, H, W) ------------------------------------

_ACCEPTS = (
    "an image file path or its bytes, a PIL image, a NumPy array (H, W), (H, W, C), (N, H, W) or (N, H, W, C), "
    "a tensor (C, H, W) or (N, C, H, W), or a list of these"
)
_IMAGE_CHANNELS = {1, 3, 4}  # what the last axis of an (H, W, C) image can be (grey, RGB, RGBA)


def _fits(dims: Sequence[int], expected: Sequence[int | None]) -> bool:
    return len(dims) == len(expected) and all(e is None or d == e for d, e in zip(dims, expected))


def _array_layout(shape: tuple[int, ...], input_shape: Sequence[int | None] | None) -> str:
    """Which axes an array has: ``hw``, ``hwc``, ``nhw``, ``nhwc`` (Keras), or ``chw``, ``nchw``."""
    if len(shape) == 2:
        return "hw"
    if len(shape) not in (3, 4):
        raise ShapeError(f"cannot read an array of shape {shape} as images; give {_ACCEPTS}")
    height, width, channels = input_shape if input_shape is not None else (None, None, None)
    if (
        input_shape is not None
        and _fits(shape[-3:], (channels, height, width))
        and not _fits(shape[-3:], (height, width, channels))
    ):
        return "chw" if len(shape) == 3 else "nchw"  # already channels-first, as exports take it
    if len(shape) == 4:
        return "nhwc"
    if input_shape is not None and _fits(shape, (height, width, channels)):
        return "hwc"  # exactly one of the model's images
    if height is not None and width is not None and shape[1:] == (height, width):
        return "nhw"  # a stack of grey images of the model's size
    return "hwc" if shape[-1] in _IMAGE_CHANNELS | {channels} else "nhw"


def _from_array(array: np.ndarray, input_shape: Sequence[int | None] | None) -> torch.Tensor:
    if any(stride < 0 for stride in array.strides):  # a flipped view (x[..., ::-1]): torch cannot share it
        array = np.ascontiguousarray(array)
    layout = _array_layout(array.shape, input_shape)
    if layout in ("chw", "nchw"):
        x = torch.as_tensor(array[None] if layout == "chw" else array)
        return x if x.dtype == torch.float32 else x.float()
    nhwc = {"hw": array[None, ..., None], "hwc": array[None], "nhw": array, "nhwc": array}[layout]
    return images_to_tensor(nhwc)  # a channels-last view where it can be: no copy


def _from_tensor(t: torch.Tensor) -> torch.Tensor:
    if t.ndim not in (3, 4):
        raise ShapeError(f"cannot read a tensor of shape {tuple(t.shape)} as images; give {_ACCEPTS}")
    x = t.detach()
    x = x[None] if x.ndim == 3 else x  # (C, H, W) -> (1, C, H, W)
    return x if x.dtype == torch.float32 else x.float()


def _from_image(img: Image.Image, input_shape: Sequence[int | None] | None) -> torch.Tensor:
    if input_shape is None or input_shape[2] is None:
        raise ShapeError("an image file or PIL image needs the model's input shape (height, width, channels)")
    if all(n is not None for n in input_shape):
        return torch.from_numpy(image_to_input(img, input_shape)).permute(2, 0, 1)[None].contiguous()
    x = torch.from_numpy(to_array(img, input_shape[2])).permute(2, 0, 1)[None]  # (1, C, h, w): its own size
    return conform(x, input_shape).contiguous()


def _one(source: ImageSource, input_shape: Sequence[int | None] | None, pixel_max: float = 1.0) -> torch.Tensor:
    """One source (not a list) as ``(n, C, H, W)`` float32, in the layout it came in."""
    if isinstance(source, torch.Tensor):
        return _from_tensor(source)
    if isinstance(source, np.ndarray):
        return _from_array(source, input_shape)
    if isinstance(source, (str, os.PathLike, bytes)):
        if input_shape is None or any(n is None for n in input_shape):
            source = open_image(source).image
        else:
            source = open_input(source, input_shape).image
    if isinstance(source, Image.Image):
        x = _from_image(source, input_shape)  # pixels in [0, 1]
        return x if pixel_max == 1.0 else x * pixel_max
    raise ShapeError(f"cannot read a {type(source).__name__!r} object as images; give {_ACCEPTS}")


def _is_numbers(items: Sequence) -> bool:
    first: object = items
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    return isinstance(first, (int, float, np.number))


def _check(x: torch.Tensor, input_shape: Sequence[int | None], given: tuple[int, ...]) -> None:
    height, width, channels = input_shape
    if not _fits(tuple(x.shape[1:]), (channels, height, width)):
        raise ShapeError(
            f"the model takes (batch, {channels}, {height}, {width}) images, got {given}; give arrays as "
            f"(N, {height}, {width}, {channels}) (Keras' input shape (None, {height}, {width}, {channels})) "
            f"or tensors as (N, {channels}, {height}, {width})"
        )


def to_batch(
    source: ImageSource,
    input_shape: Sequence[int | None] | None = None,
    *,
    conform_arrays: bool = False,
    pixel_max: float = 1.0,
) -> torch.Tensor:
    """What a user holds, as a model's input batch: float32 ``(N, C, H, W)``.

    Args:
        source: an image file path (``str`` or ``PathLike``) or its bytes; a PIL image; a NumPy
            array ``(H, W)``, ``(H, W, C)``, ``(N, H, W)`` (grey) or ``(N, H, W, C)`` (Keras'
            layout); a tensor ``(C, H, W)`` or ``(N, C, H, W)``; or a list of any of these.
        input_shape: the model's ``(H, W, C)`` (``None`` entries: any size). Files and PIL
            images are decoded to it (the decoder and conversion training data goes through,
            pixels in [0, 1]); it also decides the ambiguous array shapes below.
        conform_arrays: bring arrays and tensors to ``input_shape`` too (grey <-> RGB, resized),
            as :mod:`cnnkit.explain` does. Without it an array or tensor of another shape is a
            :class:`~cnnkit.errors.ShapeError`, as in Keras' ``predict``.
        pixel_max: what files and PIL images are decoded to: pixels in [0, ``pixel_max``] (a
            Keras-style model that takes 0..255: :mod:`cnnkit.classifier`).

    Arrays and tensors keep their values (a ``uint8`` array stays 0..255, as Keras leaves it;
    only decoded images are scaled to [0, 1]); a C-contiguous NHWC array becomes a
    channels-last view, not a copy. How an array's axes are read:

    - NumPy arrays are channels-last, except one whose last three axes are exactly the
      model's ``(C, H, W)`` and not its ``(H, W, C)``: that one is already channels-first
      (what the predictors' exports take), e.g. ``(N, 1, 28, 28)`` for a ``(28, 28, 1)`` model.
    - A 3-D array is one ``(H, W, C)`` image, unless it is a stack of grey images: its last
      two axes are the model's ``(H, W)`` (and it is not exactly ``(H, W, C)``), or its last
      axis is not a channel count (1, 3, 4 or the model's). So ``(28, 28, 1)`` is one image
      and ``(100, 28, 28)`` a hundred for a ``(28, 28, 1)`` model.
    - Tensors are channels-first: ``(C, H, W)`` is one image.

    Raises:
        ShapeError: a shape it cannot place (saying what it accepts), or one that does not fit
            ``input_shape``; :class:`~cnnkit.errors.ImageError` for a file that cannot be read.
    """
    if isinstance(source, (list, tuple)):
        if _is_numbers(source):  # pixel values as nested lists: an array
            return to_batch(np.asarray(source), input_shape, conform_arrays=conform_arrays)
        parts = [to_batch(item, input_shape, conform_arrays=conform_arrays, pixel_max=pixel_max) for item in source]
        if not parts:
            if input_shape is None or any(n is None for n in input_shape):
                raise ShapeError("an empty list of images has no shape; give at least one image")
            height, width, channels = input_shape
            return torch.empty(0, channels, height, width)
        if len({tuple(p.shape[1:]) for p in parts}) > 1:
            shapes = ", ".join(sorted({str(tuple(p.shape[1:])) for p in parts}))
            raise ShapeError(f"the images in a list must share one (C, H, W) to be a batch, got {shapes}")
        return torch.cat([p.to(parts[0].device) for p in parts])
    x = _one(source, input_shape, pixel_max)
    if input_shape is None:
        return x
    if conform_arrays:
        return conform(x, input_shape)
    _check(x, input_shape, tuple(getattr(source, "shape", x.shape)))
    return x
