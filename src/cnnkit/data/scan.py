"""One pass over image files, decoding in parallel: what each file is, and its pixels at a model's input.

For every file: its size, content hash (SHA-256 of the bytes), format, mode and pixel
size as the file states them, a 64-bit difference hash of what it shows (dHash: near
duplicates differ in a few bits), and, when an input shape is given, the image itself
at that shape. The hash is always taken from the same 32x32 grey thumbnail, decoded the
same way, never from the model's input: duplicates and leaks do not depend on the size a
model trains at. A file that cannot be used gets the reason instead; nothing is raised, so
one bad file never stops a scan. Decoding runs in threads: Pillow's decoders, hashlib and
torch release the GIL, and threads start instantly where worker processes would each
import torch.
"""

from __future__ import annotations

import contextlib
import dataclasses
import hashlib
import os
from collections.abc import Callable, Mapping, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path

import numpy as np
from PIL import Image

from cnnkit.data.decode import ImageError, open_image, to_array
from cnnkit.data.inputs import box_reduced, image_to_input

__all__ = ["ANALYSIS_SHAPE", "FileRecord", "ScanResult", "default_workers", "dhash", "scan_files", "thumbnail"]

ANALYSIS_SHAPE = (32, 32, 1)  # what the perceptual hash is computed from, whatever the model's input
_HASH_DRAFT = (2 * ANALYSIS_SHAPE[1], 2 * ANALYSIS_SHAPE[0])  # how coarsely a JPEG may decode for the hash
_CHUNK = 32  # files a thread scans per task, at most


@dataclass(frozen=True)
class FileRecord:
    """What one file is, or why it cannot be used (``error``, with a one-word ``kind``)."""

    path: Path
    bytes: int = 0
    sha256: str = ""
    format: str = ""
    mode: str = ""
    width: int = 0
    height: int = 0
    dhash: int = 0
    error: str | None = None
    kind: str | None = None

    @property
    def ok(self) -> bool:
        return self.error is None


@dataclass(frozen=True)
class ScanResult:
    """Records in the order of the paths, and the images (``(N, H, W, C)``; zeros where a file is bad)."""

    records: list[FileRecord]
    images: np.ndarray | None

    @property
    def ok(self) -> np.ndarray:
        """(N,) bool: which files can be used."""
        return np.array([r.ok for r in self.records], dtype=bool)


def default_workers() -> int:
    """Decoding threads: one per core, at most 8."""
    return max(1, min(8, os.cpu_count() or 1))


def thumbnail(img: Image.Image) -> np.ndarray:
    """What the health check looks at: ``img`` as ``(32, 32)`` grey float32 in [0, 1] (:data:`ANALYSIS_SHAPE`).

    PIL's float bilinear resize, antialiased when it shrinks: what :func:`~cnnkit.data.resize.conform`
    computes for a model's input (within 1e-5 on digits and photos), without importing torch, so
    that ``cnnkit check-data`` never loads it.
    """
    height, width, _ = ANALYSIS_SHAPE
    grey = to_array(box_reduced(img, width, height), 1)[..., 0]  # (h, w)
    if grey.shape == (height, width):
        return grey
    return np.asarray(Image.fromarray(grey, "F").resize((width, height), Image.Resampling.BILINEAR))


def dhash(grey: np.ndarray) -> int:
    """Difference hash of an ``(H, W)`` grey image: 64 bits, one per left-right brightness step on a 9x8 grid."""
    small = np.asarray(Image.fromarray(np.ascontiguousarray(grey, np.float32)).resize((9, 8), Image.Resampling.BOX))
    bits = (small[:, 1:] > small[:, :-1]).ravel()  # (64,)
    return int.from_bytes(np.packbits(bits).tobytes(), "big")


Crop = tuple[float, float, float, float]  # (left, top, right, bottom) as fractions of the width and height


def _scan_one(path: Path, shape: tuple[int, int, int] | None, max_pixels: int | None, crop: Crop | None,
              known: Mapping[str, FileRecord]) -> tuple[FileRecord, np.ndarray | None]:  # fmt: skip
    """One file's record, and its image at the model's input ``shape`` ``(H, W, C)`` (None: the record alone)."""
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return FileRecord(path, error="no such file", kind="missing"), None
    except OSError as e:
        return FileRecord(path, error=f"cannot read ({e.strerror or e})", kind="unreadable"), None
    digest = hashlib.sha256(data).hexdigest()
    if digest in known:  # these bytes were decoded before: what they gave holds for this file too
        return dataclasses.replace(known[digest], path=path), None
    height, width, _ = shape or ANALYSIS_SHAPE
    draft = None if crop else (2 * width, 2 * height)
    try:
        kwargs = {"max_pixels": max_pixels} if max_pixels else {}
        decoded = open_image(data, name=str(path), draft=draft, **kwargs)
        img = _cropped(decoded.image, crop)
        x = None if shape is None else image_to_input(img, shape)  # (H, W, C)
        # The hash's own thumbnail: a JPEG decoded at another draft scale shows slightly other
        # pixels, enough to move a near duplicate across the threshold; decode it again at the
        # hash's scale (cheap: a coarse JPEG draft), anything else is the same image.
        if draft is not None and draft != _HASH_DRAFT and decoded.format == "JPEG":
            img = open_image(data, name=str(path), draft=_HASH_DRAFT, **kwargs).image
        grey = thumbnail(img)
    except ImageError as e:
        return FileRecord(path, len(data), digest, error=str(e).removeprefix(f"{path}: "), kind=e.kind), None
    w, h = decoded.size
    return FileRecord(path, len(data), digest, decoded.format, decoded.mode, w, h, dhash(grey)), x


def _cropped(img: Image.Image, crop: Crop | None) -> Image.Image:
    if crop is None:
        return img
    w, h = img.size
    return img.crop((round(crop[0] * w), round(crop[1] * h), round(crop[2] * w), round(crop[3] * h)))


def scan_files(
    paths: Sequence[Path],
    input_shape: Sequence[int] | None = None,
    *,
    workers: int | None = None,
    max_pixels: int | None = None,
    progress: bool = False,
    crop: Crop | None = None,
    known: Mapping[str, FileRecord] | None = None,
    sink: Callable[[FileRecord, np.ndarray], None] | None = None,
) -> ScanResult:
    """Decode every file once, in parallel; keep the images at ``input_shape`` ``(H, W, C)`` if it is given.

    ``crop`` cuts a box out of every image first, in fractions of its size (e.g. the face in LFW photos).
    ``sink(record, image)`` takes each decoded image instead of the result keeping it (the
    decoded-image cache writes it to disk); with a sink, ``known`` maps the SHA-256 of contents
    decoded before to their records, and such a file is only read and hashed, not decoded again.
    """
    shape = tuple(input_shape) if input_shape is not None else None
    kept = shape is not None and sink is None
    images = np.zeros((len(paths), *shape), np.float32) if kept else None
    known = known if sink is not None else None
    workers = workers or default_workers()
    # Files go to the threads in chunks: a small PNG takes ~0.1 ms, about what handing one file to a
    # thread and its result back costs; a few chunks per thread still share out a folder of big photos.
    size = max(1, min(_CHUNK, len(paths) // (4 * workers)))
    chunks = [paths[i : i + size] for i in range(0, len(paths), size)]

    def scan_chunk(chunk: Sequence[Path]) -> list[tuple[FileRecord, np.ndarray | None]]:
        return [_scan_one(Path(p), shape, max_pixels, crop, known or {}) for p in chunk]

    records: list[FileRecord] = []
    with ThreadPoolExecutor(max_workers=workers) as pool, _bar(progress, len(paths)) as bar:
        for scanned in pool.map(scan_chunk, chunks):
            for record, x in scanned:
                if x is not None and sink is not None:
                    sink(record, x)  # in this thread, in file order: the sink needs no lock
                elif images is not None and x is not None:
                    images[len(records)] = x
                records.append(record)
            if bar is not None:
                bar.advance(0, len(scanned))
    return ScanResult(records, images)


def _bar(enabled: bool, total: int):  # noqa: ANN202 (a rich Progress or a no-op context)
    if not enabled or total < 200:
        return contextlib.nullcontext()
    from rich.console import Console
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeRemainingColumn

    bar = Progress(TextColumn("reading images"), BarColumn(), MofNCompleteColumn(), TimeRemainingColumn(),
                   console=Console(stderr=True), transient=True)  # fmt: skip
    bar.add_task("scan", total=total)
    return bar
