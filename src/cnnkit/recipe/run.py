"""A training run, as ``cnnkit train`` does it: data, model, engine, and the run folder.

``train(config)`` opens the data (a registered data set, or a checked folder/CSV: see
:mod:`cnnkit.data.prepare`), builds the model (see :mod:`cnnkit.recipe.build`), trains with
the engine (the same ``loop.fit`` as ``Model.fit``), keeps the best epoch, tests it, and
writes ``runs/<name>/``: ``model.safetensors`` (best), ``last.safetensors``,
``resume.safetensors`` (everything to continue exactly), ``config.json``, ``split.json``,
``train_batch.png`` (what the model is fed), ``metrics.csv``, ``curves.png`` and ``report.html``
(the run's self-contained report).
``train(resume=RUN_DIR)`` continues an interrupted run on exactly the same data.

Under torchrun every process calls ``train`` alike (see :mod:`cnnkit.train.distributed`):
rank 0 names and writes the run folder and tests the model; the others train their shares.
When torchrun restarts the processes (``--max-restarts``), they continue from the run's last
checkpoint, found again by its stable name (``--out``, or the job's rendezvous id).
"""

from __future__ import annotations

import dataclasses
import json
import math
import re
import sys
import time
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit._io import atomic_write_json
from cnnkit.data import prepare as data_prepare
from cnnkit.data.catalog import load_registered, resolve_data
from cnnkit.data.downloads import data_root
from cnnkit.errors import ConfigError
from cnnkit.evaluate import EvalResult, image_logits
from cnnkit.modelfile import read_weights
from cnnkit.models import Model
from cnnkit.recipe import finetune
from cnnkit.recipe.build import (
    build_model,
    class_weights,
    default_size,
    make_optimizer,
    optimizer_spec,
    resolve_batch_size,
    resolve_settings,
    run_callbacks,
    train_labels,
    training_tensors,
)
from cnnkit.recipe.checks import one_class_warning, setup_warnings
from cnnkit.recipe.config import AUTO_BATCH, TrainConfig
from cnnkit.recipe.show_batch import BATCH_FILE, write_train_batch
from cnnkit.recipe.tracking import MLflowTracking, split_sha256
from cnnkit.report import write_report
from cnnkit.report.plots import plot_curves
from cnnkit.runs import MODEL_FILE, create_run_dir
from cnnkit.runtime import describe_device, seed_everything
from cnnkit.train import distributed, loop, losses, lr_schedule
from cnnkit.train.callbacks import Callback, History
from cnnkit.train.checkpoint import RESUME_FILE, TrainState, load_checkpoint, read_checkpoint, save_checkpoint
from cnnkit.train.distributed import World
from cnnkit.train.ema import EMA
from cnnkit.train.settings import TrainSettings

__all__ = ["TrainResult", "train"]


@dataclass(frozen=True)
class TrainResult:
    """Where the run went and how good the model is (``test`` is None on torchrun ranks other than 0)."""

    run_dir: Path
    model_path: Path
    history: dict[str, list[float]]
    test: EvalResult | None
    seconds: float  # preparing the data and training (with validation); testing and the report not included
    warnings: tuple[str, ...] = ()  # what the run warned about (also in the model file's training summary)


def _open(config: TrainConfig, resume: Path | None) -> data_prepare.TrainingData:
    """The data: split (and checked) anew, or exactly as the resumed run had it (files verified by hash)."""
    if resume is not None:
        return data_prepare.reopen_data(resume, data_dir=config.data_dir, workers=config.workers,
                                        batch_size=config.batch_size, cache=config.cache)  # fmt: skip
    if config.batch_size == AUTO_BATCH:  # a stream's batches until the batch size is found (then rebatched)
        config = dataclasses.replace(config, batch_size=64)
    return data_prepare.training_data(config, default_size=default_size(config))


def _saved_config(run_dir: Path) -> TrainConfig:
    if not (run_dir / "config.json").exists():
        raise ConfigError(f"{run_dir} is not a run folder (no config.json)")
    saved = json.loads((run_dir / "config.json").read_text())
    return TrainConfig.from_dict({k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__})


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None,
          epochs: int | None = None, callbacks: Sequence[Callback] = ()) -> TrainResult:  # fmt: skip
    """Run one training as configured, or continue the run in folder ``resume``; return its results.

    ``epochs`` (with ``resume``): extend a finished run to this many epochs in all, as Keras'
    ``fit(initial_epoch=...)`` and fastai's fit-again do; see :func:`_continued`.
    ``callbacks``: more engine callbacks, run after the run's own each epoch (``cnnkit tune``'s
    pruning); an exception raised in one ends the run, its folder kept as far as it got.
    Under torchrun every process calls this; only rank 0 writes files and tests the model.
    """
    segment = _Segment()
    if resume is not None:
        resume = Path(resume)
        config, segment = _continued(_saved_config(resume), resume, epochs)
    elif epochs is not None:
        raise ConfigError("epochs= extends a finished run: give resume=RUN too (or set TrainConfig.epochs)")
    config = config or TrainConfig()
    config.validate()
    with distributed.session(config.device, config.dist_timeout) as (world, device):
        if resume is None:
            resume = _restarted_run(config, world)
            if resume is not None:
                config, segment = _continued(_saved_config(resume), resume, None)
        if not world.is_main:
            config = dataclasses.replace(config, verbose=0)  # rank 0 alone prints
        return _train(config, resume, world, device, segment, tuple(callbacks))


@dataclass(frozen=True)
class _Segment:
    """Where the learning-rate schedule now running began: epoch 0, or where a run was extended."""

    start: int = 0  # the first epoch of this schedule segment
    new: bool = False  # starts now (the checkpoint's schedule belongs to the segment before)


def _continued(config: TrainConfig, run_dir: Path, epochs: int | None) -> tuple[TrainConfig, _Segment]:
    """The config and schedule segment to continue ``run_dir`` with, extended to ``epochs`` if given.

    Extending a finished run trains the extra epochs under a new segment of the run's schedule (its
    warm-up and decay over the extra epochs alone, at the run's peak rate): the schedule that ended
    at the last epoch has decayed to zero, so continuing it would train at a learning rate of zero.
    The extension is recorded in the checkpoint, so an interrupted extension resumes as one.
    """
    _, meta = read_checkpoint(run_dir)
    extra = meta.get("extra", {})
    total, start = int(extra.get("epochs", config.epochs)), int(extra.get("schedule_from", 0))
    done = int(meta["epoch"]) + 1
    if epochs is None or epochs == total:
        return config.replace(epochs=total), _Segment(start)
    if epochs < total or epochs <= done:
        raise ConfigError(f"{run_dir} has {total} epochs planned and {done} trained: --epochs extends a run, so "
                          f"give more than {max(total, done)}")  # fmt: skip
    if done < total:
        raise ConfigError(f"{run_dir} stopped after epoch {done} of {total}: finish it first with "
                          f"`cnnkit train --resume {run_dir}`, then extend it")  # fmt: skip
    if config.weights:
        raise ConfigError(
            f"{run_dir} fine-tuned pretrained weights (head first, then all layers); extending a "
            f"fine-tuning run is not supported: start a run with --weights {run_dir}/{MODEL_FILE}"
        )
    return config.replace(epochs=epochs), _Segment(done, new=True)


def _train(config: TrainConfig, resume: Path | None, world: World, device: torch.device,
           segment: _Segment, extra: tuple[Callback, ...] = ()) -> TrainResult:  # fmt: skip
    started = time.perf_counter()
    config = _global_batch(config, world, device)
    generator = seed_everything(config.seed, deterministic=config.deterministic)
    _download_once(config, world)
    prepared = _open(config, resume)
    model = build_model(config, prepared.dataset).to(device)
    auto_batch = config.batch_size == AUTO_BATCH
    config = resolve_batch_size(config, model, prepared, device, world.size)
    if prepared.stream is not None and (world.distributed or auto_batch):  # this process's share, in its batches
        from cnnkit.data.streaming import shard_batches

        prepared.stream = shard_batches(prepared.stream, world.rank, world.size, seed=config.seed,
                                        batch_size=config.batch_size)  # fmt: skip
    if config.sync_bn and world.distributed:
        model = torch.nn.SyncBatchNorm.convert_sync_batchnorm(model)
    settings, resolved = resolve_settings(config, prepared.augment, device, len(prepared.dataset.class_names))
    if settings.channels_last:
        model = model.to(memory_format=torch.channels_last)
    run_dir = resume or _new_run_dir(config, prepared, world)
    val = prepared.dataset.val
    warnings = setup_warnings(tta=config.tta, augment=resolved["augment"], class_names=prepared.dataset.class_names,
                              val_labels=val.labels if val is not None else None)  # fmt: skip
    if resume is None and world.is_main:
        atomic_write_json(run_dir / "config.json", resolved)
        prepared.write(run_dir)  # split.json; for a folder/CSV also bad_files.txt and data_report.json/.html
        write_train_batch(run_dir / BATCH_FILE, prepared, resolved["augment"], model.image_shape, seed=config.seed)
    if config.verbose:
        print(f"device: {describe_device(device)}; run folder: {run_dir}")
        if world.distributed:
            print(f"torchrun: {world.size} processes, global batch {config.batch_size} "
                  f"({config.batch_size // world.size} per process), peak lr {config.lr:g}")  # fmt: skip
        print(_loss_note(config))
    if world.is_main:
        for warning in warnings:
            _warn(warning)
    tracker = _tracker(config, resolved, run_dir, prepared) if world.is_main else None
    try:
        history = _fit(config, settings, model, prepared, run_dir, generator, resume is not None, world, segment,
                       extra + ((tracker,) if tracker is not None else ()))  # fmt: skip
        seconds = time.perf_counter() - started
        if not world.is_main:  # rank 0 tests the model and writes the results
            return TrainResult(run_dir, run_dir / MODEL_FILE, history, None, seconds)
        result = _finish(config, model, prepared, run_dir, history, seconds, world.size, warnings)
    except BaseException as e:
        if tracker is not None:
            tracker.end("KILLED" if isinstance(e, KeyboardInterrupt) else "FAILED")
        raise
    if tracker is not None:
        tracker.finish(run_dir, result.test.to_dict() if result.test is not None else None)
    return result


def _tracker(config: TrainConfig, resolved: dict[str, Any], run_dir: Path,
             prepared: data_prepare.TrainingData) -> MLflowTracking | None:  # fmt: skip
    """The experiment tracker of ``--track`` (rank 0's), its run named after the run folder."""
    if config.track == "none":
        return None
    tags = {"data": prepared.dataset.name, "split_sha256": split_sha256(prepared.split), "model": config.model,
            "run_dir": str(run_dir)}  # fmt: skip
    return MLflowTracking(config.track_uri, run_dir.name, resolved, tags)


def _download_once(config: TrainConfig, world: World) -> None:
    """Under torchrun, a standard data set missing from the cache is downloaded by each machine's first
    process while the others wait (within --dist-timeout), instead of by every process at once."""
    if not world.distributed:
        return
    info = resolve_data(config.data)
    if info is None or info.builtin:
        return
    root = data_root(config.data_dir)
    if bool(distributed.any_rank(torch.tensor(not info.is_cached(root), device=distributed.comm_device()))):
        if world.local_rank == 0 and not info.is_cached(root):
            load_registered(info, data_dir=config.data_dir)
        torch.distributed.barrier()


def _global_batch(config: TrainConfig, world: World, device: torch.device) -> TrainConfig:
    """The config with ``batch_size`` the global batch (what config.json records), checked for ``world``."""
    if config.batch_scope == "process":
        config = config.replace(batch_size=config.batch_size * world.size, batch_scope="global")
    if world.distributed and config.batch_size % world.size:
        lower = max(world.size, config.batch_size - config.batch_size % world.size)
        raise ConfigError(f"--batch-size {config.batch_size} is the global batch, split evenly over {world.size} "
                          f"processes: use a multiple of {world.size} (e.g. {lower} or {lower + world.size}), a "
                          f"number of processes that divides it, or --batch-scope process")  # fmt: skip
    if config.sync_bn and world.distributed and device.type != "cuda":
        raise ConfigError("--sync-bn needs GPUs: torch's SyncBatchNorm runs on CUDA only (on CPUs each process "
                          "keeps BatchNorm statistics of its own share of the batch)")  # fmt: skip
    return config


def _stem(model: str) -> str:
    return Path(model).stem if model.endswith(".json") else model


def _stable_run_dir(config: TrainConfig) -> Path | None:
    """The run folder that restarted torchrun processes find again: ``--out``, or named by the job's id."""
    if config.out is not None:
        return Path(config.out)
    if not distributed.launched_by_torchrun() or distributed.max_restarts() == 0:
        return None  # never restarted: the usual timestamped name
    job = distributed.run_id()
    if job is None:
        raise ConfigError("torchrun --max-restarts restarts the processes, which must find this run's checkpoint "
                          "again: give --out DIR (on a file system every machine shares), or start torchrun with "
                          "--standalone or --rdzv-id JOB_ID")  # fmt: skip
    if re.fullmatch(r"[0-9a-f]{8}(-[0-9a-f]{4}){3}-[0-9a-f]{12}", job):  # --standalone's random uuid
        job = job[:8]
    info = resolve_data(config.data)
    data_name = info.name if info is not None else Path(config.data).stem
    return Path(config.runs_dir) / re.sub(r"[^\w.-]", "_", f"{_stem(config.model)}-{data_name}-{job}")


def _restarted_run(config: TrainConfig, world: World) -> Path | None:
    """After torchrun restarted the processes: the run folder to continue from, if it has a checkpoint."""
    found = None
    stable = _stable_run_dir(config)  # on every rank: a missing --out is an error on all of them
    if world.is_main and distributed.restart_count() > 0 and stable is not None and (stable / RESUME_FILE).exists():
        found = str(stable)
        if config.verbose:
            print(f"torchrun restarted the processes (restart {distributed.restart_count()}): "
                  f"continuing from the last checkpoint in {stable}")  # fmt: skip
    found = distributed.broadcast_object(found, world)
    return Path(found) if found is not None else None


def _new_run_dir(config: TrainConfig, prepared: data_prepare.TrainingData, world: World) -> Path:
    """Rank 0 makes the run folder; every rank gets its name (the timestamp is rank 0's)."""
    path = None
    if world.is_main:
        stable = _stable_run_dir(config)
        path = str(create_run_dir(config.runs_dir, f"{_stem(config.model)}-{prepared.dataset.name}", stable))
    return Path(distributed.broadcast_object(path, world))


def _fit(config: TrainConfig, settings: TrainSettings, model: Model, prepared: data_prepare.TrainingData,
         run_dir: Path, generator: torch.Generator, resuming: bool, world: World, segment: _Segment,
         extra_callbacks: tuple[Callback, ...] = ()) -> dict[str, list[float]]:  # fmt: skip
    """Set up the engine, restore a checkpoint when resuming (on every rank), and train."""
    train_set, validation = training_tensors(prepared, model)
    loss = losses.SparseCategoricalCrossentropy(label_smoothing=config.label_smoothing)
    plain = losses.resolve(losses.SparseCategoricalCrossentropy(), model.output_activation)  # val_loss = test loss
    weights = class_weights(config.class_weights, train_labels(prepared), len(prepared.dataset.class_names))
    model.compile(optimizer=config.optimizer, loss=loss, metrics=["accuracy"])
    batches = distributed.steps_per_epoch(prepared.train_size, config.batch_size, world.size)
    steps = math.ceil(batches / config.accumulate)  # optimizer steps: one per --accumulate batches
    epochs, extra = config.epochs, {}
    if config.weights:  # fastai's fine_tune: the head alone while the body is frozen, then all layers
        plan = finetune.plan_fine_tune(model, optimizer_spec(config), lr=config.lr, epochs=config.epochs,
                                       freeze_epochs=config.head_only_epochs, steps_per_epoch=steps,
                                       schedule=config.schedule)  # fmt: skip
        model.optimizer, schedule, epochs = plan.optimizer, plan.scheduler, plan.epochs
        extra = {f"fine_tune_{i}": cb for i, cb in enumerate(plan.callbacks)}
    else:
        model.optimizer = make_optimizer(config, model)
        schedule = lr_schedule.make_schedule(config.schedule, model.optimizer, steps * (epochs - segment.start))
    ema = EMA(model, config.ema) if config.ema else None
    callbacks = {**run_callbacks(config, run_dir, schedule, steps, validation is not None), **extra}
    history = History()
    state = TrainState(model, model.optimizer, schedule, ema, generator,
                       callbacks={"history": history, **callbacks})  # fmt: skip
    initial_epoch = _restore(run_dir, state, segment, epochs, config) if resuming else 0
    try:
        return loop.fit(
            model, train_set,
            loss_fn=losses.resolve(loss, model.output_activation, weights), optimizer=model.optimizer,
            epochs=epochs, batch_size=config.batch_size, validation=validation, metrics={"accuracy": 1},
            callbacks=[*callbacks.values(), *extra_callbacks], settings=settings, scheduler=schedule, ema=ema,
            initial_epoch=initial_epoch, verbose=config.verbose, generator=generator, history=history, world=world,
            val_loss_fn=plain,
            on_epoch_saved=lambda epoch, _: save_checkpoint(run_dir, state, epoch),  # rank 0 only
        ).history  # fmt: skip
    except KeyboardInterrupt:
        if world.is_main:
            launcher = "torchrun ... -m cnnkit" if distributed.launched_by_torchrun() else "cnnkit"
            print(f"\ninterrupted; continue with: {launcher} train --resume {run_dir}")
        raise


def _restore(run_dir: Path, state: TrainState, segment: _Segment, epochs: int, config: TrainConfig) -> int:
    """Restore the run's checkpoint into ``state``; return the first epoch still to train."""
    fresh = state.scheduler.state_dict() if segment.new and state.scheduler is not None else None
    initial_epoch = load_checkpoint(run_dir, state)["epoch"] + 1
    if segment.start:  # recorded in every checkpoint from now on: an interrupted extension resumes as one
        state.extra.update(epochs=epochs, schedule_from=segment.start)
    if fresh is not None:  # a new schedule segment: its own warm-up and decay, not the old one's end
        state.scheduler.load_state_dict(fresh)
        for group, lr in zip(state.optimizer.param_groups, state.scheduler.get_last_lr()):
            group["lr"] = lr
    if config.verbose and segment.new:
        what = f"a new {config.schedule} schedule segment" if state.scheduler is not None else "a constant rate"
        print(f"extending the run: epochs {initial_epoch + 1}-{epochs}, under {what}")
    elif config.verbose:
        print(f"resuming after epoch {initial_epoch} of {epochs}")
    return initial_epoch


def _finish(config: TrainConfig, model: Model, prepared: data_prepare.TrainingData, run_dir: Path,
            history: dict[str, list[float]], seconds: float, processes: int = 1, warnings: Sequence[str] = ()
            ) -> TrainResult:  # fmt: skip
    """Test the best epoch, record the summary in the model file, plot the curves.

    Under torchrun only rank 0 gets here: whatever is written here (plots, reports) is rank 0's alone.
    """
    best_path = run_dir / MODEL_FILE
    model.load_state_dict(read_weights(best_path))  # the best epoch, not the last
    dataset = prepared.dataset
    logits = image_logits(model, dataset.test.images, tta=config.tta)  # (N, classes)
    labels = torch.as_tensor(dataset.test.labels).long()
    test = EvalResult.from_logits(logits, labels)
    collapsed = one_class_warning(logits.argmax(1).numpy(), dataset.test.labels, dataset.class_names)
    if collapsed:
        _warn(collapsed)
    warnings = (*warnings, *([collapsed] if collapsed else []))
    n_val = len(dataset.val) if dataset.val is not None else 0
    model.training_summary = _summary(config, dataset.name, history, test, seconds, prepared.train_size, n_val)
    model.training_summary.update(losses=_loss_note(config), warnings=list(warnings))
    if processes > 1:
        model.training_summary["processes"] = processes  # torchrun's world size; batch_size is the global batch
    model.save(best_path)
    plot_curves(history, run_dir / "curves.png")
    if config.report:
        write_report(run_dir, model=model, data=prepared)
    return TrainResult(run_dir, best_path, history, test, seconds, tuple(warnings))


def _warn(text: str) -> None:
    """One line on stderr, also under -q: a warning is part of the result."""
    print(f"warning: {text}", file=sys.stderr, flush=True)


def _loss_note(config: TrainConfig) -> str:
    """Which loss each printed number is: smoothing and class weights change the training loss only."""
    changes = [f"label smoothing {config.label_smoothing:g}"] if config.label_smoothing else []
    changes += [f"class weights {config.class_weights}"] if config.class_weights != "none" else []
    if not changes:
        return "loss: cross-entropy (training, val_loss and test alike)"
    return (f"loss: training uses cross-entropy with {' and '.join(changes)}; val_loss and the test loss are "
            f"the plain cross-entropy")  # fmt: skip


def _summary(config: TrainConfig, data_name: str, history: dict[str, list[float]], test: EvalResult,
             seconds: float, n_train: int, n_val: int) -> dict[str, Any]:  # fmt: skip
    """What the model file records about how it was trained."""
    best = int(np.argmin(history.get("val_loss", history["loss"])))
    return {
        "model": config.model,
        "data": data_name,
        "images": {"train": n_train, "val": n_val, "test": test.n},
        "epochs": len(history["loss"]),
        "best_epoch": best + 1,
        "val_accuracy": history["val_accuracy"][best] if "val_accuracy" in history else None,
        "test": test.to_dict(),
        "seconds": round(seconds, 2),  # preparing the data and training, with validation; not testing
        "config": config.to_dict(),
    }
