"""The largest batch that fits: ``--batch-size auto``, found by trying.

:func:`find_batch_size` doubles a batch size while a trial training step at that size runs
and its peak memory stays within a share of the memory that was free, then bisects between
the last size that fitted and the first that did not (Lightning's ``BatchSizeFinder`` in its
``binsearch`` mode, with Ultralytics' share-of-free-memory rule). An out-of-memory error is a
"does not fit", never a crash. :func:`trial_step` is the real trial (one forward and backward
pass, weights untouched) and :func:`free_memory` reads the GPU; both are arguments so that the
search is tested on the CPU with a simulated memory limit.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cnnkit.errors import TrainingError

__all__ = ["DEFAULT_SHARE", "find_batch_size", "free_memory", "trial_step"]

DEFAULT_SHARE = 0.8  # of the free memory: room for the allocator's fragmentation, validation and the EMA copy
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)

Trial = Callable[[int], int]  # batch size -> peak bytes the step used; raises torch.OutOfMemoryError


def find_batch_size(trial: Trial, free: int, *, share: float = DEFAULT_SHARE, start: int = 32,
                    largest: int = 4096) -> int:  # fmt: skip
    """The largest batch size up to ``largest`` whose ``trial`` step fits in ``share`` of ``free`` bytes.

    Args:
        trial: runs one training step with that many images and returns the peak bytes it
            allocated; raises ``torch.OutOfMemoryError`` when it does not fit at all.
        free: the device memory free before the search, in bytes.
        share: the part of ``free`` a step may use.
        start: the first size tried (halved while it does not fit, doubled while it does).
        largest: never more (e.g. the training images per process).

    Raises:
        TrainingError: not even one image fits.
    """
    budget = share * free

    def fits(batch: int) -> bool:
        try:
            return trial(batch) <= budget
        except _OOM:
            return False
        finally:
            if torch.cuda.is_available():
                torch.cuda.empty_cache()  # what the failed try allocated is not left to the next one

    low, high = 0, max(1, min(start, largest))  # the largest size known to fit; the next to try
    if fits(high):  # grow: double until a size does not fit, or the largest is reached
        low = high
        while low < largest:
            high = min(2 * low, largest)
            if not fits(high):
                break
            low = high
        if low == largest:
            return low
    else:  # shrink: halve until one fits
        while low == 0:
            if high == 1:
                raise TrainingError("not even a batch of one image fits in the device's memory: use a smaller "
                                    "--image-size or a smaller model")  # fmt: skip
            if fits(high // 2):
                low = high // 2
            else:
                high //= 2
    while high - low > 1:  # bisect: low fits, high does not
        middle = (low + high) // 2
        low, high = (middle, high) if fits(middle) else (low, middle)
    return low


def free_memory(device: torch.device) -> int:
    """Bytes free on a CUDA ``device`` now (``torch.cuda.mem_get_info``)."""
    free, _ = torch.cuda.mem_get_info(device)
    return int(free)


def trial_step(model: nn.Module, loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
               example: torch.Tensor, classes: int) -> Trial:  # fmt: skip
    """One forward and backward pass of ``model`` on a batch of copies of ``example`` ``(C, H, W)``.

    Returns the trial function for :func:`find_batch_size`: it reports CUDA's peak allocation
    during the step (0 on other devices, where only an out-of-memory error limits the size)
    and leaves the weights as they were (gradients are dropped; no optimizer step).
    """
    device = next(model.parameters()).device

    def trial(batch: int) -> int:
        cuda = device.type == "cuda"
        if cuda:
            torch.cuda.synchronize(device)
            torch.cuda.reset_peak_memory_stats(device)
            before = torch.cuda.memory_allocated(device)
        x = example.to(device).expand(batch, *example.shape).contiguous()  # (B, C, H, W)
        y = torch.arange(batch, device=device) % classes
        was_training = model.training
        buffers = [b.detach().clone() for b in model.buffers()]  # BatchNorm's statistics: put back after
        model.train()
        try:
            loss = loss_fn(model(x).float(), y)
            loss.backward()
            if cuda:
                torch.cuda.synchronize(device)
                return int(torch.cuda.max_memory_allocated(device) - before)
            return 0
        finally:
            model.zero_grad(set_to_none=True)
            model.train(was_training)
            with torch.no_grad():
                for buffer, saved in zip(model.buffers(), buffers):
                    buffer.copy_(saved)

    return trial
