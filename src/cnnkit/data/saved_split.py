"""A run's ``split.json``, read back: the exact files (and their content hashes) of each split.

``load_split(run_dir)`` gives what resuming a run and ``cnnkit evaluate RUN`` need: the
same training, validation and test images as the run used, with a check that none of
them changed since (a file whose bytes differ from the recorded SHA-256 is reported, never
used silently). :func:`evaluation_data` picks the images ``cnnkit evaluate`` scores.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit._io import file_sha256
from cnnkit.data.catalog import ImageArrays, load_registered, resolve_data
from cnnkit.data.folders import ImageIndex, index_path
from cnnkit.errors import DataError

__all__ = ["SavedSplit", "evaluation_data", "load_split"]


@dataclass(frozen=True)
class SavedSplit:
    """The split a run recorded. For a folder or CSV, :meth:`index` rebuilds any split's file list."""

    record: dict[str, Any]
    path: Path

    @property
    def data(self) -> str:
        return str(self.record.get("data", ""))

    @property
    def is_files(self) -> bool:
        """Whether the run trained on a folder or CSV (rather than a registered data set)."""
        return "root" in self.record

    def index(self, role: str, *, verify: bool = True) -> ImageIndex:
        """The files of split ``role`` (``train``, ``val`` or ``test``) as an index; ``verify`` checks their hashes."""
        if not self.is_files:
            raise DataError(f"{self.path}: the run used the registered data set {self.data!r}, not files")
        root = Path(self.record["root"])
        names = list(self.record["class_names"])
        entries = self.record.get(role, [])
        paths = [root / e["path"] for e in entries]
        if verify:
            changed = [e["path"] for p, e in zip(paths, entries) if _sha256(p) != e["sha256"]]
            if changed:
                listed = ", ".join(changed[:5]) + (f" and {len(changed) - 5} more" if len(changed) > 5 else "")
                raise DataError(f"{len(changed)} file(s) of the run's {role} split are missing or changed since it was "
                                f"recorded in {self.path}: {listed}")  # fmt: skip
        labels = np.array([names.index(e["label"]) for e in entries], dtype=np.int64)
        return ImageIndex(root, paths, labels, names, [role] * len(paths), [], Path(self.data).stem)


def _sha256(path: Path) -> str | None:
    try:
        return file_sha256(path)
    except OSError:
        return None


def load_split(run_dir: str | os.PathLike) -> SavedSplit:
    """Read ``run_dir/split.json`` (or a split.json path)."""
    path = Path(run_dir)
    path = path / "split.json" if path.is_dir() else path
    try:
        record = json.loads(path.read_text())
    except FileNotFoundError:
        raise DataError(f"{path}: no such file; is this a run folder?") from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise DataError(f"{path}: not a valid split.json ({e})") from None
    if not isinstance(record, dict):
        raise DataError(f"{path}: not a valid split.json")
    return SavedSplit(record, path)


def _decode(index: ImageIndex, shape: tuple[int, int, int], class_names: list[str] | None) -> tuple[ImageArrays, int]:
    """Decode ``index`` at ``shape``, labels mapped onto ``class_names`` by name; bad files are skipped (counted)."""
    from cnnkit.data.scan import scan_files

    class_names = class_names or index.class_names  # a model saved without names: trust the folder's order
    unknown = sorted(set(index.class_names) - set(class_names))
    if unknown:
        known = ", ".join(class_names)
        raise DataError(f"the model does not know the class(es) {', '.join(unknown)}; it knows {known}")
    scan = scan_files(index.paths, shape)
    ok = scan.ok
    labels = np.array([class_names.index(index.class_names[y]) for y in index.labels], dtype=np.int64)
    return ImageArrays(scan.images[ok], labels[ok]), int((~ok).sum())


def evaluation_data(
    data: str | None,
    *,
    class_names: list[str] | None,
    input_shape: tuple[int, int, int],
    run_dir: str | os.PathLike | None = None,
    data_dir: str | None = None,
    role: str = "test",
    download: bool = True,
) -> tuple[ImageArrays, str]:
    """Labelled images of ``data`` (what ``cnnkit train --data`` takes) for a model, and a description.

    The one way every command that takes ``--data`` (evaluate, export, the report) turns it
    into labelled images:

    - ``data`` a registered name: its ``role`` split (``test``, or ``train`` for calibration).
    - ``data`` None with a run folder, or ``data`` the folder/CSV the run trained on: the run's
      own ``role`` split, from its split.json, checked against the recorded hashes.
    - another folder or CSV: its ``role/`` images (or ``split=ROLE`` rows) if it has any, else all of them.

    ``download=False``: a registered data set missing from the cache is a ``DataError``, never a download.
    """
    saved = load_split(run_dir) if run_dir is not None and (Path(run_dir) / "split.json").exists() else None
    if data is None:
        if saved is None:
            raise DataError("say which data to use: --data NAME|FOLDER|CSV")
        data = saved.data
    info = resolve_data(data)
    if info is not None:
        dataset = load_registered(info, data_dir=data_dir, download=download)
        if class_names and len(dataset.class_names) != len(class_names):
            raise DataError(f"the model knows {len(class_names)} classes but {dataset.name} has "
                            f"{len(dataset.class_names)}: use the data it was trained for")  # fmt: skip
        return (dataset.test if role == "test" else dataset.train), f"{dataset.name} {role} split"
    same = saved is not None and saved.is_files and Path(data).expanduser().resolve() == Path(saved.data)
    if same:
        arrays, bad = _decode(saved.index(role), input_shape, class_names)
        where = f"the run's {role} split of {data}"
    else:
        index = index_path(data)
        has_role = role in index.roles
        if has_role:
            index = index.subset([i for i, r in enumerate(index.roles) if r == role])
        arrays, bad = _decode(index, input_shape, class_names)
        where = f"{data} ({f'{role} split' if has_role else 'all images'})"
    if not len(arrays):
        raise DataError(f"no readable images in {data}")
    return arrays, where + (f", {bad} unreadable file(s) skipped" if bad else "")
