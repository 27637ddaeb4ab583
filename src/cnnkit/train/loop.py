"""The training engine: one loop behind ``Model.fit``, ``cnnkit train`` and torchrun.

Plain functions and one small class, read top to bottom:

- :class:`TensorBatches` keeps an in-memory data set on the device and batches it by
  indexing a shuffled permutation (no per-sample Python, no workers);
- :class:`Stepper` does one optimization step: forward under autocast, loss, backward,
  clipping, a skip of non-finite steps *on the device*, the optimizer and schedule, EMA,
  run as its :class:`~cnnkit.train.settings.TrainSettings` say;
- :func:`train_one_epoch` runs the steps and keeps running sums on the device, so nothing
  waits for the device inside an epoch (the progress bar reads them at most twice a second);
- :func:`fit` runs the epochs, validation and callbacks.

Under torchrun (see :mod:`cnnkit.train.distributed`) the same loop trains data-parallel:
each rank takes its share of every global batch, DistributedDataParallel averages the
gradients, a step that is non-finite on any rank is skipped on all, and the logs are sums
over every rank divided by every rank's counts, so they describe the whole data set.
"""

from __future__ import annotations

import dataclasses
import math
import time
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import nullcontext

import torch
from torch import nn

from cnnkit.errors import ConfigError, TrainingError
from cnnkit.evaluate import count_correct, evaluate_tensors
from cnnkit.kernels import fuse
from cnnkit.kernels.small_maps import small_map_convs
from cnnkit.runtime import prefer_channels_last, tune_cpu_allocator
from cnnkit.train import distributed
from cnnkit.train.callbacks import Callback, CallbackList, History
from cnnkit.train.distributed import SINGLE, World
from cnnkit.train.ema import EMA
from cnnkit.train.optimizers import match_state_layout
from cnnkit.train.precision import step_autocast
from cnnkit.train.progress import TrainingProgress
from cnnkit.train.settings import Augment, TrainSettings

__all__ = ["Augment", "Batches", "Stepper", "TensorBatches", "fit", "train_one_epoch"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]
Batches = Iterable[tuple[torch.Tensor, torch.Tensor]]  # sized: len() is the number of batches
_OOM = getattr(torch, "OutOfMemoryError", torch.cuda.OutOfMemoryError)
SYNC_EVERY = 16  # under torchrun: steps between sums over the ranks for the progress bar's running values


class TensorBatches:
    """The in-memory fast path: a data set as two tensors on the device, batched by indexing.

    Each pass draws a new permutation (from ``generator``) and slices it: one gather per batch.
    With a distributed ``world`` every rank draws the same permutation (the generators are
    seeded alike) and takes every ``world.size``-th image of each global batch of
    ``batch_size``, starting at its rank: together the ranks train on exactly the batches one
    process would. A last batch keeps a multiple of ``world.size`` images, so ranks stay equal.
    ``x`` may be anything indexed like a tensor with a ``device``: the decoded-image cache's
    :class:`~cnnkit.data.decoded_cache.MappedImages` reads each batch's rows from disk.
    """

    def __init__(self, x: torch.Tensor, y: torch.Tensor, batch_size: int, *, shuffle: bool = True,
                 generator: torch.Generator | None = None, world: World = SINGLE) -> None:  # fmt: skip
        self.x, self.y, self.batch_size = x, y, batch_size
        self.shuffle, self.generator, self.world = shuffle, generator, world

    def __len__(self) -> int:
        return distributed.steps_per_epoch(len(self.x), self.batch_size, self.world.size)

    def __iter__(self) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
        n = len(self.x)
        order = torch.randperm(n, generator=self.generator) if self.shuffle else torch.arange(n)
        order = order.to(self.x.device)
        rank, size, sharded = self.world.rank, self.world.size, self.world.distributed
        for start in range(0, n, self.batch_size):
            idx = order[start : start + self.batch_size]
            if sharded:  # this rank's share, the same number of images on every rank
                idx = idx[rank : len(idx) - len(idx) % size : size]
                if not len(idx):
                    return
            yield self.x[idx], self.y[idx]  # (B, C, H, W), (B,) or (B, classes)


class Stepper:
    """One optimization step, with everything that can go wrong in it handled.

    A step whose loss (or gradient norm) is not finite is skipped: fused optimizers skip it
    on the device through their ``found_inf`` input; others check on the host, which is
    free on the CPU. Skipped steps are counted for the epoch's report.

    ``settings`` say how (precision, channels-last, augmentation, clipping, compile);
    ``scheduler`` and ``ema`` are stepped after the optimizer. The step trains on the batch as
    given: the caller applies ``augment`` first (:func:`train_one_epoch` does), so that it also
    sees the targets the loss saw (label mixing makes them soft).

    Gradient accumulation (``settings.accumulate``): a call with ``last=False`` is a micro-batch
    whose gradient is added up and kept; the next call with ``last=True`` ends the group and steps.
    Each micro-batch's backward pass weighs its mean loss by its images and the sum is divided by
    the group's images before clipping, so the step is the one the whole group as one batch would
    give (a short last group included). Under DDP the micro-batches before the last run inside
    ``no_sync()``: their gradients stay local, and the last one's backward all-reduces the sum once.
    """

    def __init__(
        self,
        model: nn.Module,
        loss_fn: LossFn,
        optimizer: torch.optim.Optimizer,
        settings: TrainSettings | None = None,
        *,
        scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
        ema: EMA | None = None,
    ) -> None:
        settings = settings or TrainSettings()
        compile = settings.compile
        self.model, self.loss_fn, self.optimizer = model, loss_fn, optimizer
        self.scheduler, self.augment, self.clip_norm, self.ema = scheduler, settings.augment, settings.clip_norm, ema
        self.device = next(model.parameters()).device
        self.channels_last = bool(settings.channels_last)  # auto (None) is fit's to resolve, from the model
        self.fused = fuse(model)  # the C kernels' pass (or the model itself): eager steps and validation run it
        self.forward = torch.compile(model) if compile else self.fused
        # (compiled: the compiler makes its own kernels, and hooks added per step would recompile it)
        self.autocast = step_autocast(model, self.device, settings.autocast_dtype, keep_depthwise=not compile)
        # 1x1 and 2x2 maps' convolutions as matrix products on the CPU (compiled: the compiler's own kernels)
        self.small_maps = nullcontext if compile else small_map_convs(model, self.device)
        self.scaler = torch.amp.GradScaler(self.device.type) if settings.precision == "fp16" else None
        # torch's fused Adam/AdamW/SGD read `found_inf` and skip the update on the device.
        self.skip_on_device = bool(optimizer.defaults.get("fused")) and self.scaler is None
        self.params = [p for group in optimizer.param_groups for p in group["params"]]
        self.accumulate = settings.accumulate
        self._images = 0  # images in the micro-batches of the group so far (0: a group starts)
        self._group_bad: torch.Tensor | None = None

    def __call__(self, xb: torch.Tensor, yb: torch.Tensor, *, last: bool = True
                 ) -> tuple[torch.Tensor, torch.Tensor, torch.Tensor]:  # fmt: skip
        """Train on one batch (on the device); return (loss, logits, bad) as device tensors, no host sync.

        ``last=False``: a micro-batch of a gradient-accumulation group, added up without stepping.
        """
        if self.channels_last:
            xb = xb.contiguous(memory_format=torch.channels_last)
        first, alone = self._images == 0, self._images == 0 and last  # alone: no accumulation
        no_sync = getattr(self.forward, "no_sync", None)  # DDP's: skip the all-reduce of this backward
        with nullcontext() if last or no_sync is None else no_sync():
            with self.autocast(), self.small_maps():
                logits = self.forward(xb)  # (B, classes)
                loss = self.loss_fn(logits.float(), yb)
            if first:
                self.optimizer.zero_grad(set_to_none=True)
            weighted = loss if alone else loss * len(yb)  # a sum over images; divided by the group's below
            (self.scaler.scale(weighted) if self.scaler is not None else weighted).backward()
        bad = ~torch.isfinite(loss)
        self._group_bad = bad if first else self._group_bad | bad
        self._images += len(yb)
        if not last:
            return loss.detach(), logits.detach(), bad
        bad, images = self._group_bad, self._images
        self._images, self._group_bad = 0, None
        if self.scaler is not None:  # fp16: the scaler unscales, checks for inf, and skips
            self.scaler.unscale_(self.optimizer)
            self._mean_over(images, alone)
            self._clip(bad)
            self.scaler.step(self.optimizer)
            self.scaler.update()
        else:
            self._mean_over(images, alone)
            bad = self._clip(bad)
            if self.skip_on_device:
                self.optimizer.found_inf = bad.float()
                self.optimizer.step()
            elif not bad.item():
                self.optimizer.step()
        if self.scheduler is not None:
            self.scheduler.step()
        if self.ema is not None:
            self.ema.update(self.model)
        return loss.detach(), logits.detach(), bad

    def _mean_over(self, images: int, alone: bool) -> None:
        """A group's summed gradient -> the gradient of its mean loss (nothing to do for one batch)."""
        if not alone:
            grads = [p.grad for p in self.params if p.grad is not None]
            if grads:
                torch._foreach_div_(grads, images)

    def _clip(self, bad: torch.Tensor) -> torch.Tensor:
        if not self.clip_norm:
            return bad
        norm = nn.utils.clip_grad_norm_(self.params, self.clip_norm, foreach=True)
        return bad | ~torch.isfinite(norm)


class _ShardedStepper(Stepper):
    """Under torchrun: a step that is non-finite on any rank is skipped on every rank, so replicas stay equal.

    ``forward`` is the DistributedDataParallel wrapper (set each epoch by :class:`distributed.Replicas`),
    whose backward pass averages the gradients over the ranks.
    """

    def _clip(self, bad: torch.Tensor) -> torch.Tensor:
        return distributed.any_rank(super()._clip(bad))


def train_one_epoch(
    step: Stepper,
    batches: Batches,
    *,
    metrics: dict[str, int],
    progress: TrainingProgress | None = None,
    world: World = SINGLE,
) -> tuple[dict[str, float], int]:
    """One pass over ``batches``; return the epoch's mean loss and metrics, and the skipped steps.

    With a distributed ``world`` the means are over every rank's images (this must then be
    called on every rank).
    """
    step.model.train()
    device = step.device
    loss_sum = torch.zeros((), device=device)
    correct = {name: torch.zeros((), dtype=torch.long, device=device) for name in metrics}
    skipped = torch.zeros((), dtype=torch.long, device=device)
    kept = torch.zeros((), dtype=torch.long, device=device)  # images in steps that were not skipped
    shown = [loss_sum, kept, correct]  # what running() reads: these sums, or (torchrun) the whole job's
    sharded = world.distributed

    def running() -> dict[str, float]:  # read by the progress bar, at most twice a second
        total, images, hits = shown
        n = max(int(images.item()), 1)
        return {"loss": total.item() / n, **{name: c.item() / n for name, c in hits.items()}}

    def job_sums() -> list:  # every rank's sums added up: a collective, so every rank calls it at the same step
        total, images, *hits = distributed.sum_over_ranks(loss_sum, kept, *correct.values())
        return [total, images, dict(zip(correct, hits))]

    total, group = len(batches), step.accumulate  # a step after every `group` batches, and after the last
    for number, (xb, yb) in enumerate(batches, 1):
        xb, yb = xb.to(device, non_blocking=True), yb.to(device, non_blocking=True)
        if step.augment is not None:  # here, so that the metrics count the targets the loss saw
            xb, yb = step.augment(xb, yb)  # mixing makes yb soft (B, classes): accuracy counts its dominant class
        try:
            loss, logits, bad = step(xb, yb, last=number % group == 0 or number == total)
        except _OOM:
            raise TrainingError(
                f"out of memory on {device} with batches of {len(yb)} images: try a smaller --batch-size "
                f"(e.g. {max(1, len(yb) // 2)}) or a smaller --image-size"
            ) from None
        # Skipped steps add nothing; all of this stays on the device.
        ok = ~bad
        loss_sum += torch.where(ok, loss, 0.0) * len(yb)
        for name, k in metrics.items():
            correct[name] += count_correct(logits, yb, k) * ok
        skipped += bad
        kept += ok * len(yb)
        if sharded and number % SYNC_EVERY == 0:
            shown[:] = job_sums()
        if progress is not None:
            progress.advance(len(yb), running)
    if sharded:
        shown[:] = job_sums()
    return running(), int(skipped.item())


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
    settings: TrainSettings | None = None,
    scheduler: torch.optim.lr_scheduler.LRScheduler | None = None,
    ema: EMA | None = None,
    shuffle: bool = True,
    initial_epoch: int = 0,
    verbose: int = 1,
    generator: torch.Generator | None = None,
    history: History | None = None,
    on_epoch_saved: Callable[[int, History], None] | None = None,
    world: World | None = None,
    val_loss_fn: LossFn | None = None,
) -> History:
    """Train ``model`` (which returns logits) on ``train`` and return the History.

    ``train`` is either ``(x, y)`` — images ``(N, C, H, W)`` and targets, moved to the
    model's device once and batched there — or any sized iterable of ``(images, targets)``
    batches, such as a ``torch.utils.data.DataLoader`` for data that does not fit in memory.
    Each epoch's logs (``loss``, each metric, and ``val_``-prefixed ones when ``validation``
    is given) go to the callbacks and the History. ``settings`` say how each step runs
    (default: ``TrainSettings()``, fp32, channels-last whenever the model has 2-D convolutions,
    no augmentation). With ``ema``, validation, callbacks and the final weights use the
    averaged weights. ``on_epoch_saved(epoch, history)`` runs last in each epoch (the resumable
    checkpoint); ``history`` continues a resumed run. ``val_loss_fn`` computes ``val_loss``
    (default: ``loss_fn``, as Keras does); ``cnnkit train`` passes the plain cross-entropy, so
    that ``val_loss`` and the test loss are one quantity whatever label smoothing trains with.

    Under torchrun (``world``: default, the initialized process group, if any) every rank
    calls ``fit`` alike: ``batch_size`` is the global batch (a multiple of the number of
    processes), a ``DataLoader`` must shard with a ``DistributedSampler``, and only rank 0
    prints, runs callbacks marked ``rank_zero_only`` (those that write files or read the
    clock) and ``on_epoch_saved``; every rank follows its decision to stop.
    """
    metrics = metrics or {}
    world = distributed.current() if world is None else world
    device = next(model.parameters()).device
    if device.type == "cpu":
        tune_cpu_allocator()
    settings = settings or TrainSettings()
    if settings.channels_last is None:  # auto: channels-last whenever the model has 2-D convolutions
        settings = dataclasses.replace(settings, channels_last=prefer_channels_last(model))
    elif settings.channels_last:
        model.to(memory_format=torch.channels_last)
    match_state_layout(optimizer)  # state from an earlier fit in another layout
    if isinstance(train, tuple):
        x, y = train
        _check_global_batch(batch_size, world)
        train = TensorBatches(x.to(device), y.to(device), batch_size, shuffle=shuffle, generator=generator,
                              world=world)  # fmt: skip
    if validation is not None:  # under torchrun each rank validates its share
        validation = tuple(distributed.shard_rows(t, world).to(device) for t in validation)
    stepper = _ShardedStepper if world.distributed else Stepper
    step = stepper(model, loss_fn, optimizer, settings, scheduler=scheduler, ema=ema)
    evaluate = distributed.evaluate_shards if world.distributed else evaluate_tensors
    val_loss_fn = val_loss_fn or loss_fn
    replicas = None
    if world.distributed:
        distributed.check_same_length(len(train), world)
        replicas = distributed.Replicas(model if settings.compile else step.fused, device, compile=settings.compile)
        if not world.is_main:  # rank 0 prints, writes and watches the clock; the others follow it
            verbose, on_epoch_saved = 0, None
            callbacks = [cb for cb in callbacks if not cb.rank_zero_only]
    history = history or History()
    model.stop_training = False
    # History last, as in Keras: it records what the other callbacks added to the logs (the learning rate).
    hooks = CallbackList([*callbacks, history], model, {"epochs": epochs, "steps": len(train), "verbose": verbose})
    hooks.on_train_begin()
    # A callback that restored a backup (BackupAndRestore) says where the interrupted fit had got to.
    initial_epoch = max([initial_epoch, *(cb.resume_epoch for cb in hooks.callbacks if cb.resume_epoch is not None)])
    progress = TrainingProgress(verbose, epochs, len(train), initial_epoch, processes=world.size)
    try:
        for epoch in range(initial_epoch, epochs):
            started = time.perf_counter()
            hooks.on_epoch_begin(epoch)
            if replicas is not None:
                _start_sharded_epoch(step, replicas, train, generator, epoch, world)
            logs, skipped = train_one_epoch(step, train, metrics=metrics, progress=progress, world=world)
            _check_skipped(skipped, len(train), epoch, logs)
            with ema.applied(model) if ema is not None else nullcontext():
                if validation is not None:
                    val = evaluate(step.fused, *validation, val_loss_fn, metrics, batch_size=max(256, batch_size))
                    logs.update({f"val_{key}": value for key, value in val.items()})
                progress.end_epoch(epoch, logs, time.perf_counter() - started, skipped)
                hooks.on_epoch_end(epoch, logs)
            if world.distributed:
                distributed.follow_rank_zero(model, scheduler, world)
            if on_epoch_saved is not None:
                on_epoch_saved(epoch, history)
            if model.stop_training:
                break
    finally:
        progress.close()
    if ema is not None:  # the averaged weights are the result
        with torch.no_grad():
            torch._foreach_copy_(EMA._sources(model), ema.tensors)
    hooks.on_train_end()
    return history


def _check_global_batch(batch_size: int, world: World) -> None:
    if world.distributed and batch_size % world.size:
        lower = max(world.size, batch_size - batch_size % world.size)
        raise ConfigError(
            f"the batch size {batch_size} is the global batch, split evenly over {world.size} processes: "
            f"use a multiple of {world.size}, e.g. {lower} or {lower + world.size}"
        )


def _start_sharded_epoch(step: Stepper, replicas: distributed.Replicas, train: Batches,
                         generator: torch.Generator | None, epoch: int, world: World) -> None:  # fmt: skip
    """Under torchrun: the DDP wrapper for this epoch's trainable parameters, this rank's random stream,
    and the epoch's shuffle for a DataLoader's DistributedSampler."""
    step.forward = replicas.forward()  # after on_epoch_begin: fine-tuning may have just unfrozen the body
    distributed.seed_epoch(generator, epoch, world)
    sampler = getattr(train, "sampler", None)
    if hasattr(sampler, "set_epoch"):
        sampler.set_epoch(epoch)


def _check_skipped(skipped: int, steps: int, epoch: int, logs: dict[str, float]) -> None:
    """A few non-finite steps are skipped and reported; most of an epoch means training diverged."""
    if skipped * 2 > steps or not math.isfinite(logs["loss"]):
        raise TrainingError(
            f"the loss was NaN or infinite in {skipped} of {steps} steps of epoch {epoch + 1}: the learning "
            f"rate is probably too high (try a 10x smaller --lr) or the inputs hold NaN/inf values; "
            f"checkpoints saved so far are kept"
        )
