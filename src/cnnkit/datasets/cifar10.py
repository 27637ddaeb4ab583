"""``keras.datasets.cifar10``: ``(x_train, y_train), (x_test, y_test) = cifar10.load_data()``."""

from __future__ import annotations

import os

from cnnkit.datasets._published import Arrays, published_arrays

__all__ = ["load_data"]


def load_data(*, data_dir: str | os.PathLike | None = None) -> Arrays:
    """CIFAR-10: uint8 images (50000, 32, 32, 3) and (10000, 32, 32, 3), uint8 labels of shape (N, 1).

    As Keras' ``load_data``, from cnnkit's data cache (``data_dir``, else ``$CNNKIT_DATA``, else
    ``~/.cache/cnnkit``; the binary version, or Python batches already there), downloaded once if missing.
    """
    return published_arrays("cifar10", data_dir)
