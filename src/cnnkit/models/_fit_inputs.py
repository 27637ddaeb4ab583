"""What ``Model.fit`` / ``evaluate`` / ``predict`` make of Keras' arguments: datasets, labels, batch sizes."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch

from cnnkit.errors import ConfigError, DataError, ShapeError

__all__ = ["dataset_arrays", "run_batch", "to_labels"]


def dataset_arrays(x: Any, y: Any, what: str) -> tuple[Any, Any]:
    """A dataset object (``image_dataset_from_directory``'s: it has ``as_arrays()``) -> its images and labels."""
    if not hasattr(x, "as_arrays"):
        return x, y
    if y is not None:
        raise ConfigError(f"{what}() got a dataset, which holds its labels: pass no y")
    return x.as_arrays()


# predict/evaluate run at least this many input values (4 MiB of float32) per forward pass.
_RUN_VALUES = 1 << 20


def run_batch(batch_size: int, x: torch.Tensor) -> int:
    """How many images ``predict``/``evaluate`` pass through the model at once for Keras' ``batch_size``.

    In Keras ``batch_size`` bounds memory; the answers do not depend on it (up to float rounding:
    in eval mode every layer, BatchNorm included, treats each image on its own). At 32 small
    images a forward pass is mostly per-call costs (the article's CNN ran at 0.23-0.47x of one
    pass over 1,000 images), so small images go in passes of up to 4 MiB of input: the whole of
    1,000 28x28x1 images, 341 of 32x32x3. Large images keep ``batch_size``.
    """
    per_image = max(1, x[0].numel()) if len(x) else 1
    return max(batch_size, _RUN_VALUES // per_image)


def to_labels(y: Any) -> torch.Tensor:
    """Integer labels ``(N,)`` -> int64; one-hot ``(N, classes)`` -> float32."""
    t = torch.as_tensor(np.asarray(y))
    if t.ndim == 2 and t.shape[1] == 1:
        t = t[:, 0]
    if t.ndim == 1:
        if t.is_floating_point() and not torch.equal(t, t.round()):
            raise DataError("class labels must be whole numbers 0..classes-1")
        return t.long()
    if t.ndim == 2:
        return t.float()
    raise ShapeError(f"labels must be (N,) class indices or (N, classes) one-hot, got {tuple(t.shape)}")
