"""What a training run is made of, built from its :class:`~cnnkit.recipe.config.TrainConfig`.

The model (registered, or an architecture file; pretrained weights with a new head), its
input tensors, the optimizer and the class weights, the engine's settings and the run's
callbacks. :mod:`cnnkit.recipe.run` puts them together; ``cnnkit lr-find`` builds the same
model and optimizer.
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit import data
from cnnkit.data import prepare as data_prepare
from cnnkit.data.augment import make_augment
from cnnkit.data.transforms import conform, images_to_tensor
from cnnkit.errors import ConfigError
from cnnkit.models import Model, create_model, get_model_entry, load_architecture
from cnnkit.models.weights import load_pretrained
from cnnkit.recipe.config import AUTO_BATCH, TrainConfig
from cnnkit.runs import MODEL_FILE
from cnnkit.train import autobatch, losses, optimizers
from cnnkit.train.callbacks import Callback, CSVLogger, EarlyStopping, ModelCheckpoint, TensorBoard, TimeBudget
from cnnkit.train.settings import TrainSettings

__all__ = [
    "build_model",
    "class_weights",
    "default_size",
    "make_optimizer",
    "optimizer_spec",
    "resolve_batch_size",
    "resolve_settings",
    "run_callbacks",
    "train_labels",
    "training_tensors",
]


def build_model(config: TrainConfig, dataset: data.Dataset) -> Model:
    """The registered model named ``config.model``, or the architecture in a JSON file, sized for the data."""
    classes = len(dataset.class_names)
    height, width, channels = dataset.image_shape
    if config.model.endswith(".json"):
        model = load_architecture(config.model)
        if not model.built:
            model.build((config.image_size or height, config.image_size or width, channels))
        outputs = model._num_outputs()
        if outputs != classes:
            raise ConfigError(f"{config.model} outputs {outputs} classes but {dataset.name} has {classes}")
    else:
        size = config.image_size or max(height, get_model_entry(config.model).min_input_size)
        model = create_model(config.model, num_classes=classes, in_channels=channels, input_size=size)
    model.class_names = list(dataset.class_names)
    if config.weights:  # pretrained body, new head for these classes, preprocessing of the weights
        load_pretrained(model, config.weights, verbose=bool(config.verbose))
    return model


def training_tensors(prepared: data_prepare.TrainingData, model: Model) -> tuple[Any, tuple | None]:
    """The training set at the model's input (resident tensors, or the prepared stream) and validation tensors."""
    dataset = prepared.dataset
    train_set = prepared.stream
    if prepared.mapped is not None:  # (N, C, H, W) in [0, 1] on disk, batched by the engine like a tensor
        train_set = (prepared.mapped, torch.from_numpy(prepared.mapped.labels))
    elif train_set is None:  # (N, C, H, W) in [0, 1], moved to the device once by the engine
        train_set = (conform(images_to_tensor(dataset.train.images), model.image_shape),
                     torch.from_numpy(dataset.train.labels))  # fmt: skip
    validation = None
    if dataset.val is not None and len(dataset.val):
        validation = (conform(images_to_tensor(dataset.val.images), model.image_shape),
                      torch.from_numpy(dataset.val.labels))  # fmt: skip
    return train_set, validation


def train_labels(prepared: data_prepare.TrainingData) -> np.ndarray:
    if prepared.mapped is not None:
        return prepared.mapped.labels
    if prepared.stream is not None:
        return prepared.stream.dataset.labels
    return prepared.dataset.train.labels


def class_weights(spec: str, labels: np.ndarray, classes: int) -> torch.Tensor | None:
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


def optimizer_spec(config: TrainConfig) -> optimizers.Optimizer:
    """The configured optimizer (SGD with Nesterov momentum 0.9)."""
    settings: dict[str, Any] = {"name": config.optimizer, "learning_rate": config.lr}
    if config.optimizer == "sgd":
        settings.update(momentum=0.9, nesterov=True)
    return optimizers.get(settings)


def make_optimizer(config: TrainConfig, model: Model) -> torch.optim.Optimizer:
    """The configured optimizer over ``model``, weight decay on weights only."""
    return optimizer_spec(config).build(optimizers.decay_groups(model, config.weight_decay))


def resolve_settings(config: TrainConfig, data_augment: str, device: torch.device, num_classes: int | None = None
                     ) -> tuple[TrainSettings, dict[str, Any]]:  # fmt: skip
    """What this run uses wherever the config says ``auto``, decided once, here.

    Returns the engine's settings (typed: channels-last a bool, augmentation a function) and
    the config with the same choices written in (``config.json``, itself a valid config).
    ``data_augment`` is the data set's own augmentation policy, used for ``--augment auto``;
    ``num_classes`` is what label mixing (``mixup``, ``cutmix``) one-hot encodes to.
    """
    precision = config.precision
    if precision == "auto":
        precision = "bf16" if device.type == "cuda" and torch.cuda.is_bf16_supported() else "fp32"
    channels_last = config.channels_last != "off"  # oneDNN and cuDNN both prefer it for convolutions
    augment = data_augment if config.augment == "auto" else config.augment
    settings = TrainSettings(precision=precision, channels_last=channels_last,
                             augment=make_augment(augment, num_classes), clip_norm=config.clip_norm,
                             compile=config.compile, accumulate=config.accumulate)  # fmt: skip
    recorded = {**config.to_dict(), "device": str(device), "precision": precision, "augment": augment,
                "channels_last": "on" if channels_last else "off",
                "freeze_epochs": config.head_only_epochs}  # fmt: skip
    return settings, recorded


CPU_BATCH = 64  # --batch-size auto off a GPU: memory is not what limits a CPU's batch


def resolve_batch_size(config: TrainConfig, model: Model, prepared: data_prepare.TrainingData,
                       device: torch.device, processes: int = 1,
                       free_memory: Callable[[torch.device], int] = autobatch.free_memory) -> TrainConfig:  # fmt: skip
    """The config with ``--batch-size auto`` replaced by the largest batch that fits the GPU (found by trying).

    On a CPU it is :data:`CPU_BATCH`. Under torchrun every process would search its own GPU:
    refused, the batch is given there. ``free_memory`` is an argument for the tests' simulated GPU.
    """
    if config.batch_size != AUTO_BATCH:
        return config
    if processes > 1:
        raise ConfigError("--batch-size auto is for one process: under torchrun give the global batch")
    if device.type != "cuda":
        found = CPU_BATCH
        how = f"{found} (on {device.type}, memory does not limit the batch)"
    else:
        example = conform(images_to_tensor(prepared.dataset.test.images[:1]), model.image_shape)[0]  # (C, H, W)
        loss = losses.resolve(losses.SparseCategoricalCrossentropy(), model.output_activation)
        trial = autobatch.trial_step(model, loss, example, len(prepared.dataset.class_names))
        free = free_memory(device)
        found = autobatch.find_batch_size(trial, free, largest=max(1, prepared.train_size))
        how = f"{found}, the largest that fits in {autobatch.DEFAULT_SHARE:.0%} of {free / 2**30:.1f} GiB free"
    if config.verbose:
        print(f"batch size auto: {how}")
    return config.replace(batch_size=found)


def run_callbacks(config: TrainConfig, run_dir: Path, schedule: Any, steps: int, validated: bool
                  ) -> dict[str, Callback]:  # fmt: skip
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


def default_size(config: TrainConfig) -> int | None:
    """The registered model's own input size: what a folder's images are resized to without --image-size."""
    return None if config.model.endswith(".json") else get_model_entry(config.model).input_size
