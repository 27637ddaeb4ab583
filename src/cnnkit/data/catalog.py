"""The data set registry: every named data set cnnkit can load, and the types they load into."""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field

import numpy as np

from cnnkit.errors import ConfigError, DataError

__all__ = ["DATASETS", "Dataset", "DatasetInfo", "ImageArrays", "get_dataset_info", "register_dataset"]


@dataclass(frozen=True)
class ImageArrays:
    """Images and labels held in memory, Keras-style.

    ``images`` is ``(N, H, W, C)`` float32 in [0, 1]; ``labels`` is ``(N,)`` int64.
    """

    images: np.ndarray
    labels: np.ndarray

    def __post_init__(self) -> None:
        if self.images.ndim != 4 or len(self.images) != len(self.labels):
            raise DataError(
                f"images must be (N, H, W, C) with N labels, got {self.images.shape} and {self.labels.shape}"
            )

    def __len__(self) -> int:
        return len(self.labels)


@dataclass(frozen=True)
class Dataset:
    """A named data set: a train and a test split, and the class names."""

    name: str
    class_names: list[str]
    train: ImageArrays
    test: ImageArrays

    @property
    def image_shape(self) -> tuple[int, int, int]:
        """``(H, W, C)`` of one image."""
        return tuple(self.train.images.shape[1:])  # type: ignore[return-value]


@dataclass(frozen=True)
class DatasetInfo:
    """What ``cnnkit datasets`` shows, and how to load the data set."""

    name: str
    loader: Callable[[], Dataset]
    description: str
    num_classes: int
    image_shape: tuple[int, int, int]
    source: str
    builtin: bool = True
    augment: str = "crop"  # the default augmentation policy (see cnnkit.data.augment)
    sizes: dict[str, int] = field(default_factory=dict)


DATASETS: dict[str, DatasetInfo] = {}


def register_dataset(info: DatasetInfo) -> DatasetInfo:
    """Add a data set to the registry; a name can be registered once."""
    if info.name in DATASETS:
        raise ConfigError(f"data set {info.name!r} is already registered")
    DATASETS[info.name] = info
    return info


def get_dataset_info(name: str) -> DatasetInfo:
    """The registry entry for ``name``, or a clear error listing the names that exist."""
    if name not in DATASETS:
        raise ConfigError(f"unknown data set {name!r}; available: {', '.join(sorted(DATASETS))}")
    return DATASETS[name]
