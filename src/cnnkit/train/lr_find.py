"""The learning-rate finder (Smith 2015; fastai's ``lr_find``): a short run with a rising rate.

The rate grows exponentially from ``start`` to ``end`` over at most ``steps`` batches while
the (smoothed) loss is recorded; it stops once the loss explodes. The suggestion is fastai's
"valley" point, a good peak rate for a one-cycle schedule. The model and optimizer are put
back exactly as they were afterwards.
"""

from __future__ import annotations

import copy
import math
from collections.abc import Callable
from dataclasses import dataclass

import torch
from torch import nn

from cnnkit.errors import TrainingError
from cnnkit.train.loop import Batches, Stepper, TensorBatches
from cnnkit.train.settings import Augment

__all__ = ["LRFindResult", "lr_find"]


@dataclass(frozen=True)
class LRFindResult:
    """The rates tried, their smoothed losses, and the suggested peak rate."""

    lrs: list[float]
    losses: list[float]
    suggestion: float


def lr_find(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor] | Batches,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    optimizer: torch.optim.Optimizer,
    *,
    start: float = 1e-7,
    end: float = 10.0,
    steps: int = 100,
    batch_size: int = 64,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
) -> LRFindResult:
    """Sweep the learning rate of ``optimizer`` over ``model``; restore both afterwards."""
    saved_model, saved_optimizer = copy.deepcopy(model.state_dict()), copy.deepcopy(optimizer.state_dict())
    if isinstance(train, tuple):
        train = TensorBatches(*train, batch_size, generator=generator)
    factor = (end / start) ** (1 / max(1, steps - 1))
    step = Stepper(model, loss_fn, optimizer)  # augmented below, as the training loop does
    lrs, losses, smooth, best = [], [], 0.0, math.inf
    try:
        while len(lrs) < steps:
            for xb, yb in train:
                lr = start * factor ** len(lrs)
                for group in optimizer.param_groups:
                    group["lr"] = lr
                xb, yb = xb.to(step.device), yb.to(step.device)
                if augment is not None:
                    xb, yb = augment(xb, yb)
                loss, _, _ = step(xb, yb)
                value = float(loss)
                smooth = 0.98 * smooth + 0.02 * value  # exponential smoothing, bias-corrected below
                smoothed = smooth / (1 - 0.98 ** (len(lrs) + 1))
                lrs.append(lr)
                losses.append(smoothed)
                best = min(best, smoothed)
                if not math.isfinite(value) or smoothed > 4 * best or len(lrs) >= steps:
                    break
            else:
                continue
            break
    finally:
        model.load_state_dict(saved_model)
        optimizer.load_state_dict(saved_optimizer)
    if len(lrs) < 10:
        raise TrainingError("the learning-rate finder needs at least 10 steps: use a smaller batch size or more data")
    return LRFindResult(lrs, losses, _valley(lrs, losses))


def _valley(lrs: list[float], losses: list[float]) -> float:
    """fastai's "valley": the point two-thirds of the way down the longest falling stretch of the loss.

    The stretch is the longest decreasing subsequence of the smoothed losses; its lower part is
    where the loss still falls steadily but is well away from the blow-up.
    """
    n = len(losses)
    run = [1] * n  # length of the longest decreasing subsequence ending at i
    start = end = 0
    for i in range(1, n):
        for j in range(i):
            if losses[i] < losses[j] and run[i] < run[j] + 1:
                run[i] = run[j] + 1
        if run[end] < run[i]:
            end, start = i, i - run[i]
    third = (end - start) / 3
    return float(lrs[max(0, start + int(third) + int(third / 2))])
