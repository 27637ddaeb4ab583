"""The training engine: one loop behind ``Model.fit``, ``cnnkit train`` and torchrun.

Plain functions, read top to bottom. The data sit on the model's device as two tensors
and are batched there by indexing with a shuffled permutation: no per-sample Python,
no DataLoader workers, and no host synchronisation inside an epoch (running sums stay
on the device until the epoch ends).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Sequence

import torch
from torch import nn

from cnnkit.errors import TrainingError
from cnnkit.evaluate import count_correct, evaluate_tensors
from cnnkit.train.callbacks import Callback, CallbackList, History
from cnnkit.train.progress import TrainingProgress

__all__ = ["fit", "train_one_epoch"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Augment = Callable[[torch.Tensor], torch.Tensor]


def train_one_epoch(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    batch_size: int,
    metrics: dict[str, int],
    shuffle: bool = True,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment: Augment | None = None,
    generator: torch.Generator | None = None,
    on_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One pass over ``(x, y)`` in random batches; returns the epoch's mean loss and metrics."""
    model.train()
    n = len(x)
    order = torch.randperm(n, generator=generator) if shuffle else torch.arange(n)
    order = order.to(x.device)
    loss_sum = torch.zeros((), device=x.device)
    correct = {name: torch.zeros((), dtype=torch.long, device=x.device) for name in metrics}
    for start in range(0, n, batch_size):
        idx = order[start : start + batch_size]
        xb, yb = x[idx], y[idx]  # (B, C, H, W), (B,) or (B, classes)
        if augment is not None:
            xb = augment(xb)
        logits = model(xb)  # (B, classes)
        loss = loss_fn(logits, yb)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
        # Keep the running sums on the device: reading them every step would stall it.
        loss_sum += loss.detach() * len(idx)
        for name, k in metrics.items():
            correct[name] += count_correct(logits.detach(), yb, k)
        if on_step is not None:
            on_step()
    logs = {"loss": loss_sum.item() / n}
    logs.update({name: c.item() / n for name, c in correct.items()})
    return logs


def fit(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    *,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    epochs: int,
    batch_size: int = 32,
    validation: tuple[torch.Tensor, torch.Tensor] | None = None,
    metrics: dict[str, int] | None = None,
    callbacks: Sequence[Callback] = (),
    shuffle: bool = True,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment: Augment | None = None,
    initial_epoch: int = 0,
    verbose: int = 1,
    generator: torch.Generator | None = None,
) -> History:
    """Train ``model`` (which returns logits) on images ``x`` ``(N, C, H, W)`` and targets ``y``.

    Each epoch's logs (``loss``, each metric, and ``val_``-prefixed ones when
    ``validation`` is given) go to the callbacks and to the returned :class:`History`.
    """
    metrics = metrics or {}
    device = next(model.parameters()).device
    x, y = x.to(device), y.to(device)  # resident for the whole run
    if validation is not None:
        validation = (validation[0].to(device), validation[1].to(device))
    steps = math.ceil(len(x) / batch_size)
    history = History()
    model.stop_training = False
    hooks = CallbackList([history, *callbacks], model, {"epochs": epochs, "steps": steps, "verbose": verbose})
    progress = TrainingProgress(verbose, epochs, steps, initial_epoch)
    hooks.on_train_begin()
    try:
        for epoch in range(initial_epoch, epochs):
            started = time.perf_counter()
            hooks.on_epoch_begin(epoch)
            logs = train_one_epoch(
                model, x, y, loss_fn=loss_fn, optimizer=optimizer, batch_size=batch_size, metrics=metrics,
                shuffle=shuffle, scheduler=scheduler, augment=augment, generator=generator,
                on_step=progress.advance,
            )  # fmt: skip
            if not math.isfinite(logs["loss"]):
                raise TrainingError(
                    f"the training loss became {logs['loss']} in epoch {epoch + 1}: the learning rate is "
                    f"probably too high, or the inputs hold NaN/inf values; checkpoints saved so far are kept"
                )
            if validation is not None:
                val = evaluate_tensors(model, *validation, loss_fn, metrics, batch_size=max(256, batch_size))
                logs.update({f"val_{key}": value for key, value in val.items()})
            progress.end_epoch(epoch, logs, time.perf_counter() - started)
            hooks.on_epoch_end(epoch, logs)
            if model.stop_training:
                break
    finally:
        progress.close()
    hooks.on_train_end()
    return history
