"""Fine-tuning a pretrained model the way fastai's ``fine_tune`` does.

1. The model already has a new head (see :func:`cnnkit.models.weights.load_pretrained`).
2. For ``freeze_epochs`` epochs only the head learns (at the full learning rate), while the
   body is frozen, except its BatchNorm layers: they keep learning their scale/shift and
   keep updating their statistics, so the pretrained features adapt to the new images'
   statistics (fastai's ``train_bn``).
3. Then everything learns, with discriminative learning rates: the head at ``lr / 2``,
   the later half of the body 10x lower and the earlier half 100x lower, because early
   layers hold generic features (edges, colors) that need the least change.

Both phases follow the configured schedule (one-cycle by default) in one engine run: one
optimizer with a parameter group per part, one per-step scheduler whose curve restarts at
the phase boundary, and a callback that freezes and unfreezes the body by epoch number
(so a resumed run freezes exactly as the original did).
"""

from __future__ import annotations

import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnkit.errors import ConfigError
from cnnkit.models.weights import head_name
from cnnkit.train import loop, losses, lr_schedule, optimizers
from cnnkit.train.callbacks import Callback, History

__all__ = ["FineTunePlan", "FreezeBody", "fine_tune", "parameter_groups", "plan_fine_tune", "set_body_frozen"]

LR_MULT = 100  # the earliest layers learn this many times slower than the head (fastai's lr_mult)


def parameter_groups(model: nn.Module) -> list[list[nn.Parameter]]:
    """``[head, later body, earlier body]``: the head is the last Linear layer; the body is split in half.

    The head comes first so ``optimizer.param_groups[0]`` (what logs show as ``lr``) is its rate.
    """
    head_prefix = head_name(model) + "."
    head = [p for name, p in model.named_parameters() if name.startswith(head_prefix)]
    body = [p for name, p in model.named_parameters() if not name.startswith(head_prefix)]
    middle = len(body) // 2  # parameters are registered in forward order in every registered model
    return [head, body[middle:], body[:middle]]


def set_body_frozen(model: nn.Module, frozen: bool) -> None:
    """Freeze (or unfreeze) everything but the head and the BatchNorm layers."""
    head_prefix = head_name(model) + "."
    batchnorm = {id(p) for m in model.modules() if isinstance(m, nn.modules.batchnorm._BatchNorm)
                 for p in m.parameters()}  # fmt: skip
    for name, p in model.named_parameters():
        if not name.startswith(head_prefix) and id(p) not in batchnorm:
            p.requires_grad_(not frozen)


class FreezeBody(Callback):
    """Keeps the body frozen during the first ``freeze_epochs`` epochs, unfrozen after (and at the end)."""

    def __init__(self, freeze_epochs: int) -> None:
        super().__init__()
        self.freeze_epochs = freeze_epochs

    def on_epoch_begin(self, epoch: int, logs: dict[str, float] | None = None) -> None:
        set_body_frozen(self.model, epoch < self.freeze_epochs)

    def on_train_end(self, logs: dict[str, float] | None = None) -> None:
        set_body_frozen(self.model, False)


def _schedule_curve(schedule: str, steps: int) -> list[float]:
    """The schedule's learning-rate factor at each of ``steps`` steps (1.0 = the peak).

    Read off the engine's own schedule on a one-parameter probe, so fine-tuning follows
    exactly the shapes ``--schedule`` gives ordinary training.
    """
    probe = torch.optim.SGD([torch.zeros(1, requires_grad=True)], lr=1.0)
    scheduler = lr_schedule.make_schedule(schedule, probe, max(steps, 1))
    curve = []
    probe.step()  # schedulers expect an optimizer step before their own
    for _ in range(max(steps, 1)):
        curve.append(probe.param_groups[0]["lr"])
        if scheduler is not None:
            scheduler.step()
    return curve


@dataclass
class FineTunePlan:
    """What the engine needs to fine-tune: pass these to :func:`cnnkit.train.loop.fit`."""

    optimizer: torch.optim.Optimizer
    scheduler: torch.optim.lr_scheduler.LRScheduler
    callbacks: list[Callback]
    epochs: int  # freeze_epochs + epochs


def plan_fine_tune(
    model: nn.Module,
    optimizer: str | optimizers.Optimizer | dict[str, Any],
    *,
    lr: float,
    epochs: int,
    freeze_epochs: int,
    steps_per_epoch: int,
    schedule: str = "onecycle",
) -> FineTunePlan:
    """An optimizer, scheduler and callback for ``freeze_epochs`` head-only epochs then ``epochs`` of all layers."""
    if epochs < 1 or freeze_epochs < 0 or steps_per_epoch < 1:
        raise ConfigError("fine-tuning needs epochs >= 1, freeze_epochs >= 0 and at least one step per epoch")
    groups = parameter_groups(model)
    # Peak rates per group [head, later body, earlier body], as fastai: frozen phase slice(lr),
    # unfrozen phase slice(lr / 2 / LR_MULT, lr / 2), spaced geometrically.
    frozen_peaks = [lr, lr / 10, lr / 10]
    tuned_peaks = [lr / 2 * LR_MULT ** (-i / (len(groups) - 1)) for i in range(len(groups))]
    spec = optimizers.get(optimizer)
    built = spec.build([{"params": g, "lr": peak} for g, peak in zip(groups, tuned_peaks) if g])
    kept = [i for i, g in enumerate(groups) if g]
    freeze_steps = freeze_epochs * steps_per_epoch
    frozen_curve = _schedule_curve(schedule, freeze_steps) if freeze_steps else []
    tuned_curve = _schedule_curve(schedule, epochs * steps_per_epoch)

    def factor(i: int) -> Callable[[int], float]:
        ratio = frozen_peaks[i] / tuned_peaks[i]

        def at(step: int) -> float:
            if step < freeze_steps:
                return ratio * frozen_curve[step]
            return tuned_curve[min(step - freeze_steps, len(tuned_curve) - 1)]

        return at

    scheduler = torch.optim.lr_scheduler.LambdaLR(built, [factor(i) for i in kept])
    return FineTunePlan(built, scheduler, [FreezeBody(freeze_epochs)], freeze_epochs + epochs)


def fine_tune(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor] | loop.Batches,
    *,
    epochs: int,
    loss: str | losses.Loss | loop.LossFn = "sparse_categorical_crossentropy",
    freeze_epochs: int = 1,
    lr: float = 2e-3,
    optimizer: str | optimizers.Optimizer = "adam",
    schedule: str = "onecycle",
    batch_size: int = 32,
    callbacks: Sequence[Callback] = (),
    **fit_kwargs: Any,
) -> History:
    """fastai's ``fine_tune`` on cnnkit's engine: head first, then all layers with discriminative rates.

    ``loss`` is a Keras loss (name or object, applied to the logits) or any ``fn(logits, targets)``;
    ``train`` and the other keyword arguments are those of :func:`cnnkit.train.loop.fit`.
    """
    if isinstance(loss, (str, dict, losses.Loss)):
        loss = losses.resolve(losses.get(loss), getattr(model, "output_activation", "linear"))
    steps = math.ceil(len(train[0]) / batch_size) if isinstance(train, tuple) else len(train)
    plan = plan_fine_tune(model, optimizer, lr=lr, epochs=epochs, freeze_epochs=freeze_epochs,
                          steps_per_epoch=steps, schedule=schedule)  # fmt: skip
    if hasattr(model, "optimizer"):
        model.optimizer = plan.optimizer  # logs read the learning rate from it
    return loop.fit(model, train, loss_fn=loss, optimizer=plan.optimizer, scheduler=plan.scheduler,
                    epochs=plan.epochs, batch_size=batch_size, callbacks=[*callbacks, *plan.callbacks],
                    **fit_kwargs)  # fmt: skip
