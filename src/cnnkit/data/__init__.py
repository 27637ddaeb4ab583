"""Data: built-in and standard data sets, your own folders and CSVs, image decoding, splits, health checks.

Keras-style entry point: ``(x_train, y_train), (x_test, y_test) = load_data("mnist")``.
Standard data sets download once into the data cache (``data_dir=``, else ``$CNNKIT_DATA``,
else ``~/.cache/cnnkit``); files placed there by hand are used without any network access.
"""

from __future__ import annotations

import os

import numpy as np

from cnnkit.data import builtin as _builtin  # noqa: F401  (registers digits and faces)
from cnnkit.data import cifar as _cifar  # noqa: F401  (registers cifar10, cifar100)
from cnnkit.data import medmnist as _medmnist  # noqa: F401  (registers the MedMNIST collections)
from cnnkit.data import photos as _photos  # noqa: F401  (registers gtsrb, lfw-people)
from cnnkit.data import standard as _standard  # noqa: F401  (registers mnist, fashion-mnist, kmnist, svhn)
from cnnkit.data.catalog import (
    DATASETS,
    Dataset,
    DatasetInfo,
    ImageArrays,
    get_dataset_info,
    load_registered,
    resolve_data,
)
from cnnkit.data.downloads import data_root
from cnnkit.errors import DataError

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "ImageArrays",
    "class_names",
    "data_root",
    "get_dataset_info",
    "list_datasets",
    "load_data",
    "load_dataset",
]


def list_datasets() -> list[DatasetInfo]:
    """Every registered data set: the built-in ones first, then by name."""
    return sorted(DATASETS.values(), key=lambda info: (not info.builtin, info.name))


def load_dataset(
    name: str,
    *,
    data_dir: str | os.PathLike | None = None,
    download: bool = True,
    image_size: int | None = None,
) -> Dataset:
    """Load a data set: a registered name, or a folder / CSV of your own images.

    A standard data set missing from the cache is downloaded (``download=False``: a clear
    error instead). A folder or CSV is checked, its bad files skipped, split into train and
    test (stratified, fixed seed) and decoded at ``image_size`` (default 64).
    """
    info = resolve_data(name)
    if info is not None:
        return load_registered(info, data_dir=data_dir, download=download)
    from cnnkit.data.prepare import open_data  # scanning and checking files: loaded only for a folder or CSV

    opened = open_data(name, image_size=image_size, val_split=0)
    if opened.stream is not None or opened.mapped is not None:
        raise DataError(f"{name}: {opened.train_size:,} images do not fit in memory at this size; "
                        f"`cnnkit train --data {name}` reads them from disk, or pass a smaller image_size")  # fmt: skip
    return opened.dataset


def load_data(
    name: str, *, data_dir: str | os.PathLike | None = None, image_size: int | None = None
) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Keras' ``load_data()``: ``((x_train, y_train), (x_test, y_test))``, x float32 in [0, 1], NHWC."""
    dataset = load_dataset(name, data_dir=data_dir, image_size=image_size)
    return (dataset.train.images, dataset.train.labels), (dataset.test.images, dataset.test.labels)


def class_names(name: str, *, data_dir: str | os.PathLike | None = None) -> list[str]:
    """The class names of a data set, indexed by label."""
    return load_dataset(name, data_dir=data_dir).class_names
