"""``keras.datasets.<name>.load_data()``: a standard data set's arrays exactly as Keras returns them.

Served from cnnkit's data cache and catalog (downloaded once, checksum-verified, or placed by
hand), never from a second copy: the same files ``cnnkit train --data mnist`` reads.
"""

from __future__ import annotations

import os

import numpy as np

from cnnkit.data.catalog import get_dataset_info, load_published

__all__ = ["published_arrays"]

Arrays = tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]


def published_arrays(name: str, data_dir: str | os.PathLike | None = None, **options: object) -> Arrays:
    """``((x_train, y_train), (x_test, y_test))`` of the registered data set ``name``, uint8 images as published."""
    return load_published(get_dataset_info(name), data_dir=data_dir, **options)
