"""Thumbnails: each image decoded once (cnnkit's decoder), downscaled, and cached in the project's state.

The cache key is the file's project path, size and modification time, so a file replaced by hand
gets a new thumbnail and a moved one (relabelled, excluded) is made again at most once. A JPEG is
decoded at a coarse draft scale, which is most of the speed on camera photos.
"""

from __future__ import annotations

import hashlib
import io
from pathlib import Path

from PIL import Image

from cnnkit._io import atomic_write_bytes
from cnnkit.data.decode import open_image

__all__ = ["THUMB_SIZE", "thumbnail"]

THUMB_SIZE = 96  # pixels on the longer side


def _key(path: Path, relative: str) -> str:
    stat = path.stat()
    return hashlib.sha1(f"{relative}\0{stat.st_size}\0{stat.st_mtime_ns}".encode()).hexdigest()


def thumbnail(path: Path, relative: str, cache: Path, max_pixels: int) -> bytes:
    """The JPEG thumbnail of ``path`` (``relative``: its project path), made once and kept under ``cache``."""
    key = _key(path, relative)
    cached = cache / key[:2] / f"{key}.jpg"
    try:
        return cached.read_bytes()
    except FileNotFoundError:
        pass
    image = open_image(path, max_pixels=max_pixels, draft=(2 * THUMB_SIZE, 2 * THUMB_SIZE)).image
    image = image.convert("RGB") if image.mode != "RGB" else image
    image.thumbnail((THUMB_SIZE, THUMB_SIZE), Image.Resampling.LANCZOS if max(image.size) < 1024 else Image.BOX)
    out = io.BytesIO()
    image.save(out, format="JPEG", quality=85)
    data = out.getvalue()
    atomic_write_bytes(cached, data)
    return data
