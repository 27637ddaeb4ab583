"""The data set registry: every named data set cnnkit can load, and the types they load into.

Built-in data sets load with ``info.loader()``. Standard ones (MNIST, CIFAR, ...) list the
files they need in the data cache (``info.files``) and load with ``info.loader(root)``
once ``info.ready(root)`` says the cache holds them (downloaded, or placed there by hand):
:func:`load_registered` does either. :func:`resolve_data` tells a registered name from a
folder or CSV path, the first question every ``--data`` argument asks.
"""

from __future__ import annotations

import importlib
import os
import re
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from cnnkit._suggest import did_you_mean
from cnnkit.data.downloads import RemoteFile, data_root, fetch
from cnnkit.data.folders import is_data_path
from cnnkit.errors import ConfigError, DataError

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "ImageArrays",
    "canonical_name",
    "find_dataset_info",
    "get_dataset_info",
    "load_published",
    "load_registered",
    "register_dataset",
    "registry",
    "resolve_data",
]


@dataclass(frozen=True)
class ImageArrays:
    """Images and labels held in memory, Keras-style.

    ``images`` is ``(N, H, W, C)`` float32 in [0, 1]; ``labels`` is ``(N,)`` int64.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise DataError(
                f"images must be (N, H, W, C) with N labels, got {self.images.shape} and {self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    """A named data set: a train and a test split, the class names, and its own validation split if it has one."""

    name: str
    class_names: list[str]
    train: ImageArrays
    test: ImageArrays
    val: ImageArrays | None = None

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


@dataclass(frozen=True)
class DatasetInfo:
    """What ``cnnkit datasets`` shows, and how to load the data set."""

    name: str
    loader: Callable[..., Dataset]  # built in: loader(); otherwise loader(data cache root)
    description: str
    num_classes: int
    image_shape: tuple[int, int, int]
    source: str
    builtin: bool = True
    augment: str = "crop"  # the default augmentation policy (see cnnkit.data.augment)
    sizes: dict[str, int] = field(default_factory=dict)
    files: tuple[RemoteFile, ...] = ()  # what a download fetches into the data cache
    ready: Callable[[Path], bool] | None = None  # whether the cache already holds what loader(root) reads
    # published(root, **options) -> ((x_train, y_train), (x_test, y_test)): the arrays as their publisher stores
    # them (uint8 images), what Keras' keras.datasets.<name>.load_data() returns; loader(root) is built on it.
    published: Callable[..., tuple] | None = None

    @property
    def download_bytes(self) -> int:
        """How much a download of this data set fetches (0 for a built-in one)."""
        return sum(remote.size or 0 for remote in self.files)

    def is_cached(self, root: Path) -> bool:
        """Whether this data set can be loaded from ``root`` without any network access."""
        return self.builtin or (self.ready(root) if self.ready else all((root / f.path).exists() for f in self.files))


DATASETS: dict[str, DatasetInfo] = {}
# The modules that register data sets, imported on the first look-up (not by `import cnnkit.data`).
_PROVIDERS = ("builtin", "cifar", "medmnist", "photos", "standard")
_providers_loaded = False


def registry() -> dict[str, DatasetInfo]:
    """Every registered data set by name: :data:`DATASETS`, after the providers' modules have registered theirs."""
    global _providers_loaded
    if not _providers_loaded:
        _providers_loaded = True
        for provider in _PROVIDERS:
            importlib.import_module(f"cnnkit.data.{provider}")
    return DATASETS


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a data set to the registry; a name can be registered once."""
    if info.name in DATASETS:
        raise ConfigError(f"data set {info.name!r} is already registered")
    DATASETS[info.name] = info
    return info


def canonical_name(name: str) -> str:
    """``Fashion_MNIST``, ``fashion-mnist`` and ``fashionmnist`` are one data set."""
    return re.sub(r"[-_ .]", "", name.lower())


def find_dataset_info(name: str) -> DatasetInfo | None:
    """The registry entry for ``name`` in any spelling, or None."""
    wanted = canonical_name(name)
    return next((info for key, info in registry().items() if canonical_name(key) == wanted), None)


def get_dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``, or a clear error listing the names that exist."""
    info = find_dataset_info(name)
    if info is None:
        raise ConfigError(f"unknown data set {name!r}{did_you_mean(name, DATASETS)}; "
                          f"available: {', '.join(sorted(DATASETS))}")  # fmt: skip
    return info


def resolve_data(data: str) -> DatasetInfo | None:
    """The registered data set ``data`` names, or None when it is a folder or CSV path.

    A registered name wins over a folder of the same name in the working directory; write
    ``./mnist`` for the folder.
    """
    if "/" in data or os.sep in data or data.lower().endswith(".csv"):
        return None
    info = find_dataset_info(data)
    if info is not None or is_data_path(data):
        return info
    raise ConfigError(f"unknown data set {data!r}, and no folder or CSV of that name{did_you_mean(data, DATASETS)}; "
                      f"available: {', '.join(sorted(DATASETS))}")  # fmt: skip


def load_registered(info: DatasetInfo, *, data_dir: str | os.PathLike | None = None, download: bool = True) -> Dataset:
    """Load a registered data set: a built-in one, or a standard one from the data cache.

    A standard data set missing from the cache is downloaded into it (``download=False``: a
    clear error instead).
    """
    if info.builtin:
        return info.loader()
    return info.loader(_cache_with(info, data_dir, download))


def load_published(info: DatasetInfo, *, data_dir: str | os.PathLike | None = None, download: bool = True,
                   **options: object) -> tuple:  # fmt: skip
    """The arrays of a standard data set as its publisher stores them (uint8 images), from the data cache.

    What ``keras.datasets.<name>.load_data()`` returns; ``options`` go to the reader (CIFAR-100's
    ``label_mode``). Cached, downloaded and refused exactly as :func:`load_registered`.
    """
    if info.published is None:
        raise DataError(f"{info.name} has no published-array form; use cnnkit.datasets.load_data({info.name!r})")
    return info.published(_cache_with(info, data_dir, download), **options)


def _cache_with(info: DatasetInfo, data_dir: str | os.PathLike | None, download: bool) -> Path:
    """The data cache, once it holds ``info``'s files (downloaded unless ``download`` is False)."""
    root = data_root(data_dir)
    if not info.is_cached(root):
        if not download:
            raise DataError(f"{info.name} is not in the data cache {root}: `cnnkit datasets --download {info.name}`")
        fetch(info.name, info.files, root)
    return root
