"""``keras.utils``: to_categorical, image_dataset_from_directory, load_img, img_to_array, set_random_seed.

Images are read by cnnkit's one decoder (:mod:`cnnkit.data.decode`: its pixel limit, EXIF
rotation, alpha over black), folders by its folder index. Keras' other utilities are one clear
error naming what to use instead.
"""

from __future__ import annotations

import os
from typing import Any

import numpy as np
from PIL import Image

from cnnkit._keras_names import missing
from cnnkit.data.decode import _SIXTEEN_BIT, _without_alpha, decode_image
from cnnkit.data.directory import ImageDirectoryDataset, image_dataset_from_directory
from cnnkit.errors import ConfigError, DataError
from cnnkit.runtime import seed_everything

__all__ = [
    "ImageDirectoryDataset",
    "array_to_img",
    "image_dataset_from_directory",
    "img_to_array",
    "load_img",
    "normalize",
    "set_random_seed",
    "to_categorical",
]

_RESAMPLE = {"nearest": Image.Resampling.NEAREST, "bilinear": Image.Resampling.BILINEAR,
             "bicubic": Image.Resampling.BICUBIC, "lanczos": Image.Resampling.LANCZOS,
             "box": Image.Resampling.BOX, "hamming": Image.Resampling.HAMMING}  # fmt: skip


def load_img(path: str | os.PathLike | bytes, color_mode: str = "rgb", target_size: tuple[int, int] | None = None,
             interpolation: str = "nearest", keep_aspect_ratio: bool = False) -> Image.Image:  # fmt: skip
    """A PIL image, as Keras' ``load_img``: ``color_mode`` rgb, grayscale or rgba; ``target_size`` (height, width).

    Decoded by cnnkit's decoder (so a decompression bomb or a truncated file is one clear error);
    resized as Keras resizes here (``interpolation``, default nearest).
    """
    if color_mode not in ("rgb", "grayscale", "rgba") or interpolation not in _RESAMPLE:
        raise ConfigError(f"load_img: color_mode rgb, grayscale or rgba; interpolation one of {', '.join(_RESAMPLE)}")
    img = decode_image(path)
    if color_mode == "rgba":
        img = img.convert("RGBA")
    elif img.mode in _SIXTEEN_BIT:  # 16-bit grey: to 8 bits, as Keras' PIL conversion would
        img = Image.fromarray((np.asarray(img, np.float32) / 257).round().clip(0, 255).astype(np.uint8))
    if color_mode != "rgba":
        img = _without_alpha(img).convert("L" if color_mode == "grayscale" else "RGB")
    if target_size is not None:
        height, width = target_size
        if keep_aspect_ratio:  # the centred crop of the target's aspect ratio, then the resize (Keras')
            w, h = img.size
            crop_w, crop_h = min(w, round(h * width / height)), min(h, round(w * height / width))
            left, top = (w - crop_w) // 2, (h - crop_h) // 2
            img = img.crop((left, top, left + crop_w, top + crop_h))
        if img.size != (width, height):
            img = img.resize((width, height), _RESAMPLE[interpolation])
    return img


def img_to_array(img: Image.Image, data_format: str | None = None, dtype: Any = None) -> np.ndarray:
    """A PIL image as ``(H, W, C)`` (float32, 0..255 by default), as Keras' ``img_to_array``."""
    if data_format not in (None, "channels_last"):
        raise ConfigError("cnnkit's arrays are channels-last (H, W, C)")
    array = np.asarray(img, dtype=dtype or np.float32)
    return array[..., None] if array.ndim == 2 else array


def array_to_img(x: Any, data_format: str | None = None, scale: bool = True, dtype: Any = None) -> Image.Image:
    """``(H, W, C)`` -> a PIL image; ``scale`` stretches the values to 0..255, as Keras' ``array_to_img``."""
    del dtype
    if data_format not in (None, "channels_last"):
        raise ConfigError("cnnkit's arrays are channels-last (H, W, C)")
    x = np.asarray(x, dtype=np.float32)
    if x.ndim != 3 or x.shape[2] not in (1, 3, 4):
        raise DataError(f"array_to_img takes an (H, W, 1|3|4) array, got {x.shape}")
    if scale:
        x = x - x.min()
        x = x / x.max() * 255 if x.max() > 0 else x
    x = x.clip(0, 255).astype(np.uint8)
    return Image.fromarray(x[..., 0] if x.shape[2] == 1 else x)


def to_categorical(x: Any, num_classes: int | None = None) -> np.ndarray:
    """Class indices -> one-hot float32 rows, as Keras: ``(N,)`` or ``(N, 1)`` -> ``(N, num_classes)``."""
    y = np.asarray(x)
    if y.ndim > 1 and y.shape[-1] == 1:  # Keras drops a trailing axis of 1 (CIFAR's (N, 1) labels)
        y = y.reshape(y.shape[:-1])
    if y.size and (not np.issubdtype(y.dtype, np.integer) and not np.array_equal(y, np.round(y))):
        raise DataError("to_categorical takes whole-number class indices")
    y = y.astype(np.int64)
    classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise DataError(f"to_categorical: class indices must be in 0..{classes - 1}, got {y.min()}..{y.max()}")
    out = np.zeros((*y.shape, classes), dtype=np.float32)
    np.put_along_axis(out, y[..., None], 1.0, axis=-1)
    return out


def normalize(x: Any, axis: int = -1, order: int = 2) -> np.ndarray:
    """Keras' ``normalize``: ``x`` divided by its ``order``-norm along ``axis`` (a zero vector stays zero)."""
    x = np.asarray(x, dtype=np.float32)
    norm = np.linalg.norm(x, ord=order, axis=axis, keepdims=True)
    return x / np.where(norm == 0, 1, norm)


def set_random_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators, as Keras' set_random_seed seeds its backends."""
    seed_everything(int(seed))


def __getattr__(name: str) -> Any:
    raise missing(__name__, name)
