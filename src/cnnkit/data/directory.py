"""``keras.utils.image_dataset_from_directory``: a folder of class sub-folders as batches Keras' way.

The files are found by cnnkit's folder index (:mod:`cnnkit.data.folders`) and decoded by its one
decoding path (:func:`cnnkit.data.scan.scan_files` -> :func:`~cnnkit.data.transforms.image_to_input`),
the pixels ``cnnkit train --data folder/`` trains on, scaled to 0..255 as Keras yields them.
The order of the files, their shuffle by ``seed`` and the ``validation_split`` are Keras' own
(``np.random.RandomState(seed)`` over the sorted paths; the last fraction is the validation
subset), so both subsets hold the files Keras would put there. The images are decoded once, on
first use, and kept in memory; ``fit``, ``evaluate`` and ``predict`` take the object itself.
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.folders import index_folder
from cnnkit.errors import ConfigError, DataError

__all__ = ["ImageDirectoryDataset", "image_dataset_from_directory"]

_CHANNELS = {"grayscale": 1, "rgb": 3}
_LABEL_MODES = ("int", "categorical", "binary", None)


class ImageDirectoryDataset:
    """Batches of ``(images, labels)``: float32 ``(B, H, W, C)`` in 0..255 and labels as ``label_mode`` says.

    Iterating gives NumPy batches (reshuffled each pass when ``shuffle``); ``len()`` is the number of
    batches; ``class_names`` and ``file_paths`` are Keras' attributes. ``as_arrays()`` is every image
    and label at once, what ``Model.fit`` trains on.
    """

    def __init__(self, paths: list[Path], labels: np.ndarray | None, class_names: list[str] | None, *,
                 label_mode: str | None, image_shape: tuple[int, int, int], batch_size: int | None,
                 shuffle: bool, seed: int | None) -> None:  # fmt: skip
        self.file_paths = [str(p) for p in paths]
        self._paths, self._labels = paths, labels
        self.class_names, self.label_mode, self.image_shape = class_names, label_mode, image_shape
        self.batch_size, self.shuffle, self.seed = batch_size, shuffle, seed
        self._arrays: tuple[np.ndarray, np.ndarray | None] | None = None
        self._epoch = 0

    def __len__(self) -> int:
        return -(-len(self._paths) // self.batch_size) if self.batch_size else len(self._paths)

    def as_arrays(self) -> tuple[np.ndarray, np.ndarray | None]:
        """Every image ``(N, H, W, C)`` float32 in 0..255, and the labels (None for ``label_mode=None``)."""
        if self._arrays is None:
            self._arrays = (self._decode(), self._keras_labels())
        return self._arrays

    def _decode(self) -> np.ndarray:
        from cnnkit.data.prepare import memory_budget  # only when the images are first needed
        from cnnkit.data.scan import scan_files

        need = len(self._paths) * int(np.prod(self.image_shape)) * 4
        if need > memory_budget():
            raise DataError(f"{len(self._paths):,} images at {self.image_shape} take {need / 2**30:.1f} GiB, more than "
                            f"cnnkit keeps in memory ($CNNKIT_MEMORY_MB); `cnnkit train --data FOLDER` streams them "
                            f"from disk, or pass a smaller image_size")  # fmt: skip
        scan = scan_files(self._paths, self.image_shape, progress=True)
        bad = [r for r in scan.records if not r.ok]
        if bad:
            raise DataError(f"{len(bad)} of {len(self._paths)} files cannot be read, e.g. {bad[0].path}: "
                            f"{bad[0].error}; `cnnkit check-data FOLDER` lists them all")  # fmt: skip
        images = scan.images
        images *= np.float32(255)  # Keras yields 0..255; a model's Rescaling(1/255) brings them back
        return images

    def _keras_labels(self) -> np.ndarray | None:
        if self._labels is None or self.label_mode is None:
            return None
        if self.label_mode == "int":
            return self._labels.astype(np.int32)
        if self.label_mode == "binary":
            return self._labels.astype(np.float32).reshape(-1, 1)
        one_hot = np.zeros((len(self._labels), len(self.class_names)), np.float32)
        one_hot[np.arange(len(self._labels)), self._labels] = 1.0
        return one_hot

    def __iter__(self) -> Iterator[Any]:
        images, labels = self.as_arrays()
        order = np.arange(len(images))
        if self.shuffle:  # a new order each pass, reproducible from the seed
            order = np.random.default_rng(None if self.seed is None else (self.seed, self._epoch)).permutation(order)
            self._epoch += 1
        step = self.batch_size or 1
        for start in range(0, len(order), step):
            idx = order[start : start + step] if self.batch_size else order[start]
            yield images[idx] if labels is None else (images[idx], labels[idx])

    def take(self, count: int) -> list[Any]:
        """The first ``count`` batches (``for images, labels in ds.take(1)``, as Keras' examples do)."""
        return [batch for batch, _ in zip(self, range(count))]

    def cache(self, filename: str = "") -> ImageDirectoryDataset:
        """Already cached: cnnkit decodes the images once and keeps them."""
        return self

    def prefetch(self, buffer_size: Any = None) -> ImageDirectoryDataset:
        """Nothing to prefetch: the decoded images are in memory."""
        return self

    def map(self, *args: Any, **kwargs: Any) -> ImageDirectoryDataset:
        raise ConfigError("dataset.map(...) runs TensorFlow code: put augmentation layers (layers.RandomFlip, ...) "
                          "or layers.Rescaling(1/255) at the start of the model instead")  # fmt: skip


def _keras_order(folder: Path, class_names: Sequence[str] | None) -> tuple[list[Path], np.ndarray, list[str]]:
    """The files by class, in Keras' order: class folders sorted by name (or as given), paths sorted in each."""
    index = index_folder(folder)
    if any(index.roles):
        raise DataError(f"{folder} holds train/val/test folders: pass one of them (e.g. {folder / 'train'}), "
                        f"whose sub-folders are the classes")  # fmt: skip
    found = sorted(index.class_names)  # Keras sorts as strings ("10" before "2"), cnnkit's index numerically
    if class_names is not None:
        if not set(class_names) <= set(found):
            raise ConfigError(f"class_names {list(class_names)} do not match the sub-folders of {folder}: {found}")
        found = list(class_names)
    by_class: dict[str, list[Path]] = {name: [] for name in found}
    for path, label in zip(index.paths, index.labels):
        name = index.class_names[label]
        if name in by_class:
            by_class[name].append(path)
    paths = [p for name in found for p in sorted(by_class[name], key=lambda p: (str(p.parent), p.name))]
    labels = np.concatenate([np.full(len(by_class[n]), i, np.int64) for i, n in enumerate(found)])
    return paths, labels, found


def image_dataset_from_directory(
    directory: str | os.PathLike,
    labels: str | None = "inferred",
    label_mode: str | None = "int",
    class_names: Sequence[str] | None = None,
    color_mode: str = "rgb",
    batch_size: int | None = 32,
    image_size: tuple[int, int] = (256, 256),
    shuffle: bool = True,
    seed: int | None = None,
    validation_split: float | None = None,
    subset: str | None = None,
    interpolation: str = "bilinear",
    follow_links: bool = False,
    crop_to_aspect_ratio: bool = False,
    pad_to_aspect_ratio: bool = False,
    data_format: str | None = None,
    verbose: bool = True,
) -> ImageDirectoryDataset | list[ImageDirectoryDataset]:
    """Keras' ``image_dataset_from_directory``: ``subset="both"`` returns ``[train, validation]``."""
    if labels not in ("inferred", None):
        raise ConfigError("labels must be 'inferred' (from the sub-folders) or None; cnnkit takes no list of labels")
    if label_mode not in _LABEL_MODES or color_mode not in (*_CHANNELS, "rgba"):
        raise ConfigError(f"label_mode must be one of {_LABEL_MODES}, color_mode 'rgb' or 'grayscale'")
    if color_mode == "rgba":
        raise ConfigError("color_mode='rgba': cnnkit's images have 1 or 3 channels (transparency over black)")
    if interpolation != "bilinear" or crop_to_aspect_ratio or pad_to_aspect_ratio:
        raise ConfigError("cnnkit resizes one way, the way it trains and predicts: antialiased bilinear, the whole "
                          "image (interpolation='bilinear', no crop or pad to the aspect ratio)")  # fmt: skip
    if data_format not in (None, "channels_last"):
        raise ConfigError("cnnkit's arrays are channels-last (N, H, W, C), as Keras' default")
    del follow_links  # the folder index follows links
    if validation_split is not None and not 0 < validation_split < 1:
        raise ConfigError(f"validation_split must be between 0 and 1, got {validation_split}")
    if (validation_split is None) != (subset is None) or subset not in (None, "training", "validation", "both"):
        raise ConfigError("validation_split and subset ('training', 'validation' or 'both') go together")
    if validation_split and shuffle and seed is None:
        raise ConfigError("with validation_split and shuffle=True, pass a seed, so the two subsets do not overlap")
    paths, label_array, names = _keras_order(Path(directory), class_names)
    if label_mode == "binary" and len(names) != 2:
        raise ConfigError(f"label_mode='binary' needs exactly 2 classes, {directory} has {len(names)}: {names}")
    if shuffle:  # Keras: one RandomState(seed) shuffle of the paths, and one of the labels
        seed = np.random.randint(1e6) if seed is None else seed
        order = np.arange(len(paths))
        np.random.RandomState(seed).shuffle(order)
        paths, label_array = [paths[i] for i in order], label_array[order]
    if labels is None:
        label_mode, names, label_array = None, None, None
    shape = (int(image_size[0]), int(image_size[1]), _CHANNELS[color_mode])

    def make(part: slice) -> ImageDirectoryDataset:
        return ImageDirectoryDataset(paths[part], None if label_array is None else label_array[part], names,
                                     label_mode=label_mode, image_shape=shape, batch_size=batch_size,
                                     shuffle=shuffle, seed=seed)  # fmt: skip

    cut = len(paths) - int(validation_split * len(paths)) if validation_split else len(paths)
    parts = {"training": slice(0, cut), "validation": slice(cut, None)}
    if verbose:
        print(f"Found {len(paths)} files" + (f" belonging to {len(names)} classes." if names else "."))
    if subset == "both":
        return [make(parts["training"]), make(parts["validation"])]
    chosen = make(parts.get(subset, slice(None)))
    if verbose and subset:
        print(f"Using {len(chosen.file_paths)} files for {subset}.")
    return chosen
