"""The decoded-image cache: a folder's images decoded once at the training size, on disk, read through a memory map.

``cnnkit train --cache disk`` (and ``auto`` for a folder too large for memory) keeps every
usable image of a folder or CSV as ``uint8`` rows of ``(H, W, 3)`` at the training size in
one file, so that each epoch gathers bytes instead of decoding files. It lives in the data
cache (``--data-dir``, else ``$CNNKIT_DATA``, else ``~/.cache/cnnkit``) under
``decoded/<name>-<size>px-<key>/``, the key a hash of the data's resolved path and the size;
nothing is ever written next to the user's images. The folder holds:

- ``images-<token>.u8``: the rows, back to back (a raw array: ``np.memmap`` reads it);
- ``index.json``: the shape, each content's row by its SHA-256, and what the health check's
  scan recorded about each content (format, size, hash of what it shows, or why it is bad),
  with a checksum of itself. It is written last and atomically: it is the completion marker.

The rows are addressed by content, the same SHA-256 that ``split.json`` records: a changed
file is a new content and decodes again, a new file is appended, a removed one drops out of
the index (its row is reclaimed when dead rows pass a quarter of the file, by copying the
live ones to a new file). A second run reads and hashes every file, as the health check
does, and decodes none that the cache knows. Every process that opens the data on a
machine (all of torchrun's) brings the cache up to date under one file lock: the first
builds, the others wait and then find everything known. A cache whose index is not valid
or whose file is shorter than the index says is rebuilt, with one warning line.
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import mmap
import os
import re
import shutil
import sys
import uuid
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np
from filelock import FileLock

from cnnkit._io import atomic_write_json
from cnnkit.data.downloads import data_root
from cnnkit.data.scan import FileRecord, ScanResult, scan_files
from cnnkit.errors import DataError

if TYPE_CHECKING:  # torch only where images become tensors: `cnnkit train --help` lists CACHE_MODES without it
    import torch

__all__ = ["CACHE_MODES", "CacheSpaceError", "DecodedImages", "MappedImages", "cache_folder", "cached_scan"]

CACHE_MODES = ("auto", "ram", "disk", "none")  # --cache: where decoded training images live between epochs
_FORMAT, _VERSION = "cnnkit-decoded-images", 1
_INDEX = "index.json"
_DEAD_SHARE = 0.25  # compact the file when more than this share of its rows belongs to no file any more
_RELEASE_BYTES = 64 * 2**20  # a reader gives its mapped pages back after mapping about this much (RSS stays bounded)
_FAULT_AROUND = 64 * 2**10  # what Linux maps around each page a read faults in (fault_around_bytes)
_RECORD_FIELDS = ("bytes", "format", "mode", "width", "height", "dhash", "error", "kind")


class CacheSpaceError(DataError):
    """The disk holding the decoded-image cache has too little free space for it."""


def cache_folder(data: str | os.PathLike, size: int, data_dir: str | os.PathLike | None = None) -> Path:
    """Where the decoded images of ``data`` (a folder or CSV) at ``size`` x ``size`` are kept."""
    source = str(Path(data).expanduser().resolve())
    key = hashlib.sha256(f"{source}\0{size}".encode()).hexdigest()[:16]
    name = re.sub(r"[^\w.-]", "_", Path(source).stem)[:40] or "data"
    return data_root(data_dir) / "decoded" / f"{name}-{size}px-{key}"


@dataclasses.dataclass
class _Index:
    """What ``index.json`` says: the rows file, each live content's row, and the scan's record of each content."""

    shape: tuple[int, int, int]
    file: str
    used: int  # rows written to the file, live or dead
    rows: dict[str, int]  # SHA-256 -> row
    records: dict[str, FileRecord]  # SHA-256 -> what the scan found (bad contents too)

    @property
    def row_bytes(self) -> int:
        return int(np.prod(self.shape))

    def to_json(self) -> dict[str, Any]:
        records = {sha: [getattr(r, f) for f in _RECORD_FIELDS] for sha, r in self.records.items()}
        body = {"format": _FORMAT, "version": _VERSION, "shape": list(self.shape), "file": self.file,
                "used": self.used, "bytes": self.used * self.row_bytes, "rows": self.rows,
                "records": records}  # fmt: skip
        return {**body, "checksum": _checksum(body)}


def _checksum(body: dict[str, Any]) -> str:
    return hashlib.sha256(json.dumps(body, sort_keys=True).encode()).hexdigest()


def _read_index(folder: Path, shape: tuple[int, int, int]) -> _Index | None:
    """The cache's index if it is complete and whole; None if there is none; a damaged one is warned about."""
    path = folder / _INDEX
    if not path.exists():
        return None
    try:
        body = json.loads(path.read_text())
        checksum = body.pop("checksum", None)
        if checksum != _checksum(body) or body.get("format") != _FORMAT:
            raise ValueError("its index does not match its checksum")
        if body["version"] != _VERSION or tuple(body["shape"]) != shape:
            return None  # another version or shape: rebuilt without a fuss
        index = _Index(shape, body["file"], int(body["used"]), {k: int(v) for k, v in body["rows"].items()},
                       {sha: FileRecord(Path(), sha256=sha, **dict(zip(_RECORD_FIELDS, values)))
                        for sha, values in body["records"].items()})  # fmt: skip
        have, want = _size(folder / index.file), index.used * index.row_bytes
        if have < want:
            raise ValueError(f"{index.file} holds {have:,} of its {want:,} bytes")
        return index
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as e:  # JSON errors are ValueErrors
        print(f"warning: the decoded-image cache {folder} is damaged ({e}); decoding the images again",
              file=sys.stderr, flush=True)  # fmt: skip
        return None


def _size(path: Path) -> int:
    try:
        return path.stat().st_size
    except FileNotFoundError:
        return -1


class _Writer:
    """Appends newly decoded contents to the rows file, then writes the index that makes them visible."""

    def __init__(self, folder: Path, shape: tuple[int, int, int], old: _Index | None) -> None:
        self.folder, self.old = folder, old
        self.index = (dataclasses.replace(old, rows=dict(old.rows)) if old is not None
                      else _Index(shape, f"images-{uuid.uuid4().hex[:12]}.u8", 0, {}, {}))  # fmt: skip
        self.fd: int | None = None

    def add(self, record: FileRecord, x: np.ndarray) -> None:
        """One decoded image ``(H, W, 3)`` float32 in [0, 1], stored as uint8 at the file's end."""
        if record.sha256 in self.index.rows:  # a copy of a file decoded in this scan
            return
        if self.fd is None:
            self.fd = os.open(self.folder / self.index.file, os.O_RDWR | os.O_CREAT, 0o666)
        pixels = np.rint(np.clip(x, 0.0, 1.0) * 255.0).astype(np.uint8)  # (H, W, 3)
        os.pwrite(self.fd, pixels.tobytes(), self.index.used * self.index.row_bytes)
        self.index.rows[record.sha256] = self.index.used
        self.index.used += 1

    def finish(self, records: Sequence[FileRecord]) -> _Index:
        """Keep the contents of ``records`` (what the scan found now), compact if need be, and publish the index."""
        index = self.index
        live = {r.sha256 for r in records if r.ok}
        index.rows = {sha: row for sha, row in index.rows.items() if sha in live}
        index.records = {r.sha256: dataclasses.replace(r, path=Path()) for r in records if r.sha256}
        if index.used - len(index.rows) > _DEAD_SHARE * index.used:
            index = self._compacted(index)
        if self.fd is not None:
            os.fsync(self.fd)  # the rows are on disk before the index that points at them
            os.close(self.fd)
        old = self.old
        if old is None or (index.file, index.used, index.rows, index.records) != (old.file, old.used, old.rows,
                                                                                  old.records):  # fmt: skip
            atomic_write_json(self.folder / _INDEX, index.to_json())
        for stale in self.folder.glob("images-*.u8"):  # a compacted file, a damaged one, a crashed build's
            if stale.name != index.file:
                stale.unlink(missing_ok=True)  # a process still reading it keeps its mapping (POSIX)
        return index

    def _compacted(self, index: _Index) -> _Index:
        """The live rows copied, in row order, to a new file: a removed file's bytes are reclaimed."""
        new = _Index(index.shape, f"images-{uuid.uuid4().hex[:12]}.u8", 0, {}, index.records)
        if self.fd is not None:
            os.fsync(self.fd)
        source, _ = _map(self.folder / index.file, index)
        order = sorted(index.rows.items(), key=lambda item: item[1])
        with open(self.folder / new.file, "wb") as f:
            for start in range(0, len(order), 1024):
                chunk = order[start : start + 1024]
                f.write(source[[row for _, row in chunk]].tobytes())
                new.rows.update((sha, new.used + i) for i, (sha, _) in enumerate(chunk))
                new.used += len(chunk)
            f.flush()
            os.fsync(f.fileno())
        if self.fd is not None:
            os.close(self.fd)
        self.fd = None
        return new


def _map(path: Path, index: _Index) -> tuple[np.ndarray, mmap.mmap | None]:
    """The rows file as a read-only ``(used, H, W, 3)`` uint8 array over a memory map (nothing is read yet)."""
    if index.used == 0:
        return np.zeros((0, *index.shape), np.uint8), None
    with open(path, "rb") as f:
        mapped = mmap.mmap(f.fileno(), index.used * index.row_bytes, access=mmap.ACCESS_READ)
    return np.frombuffer(mapped, np.uint8).reshape(index.used, *index.shape), mapped


class DecodedImages:
    """A complete decoded-image cache, read-only: ``(H, W, 3)`` uint8 rows by content hash, memory-mapped.

    :meth:`gather` copies rows out; once it may have mapped ``_RELEASE_BYTES`` (a random read
    of a small row maps the 64 KiB around it) it tells the kernel this process is done with
    those pages (``MADV_DONTNEED``): they stay in the page cache, shared with every process
    reading the file, but leave this process's resident set.
    """

    def __init__(self, folder: Path, index: _Index) -> None:
        self.folder, self.shape = folder, index.shape
        self._row_of = index.rows
        self._images, self._mapped = _map(folder / index.file, index)
        self._since_release = 0

    def __len__(self) -> int:
        return len(self._row_of)

    def rows(self, sha256: Sequence[str]) -> np.ndarray:
        """(N,) int64: the rows of these contents (each must be in the cache)."""
        return np.array([self._row_of[s] for s in sha256], dtype=np.int64)

    def gather(self, rows: np.ndarray) -> np.ndarray:
        """``(len(rows), H, W, 3)`` uint8: a copy of these rows, in this order."""
        out = self._images[np.asarray(rows, dtype=np.int64)]
        self._since_release += len(out) * max(out[0].nbytes if len(out) else 0, _FAULT_AROUND)
        if self._since_release >= _RELEASE_BYTES:
            self.release()
        return out

    def release(self) -> None:
        """Drop the mapped pages from this process's resident set (they stay cached for the next read)."""
        self._since_release = 0
        if self._mapped is not None and hasattr(mmap, "MADV_DONTNEED"):
            self._mapped.madvise(mmap.MADV_DONTNEED)


def cached_scan(paths: Sequence[Path], size: int, folder: Path, *, workers: int | None = None,
                progress: bool = False) -> tuple[ScanResult, DecodedImages]:  # fmt: skip
    """The health check's scan of ``paths``, with every usable image in the cache at ``folder`` at ``size``.

    Every file is read and hashed; only contents the cache does not hold yet are decoded
    (at ``(size, size, 3)``) and appended. Raises :class:`CacheSpaceError` when the disk
    cannot hold what may have to be added.
    """
    shape = (size, size, 3)
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise DataError(f"cannot create the decoded-image cache {folder} ({e.strerror}): give --data-dir "
                        f"a writable folder, or --cache none") from None  # fmt: skip
    with FileLock(str(folder / "lock")):  # one builder per machine; the others wait, then find it built
        old = _read_index(folder, shape)
        needed = (len(paths) - (len(old.rows) if old else 0)) * int(np.prod(shape))
        free = shutil.disk_usage(folder).free
        if needed > free:
            raise CacheSpaceError(f"the decoded-image cache in {folder} may need {needed / 2**30:.1f} GiB and "
                                  f"{free / 2**30:.1f} GiB are free: free some space, give --data-dir on a larger "
                                  f"disk, or use --cache none")  # fmt: skip
        writer = _Writer(folder, shape, old)
        scan = scan_files(paths, shape, workers=workers, progress=progress,
                          known=old.records if old else None, sink=writer.add)  # fmt: skip
        return scan, DecodedImages(folder, writer.finish(scan.records))


class MappedImages:
    """Training images in the decoded-image cache, indexable like an ``(N, C, H, W)`` float32 tensor in [0, 1].

    ``x[idx]`` reads only those rows (uint8, scaled to [0, 1] on the way out), so the engine's
    :class:`~cnnkit.train.loop.TensorBatches` batches it as it batches a resident tensor:
    the same data order, batch for batch, with a process's memory bounded by a few batches.
    ``labels`` are the images' labels.
    """

    def __init__(self, cache: DecodedImages, rows: np.ndarray, labels: np.ndarray, channels: int,
                 device: torch.device | str = "cpu") -> None:  # fmt: skip
        import torch

        self.cache, self.rows, self.labels, self.channels = cache, np.asarray(rows, np.int64), labels, channels
        self.device = torch.device(device)

    def __len__(self) -> int:
        return len(self.rows)

    @property
    def shape(self) -> tuple[int, int, int, int]:
        height, width, _ = self.cache.shape
        return (len(self.rows), self.channels, height, width)

    def to(self, device: torch.device | str) -> MappedImages:
        """The same images, delivered on ``device`` (gathered on the host, moved as uint8)."""
        return MappedImages(self.cache, self.rows, self.labels, self.channels, device)

    def __getitem__(self, idx: torch.Tensor | np.ndarray) -> torch.Tensor:
        import torch

        positions = idx.cpu().numpy() if isinstance(idx, torch.Tensor) else np.asarray(idx)
        pixels = self.cache.gather(self.rows[positions])[..., : self.channels]  # (B, H, W, C) uint8
        if self.device.type == "cpu":  # NumPy's one-thread loop: torch's threads only contend over so little work
            x = torch.from_numpy(np.divide(pixels, np.float32(255.0), dtype=np.float32))
        else:  # a quarter of the bytes over the bus, scaled on the device
            x = torch.from_numpy(pixels).pin_memory().to(self.device, non_blocking=True).float().div_(255.0)
        return x.permute(0, 3, 1, 2)  # (B, C, H, W), channels-last memory
