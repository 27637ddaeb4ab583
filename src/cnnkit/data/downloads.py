"""Downloads into the data cache: once, checksum-verified, with a progress bar and a short timeout.

Where the cache is: ``--data-dir``, else ``$CNNKIT_DATA``, else ``~/.cache/cnnkit``.
A file lands in the cache only after its published checksum matched (it is written to a
temporary file and renamed), so an interrupted or corrupted download never looks like a
finished one. Offline, behind a firewall, or with ``CNNKIT_OFFLINE=1``, :func:`fetch`
fails within seconds with one :class:`~cnnkit.errors.DataError` that names every missing
file, where to download it from and which folder to put it in. Files placed in the cache
by hand are used as they are, without any network access.
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import shutil
import tarfile
import tempfile
import threading
import urllib.error
import urllib.request
import zipfile
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import IO

from cnnkit._io import data_root
from cnnkit.errors import DataError

__all__ = ["CONNECT_TIMEOUT", "RemoteFile", "data_root", "extract_archive", "fetch", "file_digest"]

CONNECT_TIMEOUT = 10.0  # seconds to resolve, connect, and between received blocks: never a hang
_CHUNK = 1 << 20
_USER_AGENT = "cnnkit (https://github.com/cnnkit; data set download)"


@dataclass(frozen=True)
class RemoteFile:
    """One file of a standard data set: where it goes in the cache and where it comes from.

    ``path`` is relative to the data cache; ``urls`` are mirrors tried in order; ``md5`` or
    ``sha256`` is the checksum its publisher gives; ``size`` (bytes) is for messages only.
    """

    path: str
    urls: tuple[str, ...]
    md5: str | None = None
    sha256: str | None = None
    size: int | None = None

    @property
    def name(self) -> str:
        return Path(self.path).name


def file_digest(path: str | os.PathLike, algorithm: str) -> str:
    """Hex digest of a file, read in 1 MiB blocks."""
    digest = hashlib.new(algorithm)
    with open(path, "rb") as f:
        while block := f.read(_CHUNK):
            digest.update(block)
    return digest.hexdigest()


def _checksum(remote: RemoteFile) -> tuple[str, str] | None:
    if remote.sha256:
        return "sha256", remote.sha256.lower()
    if remote.md5:
        return "md5", remote.md5.lower()
    return None


def _open(url: str, timeout: float) -> IO[bytes]:
    """``urlopen`` with a deadline on the whole connection, DNS included.

    urllib's ``timeout`` covers connect and reads but not name resolution, which can stall
    for tens of seconds behind some firewalls; so the connection is made in a daemon thread
    and abandoned if it has not answered in time.
    """
    request = urllib.request.Request(url, headers={"User-Agent": _USER_AGENT})
    outcome: dict[str, object] = {}

    def connect() -> None:
        try:
            outcome["response"] = urllib.request.urlopen(request, timeout=timeout)  # noqa: S310 (http/https only)
        except BaseException as e:  # handed to the caller below
            outcome["error"] = e

    worker = threading.Thread(target=connect, daemon=True)
    worker.start()
    worker.join(timeout + 1.0)
    if worker.is_alive():
        raise TimeoutError(f"no answer within {timeout:.0f} s")
    if "error" in outcome:
        raise outcome["error"]  # type: ignore[misc]
    return outcome["response"]  # type: ignore[return-value]


def _reason(error: BaseException) -> str:
    if isinstance(error, urllib.error.HTTPError):
        return f"HTTP {error.code} {error.reason}"
    if isinstance(error, urllib.error.URLError):
        return str(error.reason)
    return str(error) or type(error).__name__


def _offline_error(dataset: str, missing: Sequence[RemoteFile], root: Path, reason: str) -> DataError:
    by_folder: dict[Path, list[str]] = {}
    for remote in missing:
        by_folder.setdefault((root / remote.path).parent, []).append(f"{remote.name} from {remote.urls[0]}")
    where = "; ".join(f"into {folder}: {', '.join(files)}" for folder, files in by_folder.items())
    return DataError(
        f"{dataset} is not in the data cache and cannot be downloaded ({reason}). "
        f"Download by hand and place {where} (the cache is --data-dir, else $CNNKIT_DATA, else ~/.cache/cnnkit)"
    )


def fetch(
    dataset: str, files: Sequence[RemoteFile], root: Path, *, timeout: float = CONNECT_TIMEOUT, progress: bool = True
) -> None:
    """Download every file of ``files`` not yet in ``root``, verifying each checksum.

    Raises :class:`DataError` naming all missing files, their URLs and folders when the
    network cannot be reached, and a checksum error when a download differs from what its
    publisher published.
    """
    missing = [remote for remote in files if not (root / remote.path).exists()]
    if not missing:
        return
    if os.environ.get("CNNKIT_OFFLINE", "").strip() not in ("", "0"):
        raise _offline_error(dataset, missing, root, "CNNKIT_OFFLINE is set")
    for remote in missing:
        errors = []
        for url in remote.urls:
            try:
                _download(url, remote, root / remote.path, timeout=timeout, progress=progress)
                break
            except _ChecksumMismatch as e:
                errors.append(str(e))
            except (OSError, urllib.error.URLError, TimeoutError) as e:
                errors.append(f"{url}: {_reason(e)}")
        else:
            if all("checksum" not in e for e in errors):
                raise _offline_error(dataset, [r for r in missing if not (root / r.path).exists()], root, errors[-1])
            raise DataError(f"{dataset}: {'; '.join(errors)}")


class _ChecksumMismatch(Exception):
    pass


def _download(url: str, remote: RemoteFile, target: Path, *, timeout: float, progress: bool) -> None:
    """Stream ``url`` to a temporary file next to ``target``, check it, then rename it into place."""
    target.parent.mkdir(parents=True, exist_ok=True)
    expected = _checksum(remote)
    digest = hashlib.new(expected[0]) if expected else None
    fd, tmp = tempfile.mkstemp(prefix=f".{target.name}.", suffix=".part", dir=target.parent)
    try:
        with os.fdopen(fd, "wb") as out, _open(url, timeout) as response, _progress(progress) as bar:
            total = int(response.headers.get("Content-Length") or remote.size or 0) or None
            task = bar.add_task("download", total=total, name=target.name) if bar else None
            while block := response.read(_CHUNK):
                out.write(block)
                if digest is not None:
                    digest.update(block)
                if bar:
                    bar.advance(task, len(block))
        if expected and digest.hexdigest() != expected[1]:
            raise _ChecksumMismatch(
                f"{url}: the download's {expected[0]} is {digest.hexdigest()}, not the published {expected[1]} "
                f"(a changed or damaged file: it was not kept)"
            )
        os.replace(tmp, target)
    finally:
        Path(tmp).unlink(missing_ok=True)


def _progress(enabled: bool):  # noqa: ANN202 (a rich Progress or a no-op context)
    if not enabled:
        return contextlib.nullcontext()
    from rich.console import Console
    from rich.progress import BarColumn, DownloadColumn, Progress, TextColumn, TimeRemainingColumn, TransferSpeedColumn

    return Progress(
        TextColumn("downloading {task.fields[name]}"), BarColumn(), DownloadColumn(), TransferSpeedColumn(),
        TimeRemainingColumn(), console=Console(stderr=True), transient=True,
    )  # fmt: skip


def extract_archive(archive: Path, into: Path, members: Sequence[str] | None = None) -> None:
    """Unpack a ``.tar(.gz)`` or ``.zip`` into ``into``, never outside it.

    Tar archives go through Python's ``data`` filter (no absolute paths, no ``..``, no
    links out of the folder, no device files); zip member names are sanitised by zipfile.
    ``members`` limits extraction to those names. A damaged archive is a :class:`DataError`.
    """
    into.mkdir(parents=True, exist_ok=True)
    # Unpack beside the destination first and move the result in at the end, so an
    # interrupted extraction never leaves a half-filled folder that looks complete.
    staging = Path(tempfile.mkdtemp(prefix=".extract-", dir=into))
    try:
        if zipfile.is_zipfile(archive):
            with zipfile.ZipFile(archive) as z:
                z.extractall(staging, members=members)
        else:
            with tarfile.open(archive) as t:
                chosen = [t.getmember(m) for m in members] if members is not None else t.getmembers()
                if hasattr(tarfile, "data_filter"):
                    t.extractall(staging, members=chosen, filter="data")
                else:  # Python < 3.11.4: the same rules, checked by hand
                    t.extractall(staging, members=[_safe_member(m) for m in chosen])
        _merge(staging, into)
    except (tarfile.TarError, zipfile.BadZipFile, EOFError, KeyError, OSError) as e:
        raise DataError(f"{archive}: damaged or incomplete archive ({e}); delete it and try again") from None
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def _safe_member(member: tarfile.TarInfo) -> tarfile.TarInfo:
    """Plain files and folders inside the archive's own folder only (what tarfile's ``data`` filter allows)."""
    path = Path(member.name)
    if path.is_absolute() or ".." in path.parts or not (member.isfile() or member.isdir()):
        raise tarfile.TarError(f"refusing to extract {member.name!r}: outside the folder, or not a plain file")
    return member


def _merge(source: Path, destination: Path) -> None:
    """Move everything under ``source`` into ``destination``: folders merge, files replace."""
    for entry in source.iterdir():
        target = destination / entry.name
        if entry.is_dir() and target.is_dir() and not target.is_symlink():
            _merge(entry, target)
        else:
            if target.is_dir() and not target.is_symlink():
                shutil.rmtree(target)
            os.replace(entry, target)
