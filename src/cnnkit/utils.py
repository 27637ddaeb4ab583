"""``keras.utils``: to_categorical, image_dataset_from_directory, load_img, img_to_array, set_random_seed."""

from __future__ import annotations

from typing import Any

import numpy as np

from cnnkit._keras_names import missing
from cnnkit.errors import DataError
from cnnkit.runtime import seed_everything

__all__ = ["set_random_seed", "to_categorical"]


def to_categorical(x: Any, num_classes: int | None = None) -> np.ndarray:
    """Class indices -> one-hot float32 rows, as Keras: ``(N,)`` or ``(N, 1)`` -> ``(N, num_classes)``."""
    y = np.asarray(x)
    if y.ndim > 1 and y.shape[-1] == 1:  # Keras drops a trailing axis of 1 (CIFAR's (N, 1) labels)
        y = y.reshape(y.shape[:-1])
    if y.size and (not np.issubdtype(y.dtype, np.integer) and not np.array_equal(y, np.round(y))):
        raise DataError("to_categorical takes whole-number class indices")
    y = y.astype(np.int64)
    classes = int(y.max()) + 1 if num_classes is None else int(num_classes)
    if y.size and (y.min() < 0 or y.max() >= classes):
        raise DataError(f"to_categorical: class indices must be in 0..{classes - 1}, got {y.min()}..{y.max()}")
    out = np.zeros((*y.shape, classes), dtype=np.float32)
    np.put_along_axis(out, y[..., None], 1.0, axis=-1)
    return out


def set_random_seed(seed: int) -> None:
    """Seed Python's, NumPy's and torch's generators, as Keras' set_random_seed seeds its backends."""
    seed_everything(int(seed))


def __getattr__(name: str) -> Any:
    raise missing(__name__, name)
