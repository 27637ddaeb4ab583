"""``keras.datasets.mnist``: ``(x_train, y_train), (x_test, y_test) = mnist.load_data()``."""

from __future__ import annotations

import os

from cnnkit.datasets._published import Arrays, published_arrays

__all__ = ["load_data"]


def load_data(path: str | None = None, *, data_dir: str | os.PathLike | None = None) -> Arrays:
    """MNIST's handwritten digits: uint8 images (60000, 28, 28) and (10000, 28, 28), uint8 labels (N,).

    As Keras' ``load_data``, from cnnkit's data cache (``data_dir``, else ``$CNNKIT_DATA``, else
    ``~/.cache/cnnkit``), downloaded there once if missing. ``path`` (Keras' cache file name) is accepted
    and ignored: the files are the publisher's, in torchvision's layout.
    """
    del path
    return published_arrays("mnist", data_dir)
