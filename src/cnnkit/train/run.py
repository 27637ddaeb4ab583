"""A training run, as ``cnnkit train`` does it: data, model, engine, and the run folder.

``train(config)`` loads the data set, builds the model, splits off a stratified validation
set, trains with the engine (the same ``loop.fit`` as ``Model.fit``), keeps the best epoch,
tests it, and writes ``runs/<name>/``: ``model.safetensors`` (best), ``last.safetensors``,
``resume.safetensors`` (everything to continue exactly), ``config.json``, ``split.json``,
``metrics.csv`` and ``curves.png``. ``train(resume=RUN_DIR)`` continues an interrupted run.
"""

from __future__ import annotations

import json
import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit import data
from cnnkit._io import atomic_write_json
from cnnkit.data.augment import make_augment
from cnnkit.data.split import stratified_split
from cnnkit.data.transforms import conform, images_to_tensor
from cnnkit.errors import ConfigError
from cnnkit.evaluate import EvalResult, evaluate_arrays
from cnnkit.modelfile import read_weights
from cnnkit.models import Model, create_model, model_from_config
from cnnkit.report.plots import plot_curves
from cnnkit.runs import MODEL_FILE, create_run_dir
from cnnkit.runtime import describe_device, resolve_device, seed_everything
from cnnkit.train import loop, losses, optimizers
from cnnkit.train.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    ModelCheckpoint,
    TensorBoard,
    TimeBudget,
)
from cnnkit.train.checkpoint import TrainState, load_checkpoint, save_checkpoint
from cnnkit.train.config import TrainConfig
from cnnkit.train.ema import EMA

__all__ = ["TrainResult", "TrainingData", "build_model", "load_training_data", "make_optimizer", "train"]


@dataclass(frozen=True)
class TrainResult:
    """Where the run went and how good the model is."""

    run_dir: Path
    model_path: Path
    history: dict[str, list[float]]
    test: EvalResult
    seconds: float


@dataclass
class TrainingData:
    """The training data at the model's input shape, with its split."""

    dataset: data.Dataset
    images: torch.Tensor  # (N, C, H, W) in [0, 1]
    labels: torch.Tensor  # (N,)
    train_idx: np.ndarray
    val_idx: np.ndarray


def build_model(config: TrainConfig, dataset: data.Dataset) -> Model:
    """The registered model named ``config.model``, or the architecture in a JSON file, sized for the data."""
    classes = len(dataset.class_names)
    height, width, channels = dataset.image_shape
    if config.model.endswith(".json"):
        try:
            architecture = json.loads(Path(config.model).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{config.model}: no such architecture file") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{config.model}: not valid JSON ({e})") from None
        model = model_from_config(architecture)
        if not model.built:
            model.build((config.image_size or height, config.image_size or width, channels))
        outputs = model._num_outputs()
        if outputs != classes:
            raise ConfigError(f"{config.model} outputs {outputs} classes but {dataset.name} has {classes}")
    else:
        model = create_model(config.model, num_classes=classes, in_channels=channels,
                             input_size=config.image_size or height)  # fmt: skip
    model.class_names = list(dataset.class_names)
    return model


def load_training_data(config: TrainConfig, model: Model, dataset: data.Dataset, run_dir: Path | None) -> TrainingData:
    """Conform the images to the model; split them, or reuse a resumed run's split."""
    images = conform(images_to_tensor(dataset.train.images), model.image_shape)  # (N, C, H, W)
    labels = torch.from_numpy(dataset.train.labels)
    if run_dir is not None and (run_dir / "split.json").exists():
        split = json.loads((run_dir / "split.json").read_text())
        train_idx, val_idx = np.array(split["train"], dtype=np.int64), np.array(split["val"], dtype=np.int64)
    elif config.val_split == 0:
        train_idx, val_idx = np.arange(len(labels)), np.arange(0)
    else:
        train_idx, val_idx = stratified_split(dataset.train.labels, config.val_split, config.seed)
    return TrainingData(dataset, images, labels, train_idx, val_idx)


def _class_weights(spec: str, labels: np.ndarray, classes: int) -> torch.Tensor | None:
    """``none``; ``auto`` = N / (classes * count) per class (scikit-learn's "balanced"); or ``"0:1,3:2.5"``."""
    if spec == "none":
        return None
    if spec == "auto":
        counts = np.bincount(labels, minlength=classes).astype(np.float64)
        return torch.tensor(len(labels) / (classes * np.maximum(counts, 1)), dtype=torch.float32)
    weights = torch.ones(classes)
    try:
        for item in spec.split(","):
            label, weight = item.split(":")
            weights[int(label)] = float(weight)
    except (ValueError, IndexError):
        raise ConfigError(
            f"class_weights must be none, auto or 'label:weight,...' for labels 0..{classes - 1}"
        ) from None
    return weights


def make_optimizer(config: TrainConfig, model: Model) -> torch.optim.Optimizer:
    settings: dict[str, Any] = {"name": config.optimizer, "learning_rate": config.lr}
    if config.optimizer == "sgd":
        settings.update(momentum=0.9, nesterov=True)
    return optimizers.get(settings).build(optimizers.decay_groups(model, config.weight_decay))


def _resolved(config: TrainConfig, info: data.DatasetInfo, device: torch.device) -> dict[str, Any]:
    """The config with every ``auto`` replaced by what this run uses: itself a valid config (``config.json``)."""
    gpu = device.type == "cuda"
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if gpu and torch.cuda.is_bf16_supported() else "fp32"
    channels_last = config.channels_last != "off"  # oneDNN and cuDNN both prefer it for convolutions
    augment = info.augment if config.augment == "auto" else config.augment
    return {**config.to_dict(), "device": str(device), "precision": precision,
            "channels_last": "on" if channels_last else "off", "augment": augment}  # fmt: skip


def _callbacks(config: TrainConfig, run_dir: Path, schedule: Any, steps: int, validated: bool) -> dict[str, Callback]:
    """The run's callbacks by stable name (the names key their state in the checkpoint)."""
    monitor = "val_loss" if validated else "loss"
    callbacks: dict[str, Callback] = {
        "csv": CSVLogger(run_dir / "metrics.csv"),
        "best": ModelCheckpoint(run_dir / MODEL_FILE, monitor=monitor, save_best_only=validated),
        "last": ModelCheckpoint(run_dir / "last.safetensors"),
    }
    if config.patience:
        callbacks["early_stopping"] = EarlyStopping(monitor=monitor, patience=config.patience)
    if config.time:
        callbacks["time"] = TimeBudget(config.time, schedule, steps)
    if config.tensorboard:
        callbacks["tensorboard"] = TensorBoard(run_dir / "tensorboard")
    return callbacks


def train(config: TrainConfig | None = None, *, resume: str | Path | None = None) -> TrainResult:
    """Run one training as configured, or continue the run in folder ``resume``; return its results."""
    if resume is not None:
        run_dir = Path(resume)
        if not (run_dir / "config.json").exists():
            raise ConfigError(f"{run_dir} is not a run folder (no config.json)")
        saved = json.loads((run_dir / "config.json").read_text())
        config = TrainConfig.from_dict({k: v for k, v in saved.items() if k in TrainConfig.__dataclass_fields__})
    config = config or TrainConfig()
    config.validate()
    started = time.perf_counter()
    generator = seed_everything(config.seed, deterministic=config.deterministic)
    device = resolve_device(config.device)
    info = data.get_dataset_info(config.data)
    dataset = data.load_dataset(config.data)
    model = build_model(config, dataset).to(device)
    resolved = _resolved(config, info, device)
    if resolved["channels_last"] == "on":
        model = model.to(memory_format=torch.channels_last)

    run_dir = run_dir if resume is not None else create_run_dir(config.runs_dir, _run_stem(config), config.out)
    prepared = load_training_data(config, model, dataset, run_dir if resume is not None else None)
    if resume is None:
        atomic_write_json(run_dir / "config.json", resolved)
        atomic_write_json(run_dir / "split.json", {
            "data": config.data, "seed": config.seed, "val_split": config.val_split,
            "train": prepared.train_idx.tolist(), "val": prepared.val_idx.tolist(),
            "test": "the data set's own test split",
        })  # fmt: skip
    if config.verbose:
        print(f"device: {describe_device(device)}; run folder: {run_dir}")
    history = _fit(config, resolved, model, prepared, run_dir, generator, resume is not None)
    return _finish(config, model, prepared, run_dir, history, time.perf_counter() - started)


def _run_stem(config: TrainConfig) -> str:
    return f"{Path(config.model).stem if config.model.endswith('.json') else config.model}-{config.data}"


def _fit(config: TrainConfig, resolved: dict[str, Any], model: Model, d: TrainingData, run_dir: Path,
         generator: torch.Generator, resuming: bool) -> dict[str, list[float]]:  # fmt: skip
    """Set up the engine, restore a checkpoint when resuming, and train."""
    classes = len(d.dataset.class_names)
    loss = losses.SparseCategoricalCrossentropy(label_smoothing=config.label_smoothing)
    weights = _class_weights(config.class_weights, d.labels[d.train_idx].numpy(), classes)
    model.compile(optimizer=config.optimizer, loss=loss, metrics=["accuracy"])
    model.optimizer = make_optimizer(config, model)
    steps = math.ceil(len(d.train_idx) / config.batch_size)
    schedule = optimizers.make_schedule(config.schedule, model.optimizer, steps * config.epochs)
    ema = EMA(model, config.ema) if config.ema else None
    validation = (d.images[d.val_idx], d.labels[d.val_idx]) if len(d.val_idx) else None
    callbacks = _callbacks(config, run_dir, schedule, steps, validation is not None)
    history = History()
    state = TrainState(model, model.optimizer, schedule, ema, generator,
                       callbacks={"history": history, **callbacks})  # fmt: skip
    initial_epoch = 0
    if resuming:
        initial_epoch = load_checkpoint(run_dir, state)["epoch"] + 1
        if config.verbose:
            print(f"resuming after epoch {initial_epoch} of {config.epochs}")
    try:
        return loop.fit(
            model, (d.images[d.train_idx], d.labels[d.train_idx]),
            loss_fn=losses.resolve(loss, model.output_activation, weights), optimizer=model.optimizer,
            epochs=config.epochs, batch_size=config.batch_size, validation=validation, metrics={"accuracy": 1},
            callbacks=list(callbacks.values()), scheduler=schedule, augment=make_augment(resolved["augment"]),
            initial_epoch=initial_epoch, verbose=config.verbose, generator=generator, clip_norm=config.clip_norm,
            precision=resolved["precision"], ema=ema, channels_last=resolved["channels_last"] == "on",
            compile=config.compile, history=history,
            on_epoch_saved=lambda epoch, _: save_checkpoint(run_dir, state, epoch),
        ).history  # fmt: skip
    except KeyboardInterrupt:
        print(f"\ninterrupted; continue with: cnnkit train --resume {run_dir}")
        raise


def _finish(config: TrainConfig, model: Model, d: TrainingData, run_dir: Path, history: dict[str, list[float]],
            seconds: float) -> TrainResult:  # fmt: skip
    """Test the best epoch, record the summary in the model file, plot the curves."""
    best_path = run_dir / MODEL_FILE
    model.load_state_dict(read_weights(best_path))  # the best epoch, not the last
    test = evaluate_arrays(model, d.dataset.test.images, d.dataset.test.labels, tta=config.tta)
    model.training_summary = _summary(config, history, test, seconds, len(d.train_idx), len(d.val_idx))
    model.save(best_path)
    plot_curves(history, run_dir / "curves.png")
    return TrainResult(run_dir, best_path, history, test, seconds)


def _summary(config: TrainConfig, history: dict[str, list[float]], test: EvalResult,
             seconds: float, n_train: int, n_val: int) -> dict[str, Any]:  # fmt: skip
    """What the model file records about how it was trained."""
    best = int(np.argmin(history.get("val_loss", history["loss"])))
    return {
        "model": config.model,
        "data": config.data,
        "images": {"train": n_train, "val": n_val, "test": test.n},
        "epochs": len(history["loss"]),
        "best_epoch": best + 1,
        "val_accuracy": history["val_accuracy"][best] if "val_accuracy" in history else None,
        "test": test.to_dict(),
        "seconds": round(seconds, 2),
        "config": config.to_dict(),
    }
