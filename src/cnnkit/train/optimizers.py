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

__all__ = ["OPTIMIZERS", "SCHEDULES", "SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "Schedule",
           "decay_groups", "get", "make_schedule", "match_state_layout"]  # fmt: skip

Params = Iterable[torch.nn.Parameter] | Iterable[dict[str, Any]]


def decay_groups(model: torch.nn.Module, weight_decay: float) -> list[dict[str, Any]]:
    """Parameter groups that apply weight decay to weights only, never to biases or norm scales.

    Decaying a BatchNorm scale or a bias only fights the normalization; every 1-D parameter
    is one of those.
    """
    params = [p for p in model.parameters() if p.requires_grad]
    return [
        {"params": [p for p in params if p.ndim > 1], "weight_decay": weight_decay},
        {"params": [p for p in params if p.ndim <= 1], "weight_decay": 0.0},
    ]


def _fused_ok(params: list[Any]) -> bool:
    """torch's fused kernels need every parameter as a floating tensor on one CPU/CUDA device."""
    tensors = [p for item in params for p in (item["params"] if isinstance(item, dict) else [item])]
    devices = {t.device.type for t in tensors}
    return (
        bool(tensors)
        and len(devices) == 1
        and devices <= {"cpu", "cuda"}
        and all(t.is_floating_point() for t in tensors)
    )


class Optimizer:
    """Base: holds settings; ``build(params)`` returns a ``torch.optim.Optimizer``."""

    name = "optimizer"

    def __init__(self, learning_rate: float, weight_decay: float | None = None) -> None:
        if not learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {learning_rate}")
        self.learning_rate = float(learning_rate)
        self.weight_decay = float(weight_decay or 0.0)

    def build(self, params: Params) -> torch.optim.Optimizer:
        """The torch optimizer over ``params`` (parameters, or groups from :func:`decay_groups`)."""
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

    def build(self, params: Params) -> torch.optim.Optimizer:
        params = list(params)
        return torch.optim.Adam(params, lr=self.learning_rate, betas=(self.beta_1, self.beta_2), eps=self.epsilon,
                                weight_decay=self.weight_decay, fused=_fused_ok(params))  # fmt: skip


class AdamW(Adam):
    """AdamW, decoupled weight decay (Keras' default weight_decay=0.004)."""

    name = "adamw"

    def __init__(self, learning_rate: float = 0.001, weight_decay: float = 0.004, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7) -> None:  # fmt: skip
        super().__init__(learning_rate, beta_1, beta_2, epsilon, weight_decay)

    def build(self, params: Params) -> torch.optim.Optimizer:
        params = list(params)
        return torch.optim.AdamW(params, lr=self.learning_rate, betas=(self.beta_1, self.beta_2), eps=self.epsilon,
                                 weight_decay=self.weight_decay, fused=_fused_ok(params))  # fmt: skip


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum (Keras defaults: learning_rate=0.01, momentum=0)."""

    name = "sgd"

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 weight_decay: float | None = None) -> None:  # fmt: skip
        super().__init__(learning_rate, weight_decay)
        if nesterov and momentum <= 0:
            raise ConfigError("SGD(nesterov=True) needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov

    def build(self, params: Params) -> torch.optim.Optimizer:
        params = list(params)
        return torch.optim.SGD(params, lr=self.learning_rate, momentum=self.momentum, nesterov=self.nesterov,
                               weight_decay=self.weight_decay, fused=_fused_ok(params))  # fmt: skip


class RMSprop(Optimizer):
    """RMSprop (Keras defaults: learning_rate=1e-3, rho=0.9, momentum=0, epsilon=1e-7)."""

    name = "rmsprop"

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, weight_decay: float | None = None) -> None:  # fmt: skip
        super().__init__(learning_rate, weight_decay)
        self.rho, self.momentum, self.epsilon = rho, momentum, epsilon

    def build(self, params: Params) -> torch.optim.Optimizer:
        return torch.optim.RMSprop(params, lr=self.learning_rate, alpha=self.rho, eps=self.epsilon,
                                   momentum=self.momentum, weight_decay=self.weight_decay)  # fmt: skip


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (Adam, AdamW, SGD, RMSprop)}
_SHAPES = ("onecycle", "cosine")  # the shapes of a Schedule
SCHEDULES = (*_SHAPES, "constant")  # what make_schedule builds ("constant": no schedule at all)


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each parameter's state tensors (Adam's moments, SGD's momentum) the parameter's memory layout.

    Fused optimizers walk a parameter's memory and its state's side by side: a moment left
    contiguous beside a channels-last weight (a checkpoint loaded, a model converted between two
    ``fit`` calls) would be updated from the wrong elements, silently.
    """
    for group in optimizer.param_groups:
        for p in group["params"]:
            state = optimizer.state.get(p, {})
            for name, value in state.items():
                if isinstance(value, torch.Tensor) and value.shape == p.shape and value.stride() != p.stride():
                    state[name] = torch.empty_like(p, dtype=value.dtype).copy_(value)


def get(optimizer: str | Optimizer | dict[str, Any]) -> Optimizer:
    """An optimizer spec by Keras name (``"adam"``), from its config, or as given."""
    if isinstance(optimizer, Optimizer):
        return optimizer
    config = dict(optimizer) if isinstance(optimizer, dict) else {"name": optimizer}
    name = str(config.pop("name", "")).lower()
    if name not in OPTIMIZERS:
        raise ConfigError(f"unknown optimizer {name!r}; cnnkit has: {', '.join(OPTIMIZERS)}")
    return OPTIMIZERS[name](**config)


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
