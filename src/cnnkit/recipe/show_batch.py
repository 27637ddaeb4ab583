"""What the model is fed: a grid of augmented training images with their labels (fastai's ``show_batch``).

:func:`write_train_batch` draws one batch of training images, at the model's input and through
the run's augmentation policy exactly as training applies it, into ``train_batch.png``:
``cnnkit train`` writes it into every new run folder and the report shows it.
:func:`show_batch` is ``cnnkit show-batch``: the same picture for a data set and a policy, to
preview augmentation before training. Mixed labels (MixUp, CutMix) show their two largest
shares. The batch is drawn with its own random numbers: training's stream is left as it was.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import torch

from cnnkit.data import augment as augmentations
from cnnkit.data import prepare as data_prepare
from cnnkit.data.transforms import conform, images_to_tensor
from cnnkit.recipe.build import build_model, default_size
from cnnkit.recipe.config import TrainConfig
from cnnkit.report.plots import batch_captions, gallery_figure, save_figure

__all__ = ["BATCH_FILE", "augmented_batch", "show_batch", "write_train_batch"]

BATCH_FILE = "train_batch.png"
IMAGES = 32


def _training_images(prepared: data_prepare.TrainingData, n: int, seed: int) -> tuple[torch.Tensor, torch.Tensor]:
    """``n`` training images ``(n, C, H, W)`` in [0, 1] and their labels: a seeded sample (in memory or from
    the decoded-image cache on disk), or a streamed batch."""
    if prepared.stream is not None:
        x, y = next(iter(prepared.stream))
        return x[:n], y[:n]
    chosen = np.random.default_rng(seed).permutation(prepared.train_size)[:n]
    if prepared.mapped is not None:  # dataset.train is empty: the images are on disk
        return prepared.mapped[chosen].contiguous(), torch.from_numpy(np.asarray(prepared.mapped.labels)[chosen])
    train = prepared.dataset.train
    return images_to_tensor(train.images[chosen]), torch.from_numpy(train.labels[chosen])


def augmented_batch(prepared: data_prepare.TrainingData, policy: str, image_shape: tuple[int, int, int],
                    n: int = IMAGES, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """A batch of training images at ``image_shape`` ``(H, W, C)`` through ``policy``: images ``(n, C, H, W)``
    and targets, ``(n,)`` or ``(n, classes)`` mixed."""
    x, y = _training_images(prepared, n, seed)
    x = conform(x.float(), image_shape)
    with torch.random.fork_rng(devices=[]):  # training's random numbers stay as they were
        torch.manual_seed(seed)
        return augmentations.apply_policy(policy, x, y.long(), len(prepared.dataset.class_names))


def write_train_batch(path: str | os.PathLike, prepared: data_prepare.TrainingData, policy: str,
                      image_shape: tuple[int, int, int], n: int = IMAGES, seed: int = 0) -> Path:  # fmt: skip
    """Draw :func:`augmented_batch` with its labels as a PNG at ``path``."""
    x, y = augmented_batch(prepared, policy, image_shape, n, seed)
    images = list(x.clamp(0, 1).permute(0, 2, 3, 1).numpy())  # (H, W, C) each
    title = f"{prepared.dataset.name}: training images through --augment {policy}"
    figure = gallery_figure(images, batch_captions(y.numpy(), prepared.dataset.class_names), title,
                            tile_inches=1.1)  # fmt: skip
    return save_figure(figure, path)


def show_batch(config: TrainConfig, out: str | os.PathLike | None = None, n: int = IMAGES) -> Path:
    """``cnnkit show-batch``: the training batch ``config`` would train on, written to ``out``
    (default ``<data>-batch.png``); returns the path."""
    config.validate()
    prepared = data_prepare.training_data(config, default_size=default_size(config))
    model = build_model(config, prepared.dataset)  # its input shape: what training resizes the images to
    policy = prepared.augment if config.augment == "auto" else config.augment
    path = Path(out) if out is not None else Path(f"{prepared.dataset.name}-batch.png")
    return write_train_batch(path, prepared, policy, model.image_shape, n, config.seed)
