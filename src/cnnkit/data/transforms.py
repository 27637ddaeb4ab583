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
from PIL import Image

from cnnkit.data.decode import open_image, to_array
from cnnkit.data.inputs import (
    _REDUCIBLE,  # noqa: F401  (where callers have always found it)
    ACCEPTS,
    array_layout,
    fits,
    image_to_input,
    load_input,
    open_input,
)
from cnnkit.data.resize import conform
from cnnkit.errors import ShapeError

__all__ = ["ImageSource", "conform", "image_to_input", "images_to_tensor", "load_input", "open_input", "to_batch"]

# What to_batch takes (a list may hold any of the others).
ImageSource = str | os.PathLike | bytes | Image.Image | np.ndarray | torch.Tensor | Sequence["ImageSource"]


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


# -- to_batch: whatever a user holds -> (N, C, H, W) ------------------------------------
# (image_to_input, load_input, open_input and the rules for an array's axes: cnnkit.data.inputs, torch-free;
# conform: cnnkit.data.resize. All are importable from here, as they always were.)


def _from_array(array: np.ndarray, input_shape: Sequence[int | None] | None) -> torch.Tensor:
    if any(stride < 0 for stride in array.strides):  # a flipped view (x[..., ::-1]): torch cannot share it
        array = np.ascontiguousarray(array)
    layout = array_layout(array.shape, input_shape)
    if layout in ("chw", "nchw"):
        x = torch.as_tensor(array[None] if layout == "chw" else array)
        return x if x.dtype == torch.float32 else x.float()
    nhwc = {"hw": array[None, ..., None], "hwc": array[None], "nhw": array, "nhwc": array}[layout]
    return images_to_tensor(nhwc)  # a channels-last view where it can be: no copy


def _from_tensor(t: torch.Tensor) -> torch.Tensor:
    if t.ndim not in (3, 4):
        raise ShapeError(f"cannot read a tensor of shape {tuple(t.shape)} as images; give {ACCEPTS}")
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
    raise ShapeError(f"cannot read a {type(source).__name__!r} object as images; give {ACCEPTS}")


def _is_numbers(items: Sequence) -> bool:
    first: object = items
    while isinstance(first, (list, tuple)) and first:
        first = first[0]
    return isinstance(first, (int, float, np.number))


def _check(x: torch.Tensor, input_shape: Sequence[int | None], given: tuple[int, ...]) -> None:
    height, width, channels = input_shape
    if not fits(tuple(x.shape[1:]), (channels, height, width)):
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
