"""Keras-style optimizer specs that build torch optimizers, and learning-rate schedules.

Keras creates an optimizer before the model has weights (``compile(optimizer=Adam(1e-3))``);
these classes hold the settings, with Keras' argument names and defaults, and ``build``
the torch optimizer once the parameters exist.
"""

from __future__ import annotations

import math
from collections.abc import Iterable
from typing import Any

import torch

from cnnkit.errors import ConfigError

__all__ = ["SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "get", "make_schedule"]


class Optimizer:
    """Base: holds settings; ``build(params)`` returns a ``torch.optim.Optimizer``."""

    name = "optimizer"

    def __init__(self, learning_rate: float, weight_decay: float | None = None) -> None:
        if not learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {learning_rate}")
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay or 0.0)

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}


class Adam(Optimizer):
    """Adam (Keras defaults: learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7)."""

    name = "adam"

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, weight_decay: float | None = None) -> None:  # fmt: skip
        super().__init__(learning_rate, weight_decay)
        self.beta_1, self.beta_2, self.epsilon = beta_1, beta_2, epsilon

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.Adam(params, lr=self.learning_rate, betas=(self.beta_1, self.beta_2),
                                eps=self.epsilon, weight_decay=self.weight_decay)  # fmt: skip


class AdamW(Adam):
    """AdamW, decoupled weight decay (Keras' default weight_decay=0.004)."""

    name = "adamw"

    def __init__(self, learning_rate: float = 0.001, weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7) -> None:  # fmt: skip
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay)

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.AdamW(params, lr=self.learning_rate, betas=(self.beta_1, self.beta_2),
                                 eps=self.epsilon, weight_decay=self.weight_decay)  # fmt: skip


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum (Keras defaults: learning_rate=0.01, momentum=0)."""

    name = "sgd"

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float | None = None) -> None:  # fmt: skip
        super().__init__(learning_rate, weight_decay)
        if nesterov and momentum <= 0:
            raise ConfigError("SGD(nesterov=True) needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.SGD(params, lr=self.learning_rate, momentum=self.momentum,
                               nesterov=self.nesterov, weight_decay=self.weight_decay)  # fmt: skip


class RMSprop(Optimizer):
    """RMSprop (Keras defaults: learning_rate=1e-3, rho=0.9, momentum=0, epsilon=1e-7)."""

    name = "rmsprop"

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, weight_decay: float | None = None) -> None:  # fmt: skip
        super().__init__(learning_rate, weight_decay)
        self.rho, self.momentum, self.epsilon = rho, momentum, epsilon

    def build(self, params: Iterable[torch.nn.Parameter]) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(params, lr=self.learning_rate, alpha=self.rho, eps=self.epsilon,
                                   momentum=self.momentum, weight_decay=self.weight_decay)  # fmt: skip


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (Adam, AdamW, SGD, RMSprop)}


def get(optimizer: str | Optimizer | dict[str, Any]) -> Optimizer:
    """An optimizer spec by Keras name (``"adam"``), from its config, or as given."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    config = dict(optimizer) if isinstance(optimizer, dict) else {"name": optimizer}
    name = str(config.pop("name", "")).lower()
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; cnnkit has: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](**config)


def make_schedule(
    name: str, optimizer: torch.optim.Optimizer, total_steps: int, warmup_fraction: float = 0.2
) -> torch.optim.lr_scheduler.LRScheduler | None:
    """A per-step learning-rate schedule around the optimizer's learning rate (its peak).

    ``constant``: none. ``onecycle``: linear warm-up from peak/10 to the peak, then linear
    decay to zero. ``cosine``: linear warm-up, then cosine decay to zero.
    """
    if name == "constant":
        return None
    warmup = max(1, round(warmup_fraction * total_steps))

    def onecycle(step: int) -> float:
        if step < warmup:
            return 0.1 + 0.9 * step / warmup
        return max(0.0, (total_steps - step) / max(1, total_steps - warmup))

    def cosine(step: int) -> float:
        if step < warmup:
            return (step + 1) / warmup
        progress = (step - warmup) / max(1, total_steps - warmup)
        return 0.5 * (1 + math.cos(math.pi * min(1.0, progress)))

    shapes = {"onecycle": onecycle, "cosine": cosine}
    if name not in shapes:
        raise ConfigError(f"unknown schedule {name!r}; choose constant, onecycle or cosine")
    return torch.optim.lr_scheduler.LambdaLR(optimizer, shapes[name])
