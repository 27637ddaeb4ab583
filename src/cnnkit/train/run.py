"""A training run, as ``cnnkit train`` does it: data, model, engine, and the run folder.

``train(config)`` loads the data set, builds the model, splits off a stratified
validation set, trains with the engine (the same ``loop.fit`` as ``Model.fit``),
keeps the best epoch, tests it, and writes ``runs/<name>/``: ``model.safetensors``,
``config.json``, ``split.json``, ``metrics.csv`` and ``curves.png``.
"""

from __future__ import annotations

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
from cnnkit.models import Model, create_model, get_model_entry, load_architecture
from cnnkit.models.weights import load_pretrained
from cnnkit.report.plots import plot_curves
from cnnkit.runs import MODEL_FILE, create_run_dir
from cnnkit.runtime import resolve_device, seed_everything
from cnnkit.train import finetune, loop, losses, optimizers
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
        model = load_architecture(config.model)
        if not model.built:
            height, width, channels = dataset.image_shape
            model.build((config.image_size or height, config.image_size or width, channels))
        outputs = model._num_outputs()
        if outputs != classes:
            raise ConfigError(f"{config.model} outputs {outputs} classes but {dataset.name} has {classes}")
    else:
        height, _, channels = dataset.image_shape
        size = config.image_size or max(height, get_model_entry(config.model).min_input_size)
        model = create_model(config.model, num_classes=classes, in_channels=channels, input_size=size)
    model.class_names = list(dataset.class_names)
    if config.weights:  # pretrained body, new head for these classes, preprocessing of the weights
        load_pretrained(model, config.weights, verbose=bool(config.verbose))
    return model


def _split(labels: np.ndarray, config: TrainConfig) -> tuple[np.ndarray, np.ndarray]:
    if config.val_split == 0:
        return np.arange(len(labels)), np.arange(0)
    return stratified_split(labels, config.val_split, config.seed)


def train(config: TrainConfig) -> TrainResult:
    """Run one training as configured and return where its files are and its test results."""
    config.validate()
    started = time.perf_counter()
    generator = seed_everything(config.seed, deterministic=config.deterministic)
    device = resolve_device(config.device)
    dataset = data.load_dataset(config.data)
    info = data.get_dataset_info(config.data)
    model = build_model(config, dataset).to(device)

    # The whole training set, at the model's input shape, resident on the device.
    images = conform(images_to_tensor(dataset.train.images), model.image_shape)  # (N, C, H, W)
    labels = torch.from_numpy(dataset.train.labels)
    train_idx, val_idx = _split(dataset.train.labels, config)
    validation = (images[val_idx], labels[val_idx]) if len(val_idx) else None

    run_dir = create_run_dir(
        config.runs_dir, f"{config.model.removesuffix('.json').split('/')[-1]}-{config.data}", config.out
    )
    resolved = {**config.to_dict(), "device": str(device), "augment": _augment_name(config, info),
                "freeze_epochs": config.head_only_epochs}  # fmt: skip
    atomic_write_json(run_dir / "config.json", resolved)
    atomic_write_json(run_dir / "split.json", {
        "data": config.data, "seed": config.seed, "val_split": config.val_split,
        "train": train_idx.tolist(), "val": val_idx.tolist(), "test": "the data set's own test split",
    })  # fmt: skip

    loss = losses.SparseCategoricalCrossentropy(label_smoothing=config.label_smoothing)
    spec = optimizers.get({"name": config.optimizer, "learning_rate": config.lr, "weight_decay": config.weight_decay})
    model.compile(optimizer=spec, loss=loss, metrics=["accuracy"])
    steps_per_epoch = math.ceil(len(train_idx) / config.batch_size)
    epochs, extra_callbacks = config.epochs, []
    if config.weights:  # fastai's fine_tune: the head alone while the body is frozen, then all layers
        plan = finetune.plan_fine_tune(model, spec, lr=config.lr, epochs=config.epochs,
                                       freeze_epochs=config.head_only_epochs, steps_per_epoch=steps_per_epoch,
                                       schedule=config.schedule)  # fmt: skip
        model.optimizer, scheduler, epochs = plan.optimizer, plan.scheduler, plan.epochs
        extra_callbacks = plan.callbacks
    else:
        model.optimizer = spec.build(model.parameters())
        scheduler = optimizers.make_schedule(config.schedule, model.optimizer, steps_per_epoch * epochs)
    best_path = run_dir / MODEL_FILE
    monitor = "val_loss" if validation is not None else "loss"
    checkpoint = ModelCheckpoint(best_path, monitor=monitor, save_best_only=True)
    history = loop.fit(
        model, (images[train_idx], labels[train_idx]),
        loss_fn=losses.resolve(loss, model.output_activation), optimizer=model.optimizer,
        epochs=epochs, batch_size=config.batch_size, validation=validation, metrics={"accuracy": 1},
        callbacks=[CSVLogger(run_dir / "metrics.csv"), checkpoint, *extra_callbacks], scheduler=scheduler,
        augment=make_augment(resolved["augment"]), verbose=config.verbose, generator=generator,
    ).history  # fmt: skip

    model.load_state_dict(read_weights(best_path))  # the best epoch, not the last
    test = evaluate_arrays(model, dataset.test.images, dataset.test.labels)
    seconds = time.perf_counter() - started
    model.training_summary = _summary(config, dataset, history, test, seconds, len(train_idx), len(val_idx))
    model.save(best_path)
    plot_curves(history, run_dir / "curves.png")
    return TrainResult(run_dir, best_path, history, test, seconds)


def _augment_name(config: TrainConfig, info: data.DatasetInfo) -> str:
    return info.augment if config.augment == "auto" else config.augment


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
