"""The training engine: one loop behind ``Model.fit``, ``cnnkit train`` and torchrun.

Plain functions, read top to bottom. The data sit on the model's device as two tensors
and are batched there by indexing with a shuffled permutation: no per-sample Python,
no DataLoader workers, and no host synchronisation inside an epoch (running sums stay
on the device until the epoch ends).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence

import torch
from torch import nn

from cnnkit.errors import TrainingError
from cnnkit.evaluate import count_correct, evaluate_tensors
from cnnkit.train.callbacks import Callback, CallbackList, History
from cnnkit.train.progress import TrainingProgress

__all__ = ["Batches", "TensorBatches", "fit", "train_one_epoch"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Augment = Callable[[torch.Tensor], torch.Tensor]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # sized: len() is the number of batches


class TensorBatches:
    """The in-memory fast path: a data set as two tensors on the device, batched by indexing.

    Each pass draws a new permutation (from ``generator``) and slices it: one gather per
    batch, no per-sample Python, no worker processes.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = True,
                 generator: torch.Generator | None = None) -> None:  # fmt: skip
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.generator = shuffle, generator

    def __len__(self) -> int:
        return math.ceil(len(self.x) / self.batch_size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.x.device)
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            yield self.x[idx], self.y[idx]  # (B, C, H, W), (B,) or (B, classes)


def train_one_epoch(
    model: nn.Module,
    batches: Batches,
    *,
    loss_fn: LossFn,
    optimizer: torch.optim.Optimizer,
    metrics: dict[str, int],
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    augment: Augment | None = None,
    on_step: Callable[[], None] | None = None,
) -> dict[str, float]:
    """One pass over ``batches``; returns the epoch's mean loss and metrics."""
    model.train()
    device = next(model.parameters()).device
    loss_sum = torch.zeros((), device=device)
    correct = {name: torch.zeros((), dtype=torch.long, device=device) for name in metrics}
    seen = 0
    for xb, yb in batches:
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
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
        loss_sum += loss.detach() * len(yb)
        for name, k in metrics.items():
            correct[name] += count_correct(logits.detach(), yb, k)
        seen += len(yb)
        if on_step is not None:
            on_step()
    seen = max(seen, 1)
    logs = {"loss": loss_sum.item() / seen}
    logs.update({name: c.item() / seen for name, c in correct.items()})
    return logs


def fit(
    model: nn.Module,
    train: tuple[torch.Tensor, torch.Tensor] | Batches,
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
    """Train ``model`` (which returns logits) on ``train`` and return the History.

    ``train`` is either ``(x, y)`` — images ``(N, C, H, W)`` and targets, moved to the
    model's device once and batched there — or any sized iterable of ``(images, targets)``
    batches, such as a ``torch.utils.data.DataLoader`` for data that does not fit in memory.
    Each epoch's logs (``loss``, each metric, and ``val_``-prefixed ones when ``validation``
    is given) go to the callbacks and to the returned :class:`History`.
    """
    metrics = metrics or {}
    device = next(model.parameters()).device
    if isinstance(train, tuple):
        x, y = train
        train = TensorBatches(x.to(device), y.to(device), batch_size, shuffle=shuffle, generator=generator)
    if validation is not None:
        validation = (validation[0].to(device), validation[1].to(device))
    steps = len(train)
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
                model, train, loss_fn=loss_fn, optimizer=optimizer, metrics=metrics,
                scheduler=scheduler, augment=augment, on_step=progress.advance,
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
