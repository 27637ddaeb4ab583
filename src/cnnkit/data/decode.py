"""The one path from an image file to pixels: every file cnnkit reads goes through here.

Decoding is defensive: only an allow-list of formats is parsed (PNG, JPEG, BMP, GIF,
TIFF, WebP, PPM/PGM), the pixel count is checked before any pixel is decoded (so a
decompression bomb costs nothing), truncated or corrupt files are a :class:`DataError`,
EXIF orientation is applied, animated images give their first frame, and every PIL mode
(1, L, LA, P, RGB, RGBA, CMYK, I;16, I, F) is converted the same way: transparent
pixels are composited over black, 16-bit images keep their full range.
"""

from __future__ import annotations

import io
import os
import warnings
from dataclasses import dataclass

import numpy as np
from PIL import Image, ImageOps, UnidentifiedImageError

from cnnkit.errors import DataError, ImageError, ImageTooLargeError, UnsupportedImageError

__all__ = [
    "ALLOWED_FORMATS",
    "IMAGE_EXTENSIONS",
    "MAX_PIXELS",
    "DecodedImage",
    "ImageError",
    "decode_image",
    "is_image_path",
    "load_image",
    "open_image",
    "to_array",
]

MAX_PIXELS = 40_000_000  # 40 MP: larger than any camera photo a user is likely to drop in
IMAGE_EXTENSIONS = (".png", ".jpg", ".jpeg", ".bmp", ".gif", ".tif", ".tiff", ".webp", ".ppm", ".pgm", ".pbm", ".pnm")
# Pillow's names for the formats above (its JPEG opener also reads the multi-picture JPEGs, MPO,
# that many phones write). Nothing else is ever parsed: Pillow's rarer plugins (EPS, PSD, ICNS,
# ...) are more attack surface than use.
ALLOWED_FORMATS = ("PNG", "JPEG", "BMP", "GIF", "TIFF", "WEBP", "PPM")
_SIXTEEN_BIT = {"I;16", "I;16L", "I;16B", "I;16N", "I"}
_READ_WHOLE = 16 << 20  # files up to 16 MiB are read in one call; larger ones stream from disk


@dataclass(frozen=True)
class DecodedImage:
    """A decoded image and what its file said about itself before any conversion."""

    image: Image.Image  # fully decoded, first frame, EXIF rotation applied
    format: str  # PNG, JPEG, ...
    mode: str  # the file's own mode: L, RGB, P, I;16, CMYK, ...
    size: tuple[int, int]  # (width, height) as shown, i.e. after the EXIF rotation, at full resolution


def open_image(
    source: str | os.PathLike | bytes,
    *,
    max_pixels: int = MAX_PIXELS,
    name: str | None = None,
    draft: tuple[int, int] | None = None,
) -> DecodedImage:
    """Open and fully decode an image from a path or bytes, with its EXIF rotation applied.

    ``draft=(w, h)`` lets a JPEG decoder skip detail finer than that size (a 12 MP photo
    decodes several times faster when only a small input is needed); other formats
    ignore it. ``name`` is what error messages call a ``bytes`` source. Raises
    :class:`ImageError` for a missing, unreadable, empty, non-image, truncated or oversized file.
    """
    name = name or ("image" if isinstance(source, bytes) else str(source))
    try:
        fp = io.BytesIO(source) if isinstance(source, bytes) else _read_small(source)
    except FileNotFoundError:
        raise ImageError(f"{name}: no such file", "missing") from None
    except (IsADirectoryError, PermissionError) as e:
        raise ImageError(f"{name}: cannot read ({e.strerror})", "unreadable") from None
    with fp, warnings.catch_warnings():
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            if not fp.read(1):
                raise ImageError(f"{name}: empty file (0 bytes)", "empty")
            fp.seek(0)
            img = Image.open(fp, formats=ALLOWED_FORMATS)
            (width, height), kind, mode = img.size, img.format or "?", img.mode
            # Checked from the header alone, before anything decodes pixels (for a PNG even
            # getexif() does: its EXIF chunk may follow the pixel data).
            if width * height > max_pixels:
                raise ImageTooLargeError(
                    f"{name}: {width}x{height} pixels is more than the limit of {max_pixels:,}; resize it first"
                )
            img.seek(0)  # first frame of a GIF / multi-page TIFF
            if draft is not None and kind in ("JPEG", "MPO"):
                img.draft(mode, draft)
            img.load()
            orientation = img.getexif().get(0x0112)
            turned = orientation in (5, 6, 7, 8)  # EXIF orientations that swap width and height
            header = (kind, mode, (height, width) if turned else (width, height))
            if orientation in (2, 3, 4, 5, 6, 7, 8):  # 1 or none: already upright, no copy needed
                img = ImageOps.exif_transpose(img)
        except ImageError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning):
            raise ImageTooLargeError(
                f"{name}: more than the limit of {max_pixels:,} pixels (a decompression bomb?); resize it first"
            ) from None
        except UnidentifiedImageError:
            raise UnsupportedImageError(
                f"{name}: not an image cnnkit can read (PNG, JPEG, BMP, GIF, TIFF, WebP, PPM)"
            ) from None
        except (OSError, SyntaxError, ValueError, EOFError) as e:
            raise ImageError(f"{name}: truncated or corrupt image ({e})", "truncated") from None
    return DecodedImage(img, *header)


def _read_small(path: str | os.PathLike) -> io.BufferedReader | io.BytesIO:
    """The file's bytes in memory when it is small (one read instead of the ~10 small ones Pillow's
    PNG parser makes: a third of the time of a folder of small PNGs), else the open file."""
    fp = open(path, "rb")  # noqa: SIM115
    try:
        if os.fstat(fp.fileno()).st_size > _READ_WHOLE:
            return fp
        with fp:
            return io.BytesIO(fp.read())
    except OSError:
        fp.close()
        raise


def decode_image(source: str | os.PathLike | bytes, *, max_pixels: int = MAX_PIXELS) -> Image.Image:
    """Open and fully decode an image from a path or bytes, with its EXIF rotation applied.

    Raises :class:`DataError` for a missing, unreadable, truncated or oversized image.
    """
    return open_image(source, max_pixels=max_pixels).image


def _without_alpha(img: Image.Image) -> Image.Image:
    """Composite transparent pixels over black, the background of the built-in data sets."""
    has_alpha = img.mode in ("RGBA", "LA", "PA", "La", "RGBa") or (img.mode == "P" and "transparency" in img.info)
    if not has_alpha:
        return img
    rgba = img.convert("RGBA")
    black = Image.new("RGBA", rgba.size, (0, 0, 0, 255))
    return Image.alpha_composite(black, rgba).convert("RGB")


def to_array(img: Image.Image, channels: int) -> np.ndarray:
    """A decoded image as ``(H, W, channels)`` float32 in [0, 1]; ``channels`` is 1 or 3."""
    if channels not in (1, 3):
        raise DataError(f"images can be converted to 1 or 3 channels, not {channels}")
    if img.mode in _SIXTEEN_BIT or img.mode == "F":
        scale = 1.0 if img.mode == "F" else 65535.0
        grey = np.clip(np.asarray(img, dtype=np.float32) / scale, 0.0, 1.0)[..., None]  # (H, W, 1)
        return grey if channels == 1 else np.repeat(grey, 3, axis=2)
    img = _without_alpha(img)
    img = img.convert("L" if channels == 1 else "RGB")  # PIL's ITU-R 601 luma for grey
    array = np.asarray(img, dtype=np.float32) / 255.0
    return array[..., None] if channels == 1 else array


def load_image(source: str | os.PathLike | bytes, channels: int, *, max_pixels: int = MAX_PIXELS) -> np.ndarray:
    """Decode ``source`` to ``(H, W, channels)`` float32 in [0, 1] at its own size."""
    return to_array(decode_image(source, max_pixels=max_pixels), channels)


def is_image_path(path: str | os.PathLike) -> bool:
    """Whether a file name has one of the image extensions cnnkit reads."""
    return os.path.splitext(path)[1].lower() in IMAGE_EXTENSIONS  # Path(path).suffix, without making a Path
