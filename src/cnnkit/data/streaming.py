"""Training images that do not fit in memory: decoded on the fly by DataLoader workers, memory bounded.

A :class:`ImageFiles` dataset decodes one file to the model's input (the same
:func:`~cnnkit.data.transforms.load_input` as everywhere else); :func:`file_batches`
wraps it in a ``torch.utils.data.DataLoader`` whose workers decode in parallel and keep at
most ``workers x prefetch`` batches in flight. The loader is a sized iterable of
``(images (B, C, H, W) float32 in [0, 1], labels (B,))`` batches: exactly what the
engine's ``fit`` takes. Batches are not augmented here; augmentation runs on the device.

Under torchrun, :func:`shard_batches` gives each process its share: a ``DistributedSampler``
deals every rank the same number of files from one seeded permutation (reshuffled each
epoch by the engine's ``set_epoch``), and each rank's batches hold ``batch_size / ranks``
images, so each step's global batch is ``batch_size`` images as in one process.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset, DistributedSampler, RandomSampler

from cnnkit.data.transforms import load_input
from cnnkit.errors import ConfigError, DataError

__all__ = ["ImageFiles", "file_batches", "shard_batches"]


class ImageFiles(Dataset):
    """Image files and labels as a map-style dataset of ``(image (C, H, W), label)``; unreadable files give None."""

    def __init__(self, paths: Sequence[Path], labels: np.ndarray, input_shape: Sequence[int]) -> None:
        self.paths = [str(p) for p in paths]
        self.labels = np.asarray(labels, dtype=np.int64)
        self.input_shape = tuple(input_shape)

    def __len__(self) -> int:
        return len(self.paths)

    def __getitem__(self, i: int) -> tuple[torch.Tensor, int] | None:
        try:
            x = load_input(self.paths[i], self.input_shape)  # (H, W, C)
        except DataError:
            return None  # the file broke after the health check; the batch goes on without it
        return torch.from_numpy(x).permute(2, 0, 1), int(self.labels[i])  # (C, H, W)


def _collate(items: list[tuple[torch.Tensor, int] | None]) -> tuple[torch.Tensor, torch.Tensor]:
    items = [item for item in items if item is not None]
    if not items:
        raise DataError("a whole batch of images became unreadable during training; run `cnnkit check-data`")
    return torch.stack([x for x, _ in items]), torch.tensor([y for _, y in items])  # (B, C, H, W), (B,)


def _one_thread(_: int) -> None:
    torch.set_num_threads(1)  # each worker decodes one image at a time; torch threads would only contend


def file_batches(
    paths: Sequence[Path],
    labels: np.ndarray,
    input_shape: Sequence[int],
    batch_size: int,
    *,
    shuffle: bool = True,
    seed: int = 0,
    workers: int | None = None,
    pin_memory: bool = False,
    rank: int = 0,
    world_size: int = 1,
) -> DataLoader:
    """A DataLoader of batches decoded from ``paths`` by ``workers`` processes (default: cores, at most 4).

    With ``world_size`` > 1 (torchrun) ``batch_size`` is the global batch, a multiple of
    ``world_size``: this rank decodes only its share, ``batch_size / world_size`` per batch.
    """
    workers = min(4, os.cpu_count() or 1) if workers is None else workers
    files = ImageFiles(paths, labels, input_shape)
    generator, sampler = torch.Generator(), None
    generator.manual_seed(seed)
    if world_size > 1:
        if batch_size % world_size:
            raise ConfigError(f"the batch size {batch_size} must be a multiple of the {world_size} processes")
        # drop_last: every rank gets len // world_size files, so all take the same number of steps.
        sampler = DistributedSampler(files, num_replicas=world_size, rank=rank, shuffle=shuffle, seed=seed,
                                     drop_last=True)  # fmt: skip
        batch_size, shuffle = batch_size // world_size, False
    return DataLoader(
        files, batch_size=batch_size, shuffle=shuffle, sampler=sampler, generator=generator,
        num_workers=workers, collate_fn=_collate, pin_memory=pin_memory, persistent_workers=workers > 0,
        worker_init_fn=_one_thread if workers else None, prefetch_factor=2 if workers else None,
    )  # fmt: skip


def shard_batches(loader: DataLoader, rank: int, world_size: int, seed: int = 0,
                  batch_size: int | None = None) -> DataLoader:  # fmt: skip
    """``loader`` (from :func:`file_batches`, global batches) as this rank's share under torchrun,
    in global batches of ``batch_size`` when given (``--batch-size auto``, found after the data was opened)."""
    files = loader.dataset
    return file_batches(files.paths, files.labels, files.input_shape, batch_size or loader.batch_size,
                        shuffle=isinstance(loader.sampler, RandomSampler), seed=seed, workers=loader.num_workers,
                        pin_memory=loader.pin_memory, rank=rank, world_size=world_size)  # fmt: skip
