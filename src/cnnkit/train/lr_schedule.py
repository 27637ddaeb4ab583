"""The per-step learning-rate schedule of ``cnnkit train`` (``--schedule``): a torch ``LRScheduler``.

Its names are :data:`cnnkit.train.optimizers.SCHEDULES`, declared there without torch so that the
command's help can list them; this module is the schedule itself. (Keras' own schedules, a
learning rate computed from the step count, are :mod:`~cnnkit.train.schedules`.)
"""

from __future__ import annotations

import math

import torch

from cnnkit.errors import ConfigError
from cnnkit.train.optimizers import SCHEDULES

__all__ = ["Schedule", "make_schedule"]

_SHAPES = tuple(name for name in SCHEDULES if name != "constant")  # "constant" is no schedule at all


class Schedule(torch.optim.lr_scheduler.LRScheduler):
    """A per-step multiplier of each group's peak learning rate; ``total_steps`` may be changed mid-run.

    ``onecycle``: linear warm-up from peak/10 to the peak, then linear decay to zero.
    ``cosine``: linear warm-up from zero, then cosine decay to zero. A wall-clock budget
    shortens a run by lowering ``total_steps``, so the rate still reaches zero at the end.
    """

    def __init__(self, optimizer: torch.optim.Optimizer, shape: str, total_steps: int,
                 warmup_fraction: float = 0.2) -> None:  # fmt: skip
        if shape not in _SHAPES:
            raise ConfigError(f"unknown schedule shape {shape!r}; a Schedule is {' or '.join(_SHAPES)}")
        self.shape, self.total_steps, self.warmup_fraction = shape, max(1, total_steps), warmup_fraction
        super().__init__(optimizer)

    def factor(self, step: int) -> float:
        warmup = max(1, round(self.warmup_fraction * self.total_steps))
        if step < warmup:
            return 0.1 + 0.9 * step / warmup if self.shape == "onecycle" else (step + 1) / warmup
        progress = min(1.0, (step - warmup) / max(1, self.total_steps - warmup))
        if self.shape == "onecycle":
            return 1.0 - progress
        return 0.5 * (1 + math.cos(math.pi * progress))

    def get_lr(self) -> list[float]:
        return [base * self.factor(self.last_epoch) for base in self.base_lrs]


def make_schedule(name: str, optimizer: torch.optim.Optimizer, total_steps: int) -> Schedule | None:
    """The per-step schedule called ``name``, one of :data:`SCHEDULES` (``constant`` gives none)."""
    if name == "constant":
        return None
    return Schedule(optimizer, name, total_steps)
