"""Your own images: a folder of class sub-folders, ``train/ val/ test/`` folders, or a CSV of ``path,label``.

Layouts (as in Keras' ``image_dataset_from_directory`` and torchvision's ``ImageFolder``)::

    data/cats/*.jpg, data/dogs/*.jpg                 one sub-folder per class
    data/train/cats/..., data/val/..., data/test/... split folders, each with class sub-folders
    labels.csv: path,label[,split]                   paths relative to the CSV

Class folders are searched recursively; hidden files are ignored; files whose names are
not images (``notes.txt``) are listed in ``ImageIndex.skipped``; a ``runs/`` folder of cnnkit
runs is not a class. Class names are sorted
(numerically when they are all numbers). An empty folder, an empty class or a single class
is a clear :class:`~cnnkit.errors.DataError`. Nothing is ever written to the data folder.
"""

from __future__ import annotations

import csv
import os
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnkit.data.decode import IMAGE_EXTENSIONS, is_image_path
from cnnkit.errors import DataError

__all__ = ["SPLIT_NAMES", "ImageIndex", "index_csv", "index_folder", "index_path", "is_data_path", "sort_classes",
           "split_folders"]  # fmt: skip

# The folder names (and CSV split values) that mean a split, for each split.
SPLIT_NAMES = {"train": ("train", "training"), "val": ("val", "valid", "validation"), "test": ("test", "testing")}


@dataclass(frozen=True)
class ImageIndex:
    """Image files with their labels, and the split each one was assigned to by the layout ("" if none)."""

    root: Path  # the folder (or the CSV's folder) paths are relative to
    paths: list[Path]
    labels: np.ndarray  # (N,) int64 indices into class_names
    class_names: list[str]
    roles: list[str]  # "train", "val", "test" or "" (for the stratified split to decide)
    skipped: list[Path] = field(default_factory=list)  # files that are not images by name
    name: str = ""

    def __len__(self) -> int:
        return len(self.paths)

    def relative(self, path: Path) -> str:
        """``path`` as written in reports and split.json: relative to the root when it lies inside it."""
        try:
            return path.relative_to(self.root).as_posix()
        except ValueError:
            return str(path)

    def subset(self, keep: np.ndarray | list[int]) -> ImageIndex:
        """The files at positions ``keep``, same classes."""
        keep = list(np.asarray(keep, dtype=np.int64))
        return ImageIndex(self.root, [self.paths[i] for i in keep], self.labels[keep], self.class_names,
                          [self.roles[i] for i in keep], self.skipped, self.name)  # fmt: skip


def sort_classes(names: set[str] | list[str]) -> list[str]:
    """Sorted class names; numerically when every name is a number ("2" before "10")."""
    names = sorted(set(names))
    return sorted(names, key=int) if all(n.isdigit() for n in names) else names


def is_data_path(data: str) -> bool:
    """Whether ``--data`` names a folder or CSV rather than a registered data set."""
    return os.sep in data or "/" in data or data.lower().endswith(".csv") or Path(data).exists()


def index_path(path: str | os.PathLike) -> ImageIndex:
    """A folder (either layout) or a ``.csv`` file."""
    path = Path(path).expanduser()
    if not path.exists():
        raise DataError(f"{path}: no such folder or CSV file")
    if path.is_dir():
        return index_folder(path)
    if path.suffix.lower() == ".csv":
        return index_csv(path)
    raise DataError(f"{path}: --data takes a data set name, a folder of class sub-folders, or a CSV of path,label")


def _visible(path: Path) -> bool:
    return not path.name.startswith((".", "__"))


def _files_of(folder: Path) -> tuple[list[Path], list[Path]]:
    """(image files, other files) under ``folder``, recursively, sorted."""
    images, others = [], []
    for dirpath, dirnames, filenames in os.walk(folder, followlinks=True):
        dirnames[:] = sorted(d for d in dirnames if _visible(Path(d)))
        for name in sorted(filenames):
            file = Path(dirpath) / name
            if _visible(file):
                (images if is_image_path(file) else others).append(file)
    return images, others


def _is_runs_folder(folder: Path) -> bool:
    """Whether ``folder`` is a ``runs/`` folder of cnnkit runs (``cnnkit train`` run inside the data folder,
    or ``cnnkit studio``'s project), not a class: named ``runs``, no image of its own, and each sub-folder
    a run (its ``config.json``) or one just being made (empty)."""
    if folder.name != "runs":
        return False
    children = list(folder.iterdir())
    if any(c.is_file() and is_image_path(c) for c in children):
        return False
    return all((c / "config.json").is_file() or not any(c.iterdir()) for c in children if c.is_dir())


def split_folders(folder: Path) -> dict[str, Path]:
    """``{"train": .../train, "val": .../valid, ...}`` when ``folder`` is laid out in splits (it has a train
    folder, under any of :data:`SPLIT_NAMES`' names); ``{}`` when its sub-folders are the classes."""
    found = {}
    for child in folder.iterdir():
        for role, names in SPLIT_NAMES.items():
            if child.is_dir() and child.name.lower() in names:
                found[role] = child
    return found if "train" in found else {}


def index_folder(folder: str | os.PathLike) -> ImageIndex:
    """Index a folder of class sub-folders, or of ``train/`` (``val/``, ``test/``) folders holding class sub-folders."""
    folder = Path(folder)
    splits = split_folders(folder) or {"": folder}
    entries: list[tuple[Path, str, str]] = []  # (path, class, role)
    skipped: list[Path] = []
    for role, split_dir in splits.items():
        classes = sorted(d for d in split_dir.iterdir() if d.is_dir() and _visible(d) and not _is_runs_folder(d))
        if not classes:
            loose = [f for f in split_dir.iterdir() if f.is_file() and is_image_path(f)]
            hint = f" ({len(loose)} images lie directly in it)" if loose else ""
            raise DataError(
                f"{split_dir} has no class sub-folders{hint}: put each class's images in its own sub-folder, "
                f"e.g. {split_dir / 'cats'}/*.jpg and {split_dir / 'dogs'}/*.jpg"
            )
        for class_dir in classes:
            images, others = _files_of(class_dir)
            skipped += others
            if not images and role in ("", "train"):
                raise DataError(
                    f"class folder {class_dir} holds no images ({', '.join(IMAGE_EXTENSIONS)}); add some or remove it"
                )
            entries += [(path, class_dir.name, role) for path in images]
    return _build(folder, entries, skipped, folder.name, str(folder))


def _header(row: list[str]) -> dict[str, int] | None:
    names = [c.strip().lower() for c in row]
    path_col = next((names.index(n) for n in ("path", "file", "filename", "image") if n in names), None)
    label_col = next((names.index(n) for n in ("label", "class", "target") if n in names), None)
    if path_col is None or label_col is None:
        return None
    return {"path": path_col, "label": label_col, "split": names.index("split") if "split" in names else -1}


def index_csv(csv_path: str | os.PathLike) -> ImageIndex:
    """Index a CSV of ``path,label`` rows (a header row and a ``split`` column are optional)."""
    csv_path = Path(csv_path)
    root = csv_path.parent
    try:
        with open(csv_path, newline="", encoding="utf-8-sig") as f:
            rows = [(n, row) for n, row in enumerate(csv.reader(f), 1) if any(c.strip() for c in row)]
    except (OSError, UnicodeDecodeError, csv.Error) as e:
        raise DataError(f"{csv_path}: cannot read it as a CSV file ({e})") from None
    if not rows:
        raise DataError(f"{csv_path} is empty: write one line per image, path,label")
    columns = _header(rows[0][1])
    if columns is not None:
        rows = rows[1:]
    columns = columns or {"path": 0, "label": 1, "split": 2 if len(rows[0][1]) > 2 else -1}
    entries = []
    for line, row in rows:
        try:
            path, label = row[columns["path"]].strip(), row[columns["label"]].strip()
            split = row[columns["split"]].strip().lower() if columns["split"] >= 0 else ""
        except IndexError:
            raise DataError(f"{csv_path} line {line}: expected path,label, got {','.join(row)!r}") from None
        if not path or not label:
            raise DataError(f"{csv_path} line {line}: an empty path or label")
        role = next((r for r, names in SPLIT_NAMES.items() if split in names), None) if split else ""
        if role is None:
            raise DataError(f"{csv_path} line {line}: unknown split {split!r}; use train, val or test")
        entries.append((root / Path(path).expanduser(), label, role))
    return _build(root, entries, [], csv_path.stem, str(csv_path))


def _build(root: Path, entries: list[tuple[Path, str, str]], skipped: list[Path], name: str, where: str
           ) -> ImageIndex:  # fmt: skip
    if not entries:
        raise DataError(f"{where} holds no images")
    train_classes = {c for _, c, role in entries if role in ("", "train")}
    if len(train_classes) < 2:
        only = f" ({next(iter(train_classes))})" if train_classes else ""
        raise DataError(f"{where} has only one class{only}: a classifier needs images of at least two classes")
    strays = sorted({c for _, c, _ in entries} - train_classes)
    if strays:
        raise DataError(f"{where}: class(es) {', '.join(strays)} have validation/test images but no training images")
    class_names = sort_classes(train_classes)
    lookup = {c: i for i, c in enumerate(class_names)}
    labels = np.array([lookup[c] for _, c, _ in entries], dtype=np.int64)
    return ImageIndex(root, [p for p, _, _ in entries], labels, class_names, [r for _, _, r in entries], skipped, name)
