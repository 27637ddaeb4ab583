"""CIFAR-10 and CIFAR-100, read without unpickling anything untrusted.

cnnkit downloads the official *binary* archives (``cifar-10-binary.tar.gz``,
``cifar-100-binary.tar.gz``): fixed-size records of label byte(s) then 3,072 pixel bytes
(the red, green and blue 32x32 planes), read with NumPy. Python-version batches that are
already on disk (``cifar-10-batches-py/``, ``cifar-100-python/`` as torchvision leaves
them, or their ``.tar.gz``) are read too, through an unpickler that can build nothing but
dicts, lists, strings, numbers and plain NumPy arrays: a batch holding any other object
(the way a malicious pickle runs code) is refused.
"""

from __future__ import annotations

import io
import pickle
import tarfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.catalog import Dataset, DatasetInfo, ImageArrays, register_dataset
from cnnkit.data.downloads import RemoteFile, extract_archive
from cnnkit.data.standard import arrays_from_uint8
from cnnkit.errors import DataError

__all__ = ["read_binary_batches", "read_python_batch"]

_PIXELS = 3 * 32 * 32
_TORONTO = "https://www.cs.toronto.edu/~kriz/"


@dataclass(frozen=True)
class _Layout:
    name: str
    classes: int
    label_bytes: int  # CIFAR-100 records hold (coarse, fine); the fine label is the class
    binary_archive: RemoteFile
    binary_folder: str
    binary_train: tuple[str, ...]
    binary_test: str
    binary_names: str
    python_archive: str
    python_folder: str
    python_train: tuple[str, ...]
    python_test: str
    python_meta: str
    python_label_key: str
    python_names_key: str


# -- the binary version ---------------------------------------------------------------------------------
def read_binary_batches(paths: list[Path], label_bytes: int, label_at: int | None = None
                        ) -> tuple[np.ndarray, np.ndarray]:  # fmt: skip
    """Records of ``label_bytes`` label bytes + 3,072 pixel bytes -> uint8 ``(N, 32, 32, 3)`` images and labels.

    The label is the record's byte ``label_at`` (default: its last label byte, CIFAR-100's fine label).
    """
    record = label_bytes + _PIXELS
    chunks = []
    for path in paths:
        raw = np.fromfile(path, dtype=np.uint8)
        if raw.size == 0 or raw.size % record:
            raise DataError(f"{path}: {raw.size:,} bytes is not a whole number of {record:,}-byte CIFAR records; "
                            f"delete it and try again")  # fmt: skip
        chunks.append(raw.reshape(-1, record))
    records = np.concatenate(chunks)  # (N, label_bytes + 3072)
    labels = records[:, label_bytes - 1 if label_at is None else label_at].astype(np.int64)
    images = records[:, label_bytes:].reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1)  # (N, 32, 32, 3)
    return images, labels


def _names(path: Path) -> list[str]:
    return [line.strip() for line in path.read_text().splitlines() if line.strip()]


# -- the Python version, unpickled with an allow-list ----------------------------------------------------
_ALLOWED = {
    ("numpy.core.multiarray", "_reconstruct"),
    ("numpy._core.multiarray", "_reconstruct"),
    ("numpy", "ndarray"),
    ("numpy", "dtype"),
    ("_codecs", "encode"),  # how Python 3 pickles bytes at protocol 2
}


class _ArrayOnlyUnpickler(pickle.Unpickler):
    """An unpickler that rebuilds plain NumPy arrays and nothing else (dicts, lists, strings need no lookup)."""

    def find_class(self, module: str, name: str) -> Any:
        if (module, name) in _ALLOWED:
            return super().find_class(module, name)
        raise pickle.UnpicklingError(f"refusing to load {module}.{name}: a CIFAR batch holds only arrays and lists")


def read_python_batch(data: bytes, source: str) -> dict[str, Any]:
    """One CIFAR Python batch (a pickled dict) read through the allow-list unpickler."""
    try:
        batch = _ArrayOnlyUnpickler(io.BytesIO(data), encoding="latin1").load()
    except (pickle.UnpicklingError, EOFError, ValueError, TypeError, AttributeError, IndexError) as e:
        raise DataError(f"{source}: not a CIFAR batch cnnkit can read safely ({e})") from None
    if not isinstance(batch, dict):
        raise DataError(f"{source}: a CIFAR batch is a dict, this is a {type(batch).__name__}")
    return {k.decode("latin1") if isinstance(k, bytes) else k: v for k, v in batch.items()}


def _python_arrays(batches: list[dict[str, Any]], key: str, source: str) -> tuple[np.ndarray, np.ndarray]:
    try:
        data = np.concatenate([np.asarray(b["data"], dtype=np.uint8).reshape(-1, _PIXELS) for b in batches])
        labels = np.concatenate([np.asarray(b[key], dtype=np.int64).reshape(-1) for b in batches])
    except (KeyError, ValueError) as e:
        raise DataError(f"{source}: CIFAR batches without the expected data and {key} ({e})") from None
    return data.reshape(-1, 3, 32, 32).transpose(0, 2, 3, 1), labels


def _read_python(layout: _Layout, root: Path, label_key: str) -> tuple[list[str], tuple, tuple]:
    folder = root / layout.python_folder
    archive = root / layout.python_archive
    names = (*layout.python_train, layout.python_test, layout.python_meta)
    if folder.is_dir():
        read = {name: (folder / name).read_bytes() for name in names}
    else:  # straight from the archive: the members are read as bytes, never extracted
        try:
            with tarfile.open(archive) as tar:
                read = {}
                for name in names:
                    member = tar.extractfile(f"{layout.python_folder}/{name}")
                    read[name] = member.read() if member else b""
        except (tarfile.TarError, KeyError, EOFError, OSError) as e:
            raise DataError(f"{archive}: damaged or not a CIFAR archive ({e})") from None
    batches = {name: read_python_batch(data, f"{layout.python_folder}/{name}") for name, data in read.items()}
    train = _python_arrays([batches[n] for n in layout.python_train], label_key, str(folder))
    test = _python_arrays([batches[layout.python_test]], label_key, str(folder))
    raw_names = batches[layout.python_meta].get(layout.python_names_key, [])
    names = [n.decode("latin1") if isinstance(n, bytes) else str(n) for n in raw_names]
    return names, train, test


# -- both ------------------------------------------------------------------------------------------------
def _dataset(layout: _Layout, names: list[str], train: tuple, test: tuple) -> Dataset:
    if len(names) != layout.classes:
        raise DataError(f"{layout.name}: expected {layout.classes} class names, found {len(names)}")
    arrays: list[ImageArrays] = []
    for images, labels in (train, test):
        if labels.size and (labels.min() < 0 or labels.max() >= layout.classes):
            raise DataError(f"{layout.name}: labels outside 0..{layout.classes - 1}")
        arrays.append(arrays_from_uint8(images, labels))
    return Dataset(name=layout.name, class_names=names, train=arrays[0], test=arrays[1])


def _binary_files(layout: _Layout) -> list[str]:
    return [*layout.binary_train, layout.binary_test, layout.binary_names]


def _ready(layout: _Layout, root: Path) -> bool:
    folder = root / layout.binary_folder
    python = root / layout.python_folder
    return (
        all((folder / name).exists() for name in _binary_files(layout))
        or (root / layout.binary_archive.path).exists()
        or all((python / n).exists() for n in (*layout.python_train, layout.python_test, layout.python_meta))
        or (root / layout.python_archive).exists()
    )


def _read(layout: _Layout, root: Path, label_mode: str = "fine") -> tuple[list[str], tuple, tuple]:
    """(fine class names, (train images, labels), (test images, labels)): uint8 NHWC images, int64 labels.

    ``label_mode="coarse"``: CIFAR-100's 20 superclasses (the first label byte) instead of its 100 classes.
    """
    if label_mode not in ("fine", "coarse") or (label_mode == "coarse" and layout.label_bytes == 1):
        choices = '"fine" or "coarse"' if layout.label_bytes == 2 else '"fine" (CIFAR-10 has one label)'
        raise DataError(f"{layout.name}: label_mode must be {choices}, got {label_mode!r}")
    coarse = label_mode == "coarse"
    folder = root / layout.binary_folder
    have_binary = all((folder / name).exists() for name in _binary_files(layout))
    if not have_binary and not (root / layout.binary_archive.path).exists():  # only the Python version is here
        return _read_python(layout, root, "coarse_labels" if coarse else layout.python_label_key)
    if not have_binary:
        extract_archive(root / layout.binary_archive.path, root,
                        members=[f"{layout.binary_folder}/{name}" for name in _binary_files(layout)])  # fmt: skip
    label_at = 0 if coarse else None
    train = read_binary_batches([folder / n for n in layout.binary_train], layout.label_bytes, label_at)
    test = read_binary_batches([folder / layout.binary_test], layout.label_bytes, label_at)
    return _names(folder / layout.binary_names), train, test


def _load(layout: _Layout, root: Path) -> Dataset:
    return _dataset(layout, *_read(layout, root))


def _published(layout: _Layout, root: Path, label_mode: str = "fine") -> tuple:
    """Keras' ``cifar10/cifar100.load_data()``: uint8 ``(N, 32, 32, 3)`` images and ``(N, 1)`` labels.

    The labels' dtype is Keras' too: uint8 for CIFAR-10, int64 for CIFAR-100 (Keras reads them from lists).
    """
    _, *splits = _read(layout, root, label_mode)
    dtype = np.uint8 if layout.label_bytes == 1 else np.int64
    return tuple((images, labels.astype(dtype).reshape(-1, 1)) for images, labels in splits)


_CIFAR10 = _Layout(
    name="cifar10", classes=10, label_bytes=1,
    binary_archive=RemoteFile("cifar-10-binary.tar.gz", (f"{_TORONTO}cifar-10-binary.tar.gz",),
                              md5="c32a1d4ab5d03f1284b67883e8d87530", size=170052171),
    binary_folder="cifar-10-batches-bin", binary_train=tuple(f"data_batch_{i}.bin" for i in range(1, 6)),
    binary_test="test_batch.bin", binary_names="batches.meta.txt",
    python_archive="cifar-10-python.tar.gz", python_folder="cifar-10-batches-py",
    python_train=tuple(f"data_batch_{i}" for i in range(1, 6)), python_test="test_batch",
    python_meta="batches.meta", python_label_key="labels", python_names_key="label_names",
)  # fmt: skip
_CIFAR100 = _Layout(
    name="cifar100", classes=100, label_bytes=2,
    binary_archive=RemoteFile("cifar-100-binary.tar.gz", (f"{_TORONTO}cifar-100-binary.tar.gz",),
                              md5="03b5dce01913d631647c71ecec9e9cb8", size=168513733),
    binary_folder="cifar-100-binary", binary_train=("train.bin",), binary_test="test.bin",
    binary_names="fine_label_names.txt",
    python_archive="cifar-100-python.tar.gz", python_folder="cifar-100-python", python_train=("train",),
    python_test="test", python_meta="meta", python_label_key="fine_labels", python_names_key="fine_label_names",
)  # fmt: skip


for _layout, _description in (
    (_CIFAR10, "small photos of 10 things: airplane, automobile, bird, cat, deer, dog, frog, horse, ship, truck"),
    (_CIFAR100, "small photos of 100 things (the fine labels), 500 train and 100 test each"),
):
    register_dataset(DatasetInfo(
        name=_layout.name, loader=lambda root, layout=_layout: _load(layout, root), num_classes=_layout.classes,
        image_shape=(32, 32, 3), description=_description, source="University of Toronto (download, binary version)",
        builtin=False, augment="flip-crop", sizes={"train": 50000, "test": 10000}, files=(_layout.binary_archive,),
        ready=lambda root, layout=_layout: _ready(layout, root),
        published=lambda root, layout=_layout, **options: _published(layout, root, **options),
    ))  # fmt: skip
