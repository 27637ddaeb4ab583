"""``keras.datasets.cifar100``: ``(x_train, y_train), (x_test, y_test) = cifar100.load_data(label_mode="fine")``."""

from __future__ import annotations

import os

from cnnkit.datasets._published import Arrays, published_arrays

__all__ = ["load_data"]


def load_data(label_mode: str = "fine", *, data_dir: str | os.PathLike | None = None) -> Arrays:
    """CIFAR-100: uint8 images (50000, 32, 32, 3) and (10000, 32, 32, 3), int64 labels of shape (N, 1).

    ``label_mode``: ``"fine"`` (100 classes) or ``"coarse"`` (20 superclasses). As Keras' ``load_data``,
    from cnnkit's data cache (``data_dir``, else ``$CNNKIT_DATA``, else ``~/.cache/cnnkit``).
    """
    return published_arrays("cifar100", data_dir, label_mode=label_mode)
