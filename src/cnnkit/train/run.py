"""A training run, as ``cnnkit train`` does it: data, model, engine, and the run folder.

``train(config)`` loads the data set, builds the model, splits off a stratified
validation set, trains with the engine (the same ``loop.fit`` as ``Model.fit``),
keeps the best epoch, tests it, and writes ``runs/<name>/``: ``model.safetensors``,
``config.json``, ``split.json``, ``metrics.csv`` and ``curves.png``.
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
from cnnkit.data import prepare as data_prepare
from cnnkit.data.augment import make_augment
from cnnkit.data.transforms import conform, images_to_tensor
from cnnkit.errors import ConfigError
from cnnkit.evaluate import EvalResult, evaluate_arrays
from cnnkit.modelfile import read_weights
from cnnkit.models import Model, create_model, model_from_config
from cnnkit.report.plots import plot_curves
from cnnkit.runs import MODEL_FILE, create_run_dir
from cnnkit.runtime import resolve_device, seed_everything
from cnnkit.train import loop, losses, optimizers
from cnnkit.train.callbacks import CSVLogger, ModelCheckpoint
from cnnkit.train.config import TrainConfig

__all__ = ["TrainResult", "train"]


@dataclass(frozen=True)
class TrainResult:
    """Where the run went and how good the model is."""

    run_dir: Path
    model_path: Path
    history: dict[str, list[float]]
    test: EvalResult
    seconds: float


def build_model(config: TrainConfig, dataset: data.Dataset) -> Model:
    """The registered model named ``config.model``, or the architecture in a JSON file, sized for the data."""
    classes = len(dataset.class_names)
    if config.model.endswith(".json"):
        try:
            architecture = json.loads(Path(config.model).read_text())
        except FileNotFoundError:
            raise ConfigError(f"{config.model}: no such architecture file") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{config.model}: not valid JSON ({e})") from None
        model = model_from_config(architecture)
        if not model.built:
            height, width, channels = dataset.image_shape
            model.build((config.image_size or height, config.image_size or width, channels))
        outputs = model._num_outputs()
        if outputs != classes:
            raise ConfigError(f"{config.model} outputs {outputs} classes but {dataset.name} has {classes}")
    else:
        height, _, channels = dataset.image_shape
        model = create_model(config.model, num_classes=classes, in_channels=channels,
                             input_size=config.image_size or height)  # fmt: skip
    model.class_names = list(dataset.class_names)
    return model


def train(config: TrainConfig) -> TrainResult:
    """Run one training as configured and return where its files are and its test results."""
    config.validate()
    started = time.perf_counter()
    generator = seed_everything(config.seed, deterministic=config.deterministic)
    device = resolve_device(config.device)
    # Train/validation/test split (and, for a folder or CSV, the health check) happen in cnnkit.data.
    prepared = data_prepare.training_data(config, default_size=_default_size(config))
    dataset = prepared.dataset
    model = build_model(config, dataset).to(device)

    # The training set at the model's input shape, resident on the device (or streamed when too big).
    train_set = prepared.stream
    if train_set is None:
        train_set = (
            conform(images_to_tensor(dataset.train.images), model.image_shape),
            torch.from_numpy(dataset.train.labels),
        )
    val = dataset.val
    validation = None
    if val is not None:
        validation = (conform(images_to_tensor(val.images), model.image_shape), torch.from_numpy(val.labels))

    run_dir = create_run_dir(
        config.runs_dir, f"{config.model.removesuffix('.json').split('/')[-1]}-{dataset.name}", config.out
    )
    resolved = {**config.to_dict(), "device": str(device), "augment": _augment_name(config, prepared.augment)}
    atomic_write_json(run_dir / "config.json", resolved)
    prepared.write(run_dir)  # split.json; for a folder/CSV also bad_files.txt and data_report.json/.html
    n_train, n_val = prepared.train_size, len(val) if val else 0

    loss = losses.SparseCategoricalCrossentropy(label_smoothing=config.label_smoothing)
    spec = optimizers.get({"name": config.optimizer, "learning_rate": config.lr, "weight_decay": config.weight_decay})
    model.compile(optimizer=spec, loss=loss, metrics=["accuracy"])
    model.optimizer = spec.build(model.parameters())
    steps = math.ceil(n_train / config.batch_size) * config.epochs
    best_path = run_dir / MODEL_FILE
    monitor = "val_loss" if validation is not None else "loss"
    checkpoint = ModelCheckpoint(best_path, monitor=monitor, save_best_only=True)
    history = loop.fit(
        model, train_set,
        loss_fn=losses.resolve(loss, model.output_activation), optimizer=model.optimizer,
        epochs=config.epochs, batch_size=config.batch_size, validation=validation, metrics={"accuracy": 1},
        callbacks=[CSVLogger(run_dir / "metrics.csv"), checkpoint],
        scheduler=optimizers.make_schedule(config.schedule, model.optimizer, steps),
        augment=make_augment(resolved["augment"]), verbose=config.verbose, generator=generator,
    ).history  # fmt: skip

    model.load_state_dict(read_weights(best_path))  # the best epoch, not the last
    test = evaluate_arrays(model, dataset.test.images, dataset.test.labels)
    seconds = time.perf_counter() - started
    model.training_summary = _summary(config, dataset, history, test, seconds, n_train, n_val)
    model.save(best_path)
    plot_curves(history, run_dir / "curves.png")
    return TrainResult(run_dir, best_path, history, test, seconds)


def _augment_name(config: TrainConfig, default: str) -> str:
    return default if config.augment == "auto" else config.augment


def _default_size(config: TrainConfig) -> int | None:
    """The registered model's own input size: what a folder's images are resized to without --image-size."""
    from cnnkit.models import get_model_entry

    return None if config.model.endswith(".json") else get_model_entry(config.model).input_size


def _summary(config: TrainConfig, dataset: data.Dataset, history: dict[str, list[float]], test: EvalResult,
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
