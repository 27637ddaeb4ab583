"""Keras-style optimizer specs that build torch optimizers, and learning-rate schedules.

Keras creates an optimizer before the model has weights (``compile(optimizer=Adam(1e-3))``);
these classes hold the settings, with Keras' argument names and defaults, and ``build``
the torch optimizer once the parameters exist. Keras' ``clipnorm`` (each gradient's norm),
``clipvalue`` and ``global_clipnorm``, and a ``learning_rate`` that is a
:mod:`~cnnkit.train.schedules` schedule, become step pre-hooks of that torch optimizer, so
every loop that steps it (``fit``, or your own) gets them. The per-step schedule ``cnnkit train``
runs (``--schedule``) is :mod:`~cnnkit.train.lr_schedule`.

torch is imported where an optimizer is built, not with this module: ``cnnkit train --help`` lists
:data:`OPTIMIZERS` and :data:`SCHEDULES` without paying for it.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import TYPE_CHECKING, Any

from cnnkit._keras_names import missing
from cnnkit.errors import ConfigError
from cnnkit.train import schedules
from cnnkit.train.schedules import LearningRateSchedule

if TYPE_CHECKING:
    import torch

__all__ = ["OPTIMIZERS", "SCHEDULES", "SGD", "Adam", "AdamW", "Optimizer", "RMSprop", "decay_groups", "get",
           "match_state_layout", "schedules"]  # fmt: skip

Params = Iterable["torch.nn.Parameter"] | Iterable[dict[str, Any]]


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
    """Base: holds settings; ``build(params)`` returns a ``torch.optim.Optimizer``.

    ``learning_rate`` is a number or a :class:`~cnnkit.train.schedules.LearningRateSchedule`.
    ``clipnorm`` clips each gradient's norm, ``clipvalue`` each element, ``global_clipnorm`` the
    norm of all gradients together, as in Keras.
    """

    name = "optimizer"

    def __init__(self, learning_rate: float | LearningRateSchedule, weight_decay: float | None = None, *,
                 clipnorm: float | None = None, clipvalue: float | None = None, global_clipnorm: float | None = None,
                 **keras_only: Any) -> None:  # fmt: skip
        if isinstance(learning_rate, dict):  # a schedule's config, from a model file
            learning_rate = schedules.get(learning_rate)
        if not isinstance(learning_rate, LearningRateSchedule) and not learning_rate > 0:
            raise ConfigError(f"learning_rate must be positive, got {learning_rate}")
        if keras_only.pop("use_ema", False):
            raise ConfigError("use_ema=True: cnnkit averages weights with `cnnkit train --ema 0.999` (EMA)")
        unknown = sorted(set(keras_only) - {"name", "ema_momentum", "ema_overwrite_frequency", "loss_scale_factor"})
        if unknown:
            raise ConfigError(f"{type(self).__name__} does not take {', '.join(unknown)}")
        if clipnorm is not None and global_clipnorm is not None:
            raise ConfigError("pass clipnorm or global_clipnorm, not both (as in Keras)")
        self.learning_rate = learning_rate if isinstance(learning_rate, LearningRateSchedule) else float(learning_rate)
        self.weight_decay = float(weight_decay or 0.0)
        self.clipnorm, self.clipvalue, self.global_clipnorm = clipnorm, clipvalue, global_clipnorm

    @property
    def _lr0(self) -> float:
        """The learning rate of the first step."""
        rate = self.learning_rate
        return rate(0) if isinstance(rate, LearningRateSchedule) else rate

    def build(self, params: Params) -> torch.optim.Optimizer:
        """The torch optimizer over ``params`` (parameters, or groups from :func:`decay_groups`)."""
        optimizer = self._build(list(params))
        if self.clipnorm or self.clipvalue or self.global_clipnorm:
            optimizer.register_step_pre_hook(self._clip)
        if isinstance(self.learning_rate, LearningRateSchedule):
            optimizer.register_step_pre_hook(self._schedule)
        return optimizer

    def _build(self, params: list[Any]) -> torch.optim.Optimizer:
        raise NotImplementedError

    def _clip(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        import torch

        params = [p for group in optimizer.param_groups for p in group["params"] if p.grad is not None]
        grads = [p.grad for p in params]
        if not grads:
            return
        if self.clipvalue:
            torch._foreach_clamp_min_(grads, -self.clipvalue)
            torch._foreach_clamp_max_(grads, self.clipvalue)
        if self.clipnorm:  # each gradient on its own, as Keras' clipnorm
            for grad, norm in zip(grads, torch._foreach_norm(grads)):
                grad.mul_(torch.clamp(self.clipnorm / (norm + 1e-12), max=1.0))
        if self.global_clipnorm:
            torch.nn.utils.clip_grad_norm_(params, self.global_clipnorm, foreach=True)

    def _schedule(self, optimizer: torch.optim.Optimizer, args: Any, kwargs: Any) -> None:
        # The step count lives in the param groups, so it travels in the optimizer's state_dict (resume, save).
        step = int(optimizer.param_groups[0].get("iterations", 0))
        rate = self.learning_rate(step)
        for group in optimizer.param_groups:
            group["lr"], group["iterations"] = rate, step + 1

    def get_config(self) -> dict[str, Any]:
        config = {"name": self.name, **{k: v for k, v in vars(self).items() if not k.startswith("_")}}
        if isinstance(self.learning_rate, LearningRateSchedule):
            config["learning_rate"] = self.learning_rate.get_config()
        return {k: v for k, v in config.items() if v is not None}


class Adam(Optimizer):
    """Adam (Keras defaults: learning_rate=1e-3, beta_1=0.9, beta_2=0.999, epsilon=1e-7)."""

    name = "adam"

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.001, beta_1: float = 0.9,
                 beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False,
                 weight_decay: float | None = None, **clip: Any) -> None:  # fmt: skip
        super().__init__(learning_rate, weight_decay, **clip)
        self.beta_1, self.beta_2, self.epsilon, self.amsgrad = beta_1, beta_2, epsilon, bool(amsgrad)

    def _build(self, params: list[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.Adam(params, lr=self._lr0, betas=(self.beta_1, self.beta_2), eps=self.epsilon,
                                amsgrad=self.amsgrad, weight_decay=self.weight_decay,
                                fused=_fused_ok(params))  # fmt: skip


class AdamW(Adam):
    """AdamW, decoupled weight decay (Keras' default weight_decay=0.004)."""

    name = "adamw"

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.001, weight_decay: float = 0.004,
                 beta_1: float = 0.9, beta_2: float = 0.999, epsilon: float = 1e-7, amsgrad: bool = False,
                 **clip: Any) -> None:  # fmt: skip
        super().__init__(learning_rate, beta_1, beta_2, epsilon, amsgrad, weight_decay, **clip)

    def _build(self, params: list[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.AdamW(params, lr=self._lr0, betas=(self.beta_1, self.beta_2), eps=self.epsilon,
                                 amsgrad=self.amsgrad, weight_decay=self.weight_decay,
                                 fused=_fused_ok(params))  # fmt: skip


class SGD(Optimizer):
    """SGD with optional (Nesterov) momentum (Keras defaults: learning_rate=0.01, momentum=0)."""

    name = "sgd"

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.01, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float | None = None, **clip: Any) -> None:  # fmt: skip
        super().__init__(learning_rate, weight_decay, **clip)
        if nesterov and momentum <= 0:
            raise ConfigError("SGD(nesterov=True) needs momentum > 0")
        self.momentum, self.nesterov = momentum, nesterov

    def _build(self, params: list[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.SGD(params, lr=self._lr0, momentum=self.momentum, nesterov=self.nesterov,
                               weight_decay=self.weight_decay, fused=_fused_ok(params))  # fmt: skip


class RMSprop(Optimizer):
    """RMSprop (Keras defaults: learning_rate=1e-3, rho=0.9, momentum=0, epsilon=1e-7)."""

    name = "rmsprop"

    def __init__(self, learning_rate: float | LearningRateSchedule = 0.001, rho: float = 0.9, momentum: float = 0.0,
                 epsilon: float = 1e-7, centered: bool = False, weight_decay: float | None = None,
                 **clip: Any) -> None:  # fmt: skip
        super().__init__(learning_rate, weight_decay, **clip)
        self.rho, self.momentum, self.epsilon, self.centered = rho, momentum, epsilon, bool(centered)

    def _build(self, params: list[Any]) -> torch.optim.Optimizer:
        import torch

        return torch.optim.RMSprop(params, lr=self._lr0, alpha=self.rho, eps=self.epsilon,
                                   momentum=self.momentum, centered=self.centered,
                                   weight_decay=self.weight_decay)  # fmt: skip


OPTIMIZERS: dict[str, type[Optimizer]] = {cls.name: cls for cls in (Adam, AdamW, SGD, RMSprop)}
SCHEDULES = ("onecycle", "cosine", "constant")  # what lr_schedule.make_schedule builds ("constant": none at all)


def match_state_layout(optimizer: torch.optim.Optimizer) -> None:
    """Give each parameter's state tensors (Adam's moments, SGD's momentum) the parameter's memory layout.

    Fused optimizers walk a parameter's memory and its state's side by side: a moment left
    contiguous beside a channels-last weight (a checkpoint loaded, a model converted between two
    ``fit`` calls) would be updated from the wrong elements, silently.
    """
    import torch

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


def __getattr__(name: str) -> Any:
    raise missing(__name__, name)
