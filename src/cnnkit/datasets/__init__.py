"""Data sets in Keras' words: ``datasets.mnist.load_data()`` as Keras, ``datasets.load_data("digits")`` as cnnkit.

``mnist``, ``fashion_mnist``, ``cifar10`` and ``cifar100`` are Keras' modules, returning Keras'
exact arrays (uint8 images) from cnnkit's data cache. Everything of :mod:`cnnkit.data` is here
too: ``load_data(name)`` (float32 images in [0, 1], any registered data set or your own folder),
``load_dataset``, ``list_datasets``, ``class_names``. Keras' other data sets (text, tables) are
one clear error naming what to use.
"""

from __future__ import annotations

from cnnkit._keras_names import missing
from cnnkit.data import (
    DATASETS,
    Dataset,
    DatasetInfo,
    ImageArrays,
    class_names,
    data_root,
    get_dataset_info,
    list_datasets,
    load_data,
    load_dataset,
)
from cnnkit.datasets import cifar10, cifar100, fashion_mnist, mnist

__all__ = [
    "DATASETS",
    "Dataset",
    "DatasetInfo",
    "ImageArrays",
    "cifar10",
    "cifar100",
    "class_names",
    "data_root",
    "fashion_mnist",
    "get_dataset_info",
    "list_datasets",
    "load_data",
    "load_dataset",
    "mnist",
]


def __getattr__(name: str) -> object:
    raise missing(__name__, name)
