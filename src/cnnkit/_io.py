"""File plumbing: atomic writes (a crash or a full disk never leaves a half-written file) and file hashes.

Every file cnnkit writes goes through :func:`atomic_write`: the bytes go to a temporary
file in the same folder, are flushed to disk, and only then renamed over the target
(``os.replace`` is atomic on POSIX and Windows). If anything fails, the previous file
is untouched and the temporary file is removed.
"""

from __future__ import annotations

import hashlib
import json
import os
import tempfile
from collections.abc import Callable
from pathlib import Path
from typing import Any

__all__ = ["atomic_write", "atomic_write_bytes", "atomic_write_json", "atomic_write_text", "data_root", "file_sha256"]


def data_root(data_dir: str | os.PathLike | None = None) -> Path:
    """cnnkit's cache folder (data sets, weights, exports): ``data_dir`` if given, else ``$CNNKIT_DATA``,
    else ``~/.cache/cnnkit``."""
    chosen = data_dir or os.environ.get("CNNKIT_DATA") or Path.home() / ".cache" / "cnnkit"
    return Path(chosen).expanduser()


def _read_umask() -> int:
    mask = os.umask(0)  # reading the umask means setting it: done once, at import, then put back
    os.umask(mask)
    return mask


_UMASK = _read_umask()


def atomic_write(path: str | os.PathLike, write: Callable[[str], None]) -> Path:
    """Call ``write(tmp_path)`` and move the result to ``path`` atomically."""
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    os.chmod(tmp, 0o666 & ~_UMASK)  # mkstemp makes 0600; give the file the mode open() would
    try:
        write(tmp)
        with open(tmp, "rb+") as f:  # make the bytes durable before the rename
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    return path


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> Path:
    """Write ``data`` to ``path`` atomically."""
    return atomic_write(path, lambda tmp: Path(tmp).write_bytes(data))


def atomic_write_text(path: str | os.PathLike, text: str) -> Path:
    """Write UTF-8 ``text`` to ``path`` atomically."""
    return atomic_write_bytes(path, text.encode("utf-8"))


def atomic_write_json(path: str | os.PathLike, obj: Any) -> Path:
    """Write ``obj`` as indented JSON to ``path`` atomically."""
    return atomic_write_text(path, json.dumps(obj, indent=2, sort_keys=False) + "\n")


def file_sha256(path: str | os.PathLike) -> str:
    """SHA-256 of a file's bytes as hex, read 1 MiB at a time (memory stays flat for any file size).

    The one file hash: it ties an export to the model file it came from, checks downloaded
    weights, and notices a changed file in a saved split. Raises ``OSError`` as ``open`` does.
    """
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()
