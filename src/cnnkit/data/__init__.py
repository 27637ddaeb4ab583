"""Data: built-in and named data sets, image decoding, splits.

Keras-style entry point: ``(x_train, y_train), (x_test, y_test) = load_data("digits")``.
"""

from __future__ import annotations

import numpy as np

from cnnkit.data import builtin as _builtin  # noqa: F401  (registers digits and faces)
from cnnkit.data.catalog import DATASETS, Dataset, DatasetInfo, ImageArrays, get_dataset_info

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "ImageArrays",
    "class_names",
    "list_datasets",
    "load_data",
    "load_dataset",
]


def list_datasets() -> list[DatasetInfo]:
    """Every registered data set, sorted by name."""
    return [DATASETS[name] for name in sorted(DATASETS)]


def load_dataset(name: str) -> Dataset:
    """Load a data set by name: train and test splits with class names."""
    return get_dataset_info(name).loader()


def load_data(name: str) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
    """Keras' ``load_data()``: ``((x_train, y_train), (x_test, y_test))``, x float32 in [0, 1], NHWC."""
    dataset = load_dataset(name)
    return (dataset.train.images, dataset.train.labels), (dataset.test.images, dataset.test.labels)


def class_names(name: str) -> list[str]:
    """The class names of a data set, indexed by label."""
    return load_dataset(name).class_names
