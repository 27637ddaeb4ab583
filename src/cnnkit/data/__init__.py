"""Data: built-in and standard data sets, your own folders and CSVs, image decoding, splits, health checks.

Keras-style entry point: ``(x_train, y_train), (x_test, y_test) = load_data("mnist")``.
Standard data sets download once into the data cache (``data_dir=``, else ``$CNNKIT_DATA``,
else ``~/.cache/cnnkit``); files placed there by hand are used without any network access.
"""

from __future__ import annotations

import os
from typing import TYPE_CHECKING, Any

from cnnkit._lazy import lazy_names
from cnnkit.errors import DataError

if TYPE_CHECKING:
    import numpy as np

    from cnnkit.data.catalog import Dataset, DatasetInfo

# Public name -> the module that has it. Loaded on first use: importing any of this package's modules
# (``cnnkit.data.decode`` for ``cnnkit predict``) runs this file, and the catalog brings urllib, the
# archive readers and every data set's module, which a prediction never needs.
_LAZY = {
    "DATASETS": "cnnkit.data.catalog",
    "Dataset": "cnnkit.data.catalog",
    "DatasetInfo": "cnnkit.data.catalog",
    "ImageArrays": "cnnkit.data.catalog",
    "get_dataset_info": "cnnkit.data.catalog",
    "load_registered": "cnnkit.data.catalog",
    "resolve_data": "cnnkit.data.catalog",
    "data_root": "cnnkit._io",
}

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


_lazy = lazy_names(__name__, _LAZY)


def __getattr__(name: str) -> Any:
    if name == "DATASETS":
        from cnnkit.data.catalog import registry

        return registry()  # with every data set registered
    return _lazy(name)


def list_datasets() -> list[DatasetInfo]:
    """Every registered data set: the built-in ones first, then by name."""
    from cnnkit.data.catalog import registry

    return sorted(registry().values(), key=lambda info: (not info.builtin, info.name))


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
    from cnnkit.data.catalog import load_registered, resolve_data

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
