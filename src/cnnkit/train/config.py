"""The training configuration: typed, with every default in one place.

``cnnkit train`` builds one from a JSON file (``--config``) and then its flags; the
resolved config is saved with every run as ``config.json``.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from dataclasses import dataclass, fields
from typing import Any

from cnnkit.errors import ConfigError

__all__ = ["TrainConfig"]


_TYPES: dict[str, type | tuple[type, ...]] = {"int": int, "float": (int, float), "str": str, "bool": bool}


def _check_type(name: str, annotation: str, value: Any) -> None:
    """``annotation`` is the field's type as written, e.g. ``"int | None"``."""
    base, optional = annotation.split(" |")[0], annotation.endswith("| None")
    if value is None and optional:
        return
    expected = _TYPES[base]
    if not isinstance(value, expected) or (base != "bool" and isinstance(value, bool)):
        raise ConfigError(f"option {name} must be {base}, got {value!r}")


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    ``model`` is a registered name (``cnnkit models``) or the path of an architecture
    JSON (what ``model.get_config()`` returns); ``data`` a data set name (``cnnkit datasets``),
    a folder of class sub-folders, or a CSV of ``path,label``.
    """

    model: str = "seed"
    data: str = "digits"
    data_dir: str | None = None  # the data cache (default: $CNNKIT_DATA, else ~/.cache/cnnkit)
    max_bad_files: float = 0.1  # a folder/CSV with a larger share of unreadable files stops before training
    workers: int | None = None  # image-decoding workers for folders/CSVs (default: one per core)
    epochs: int = 30
    batch_size: int = 64  # images per step in all; under torchrun split over the processes (see batch_scope)
    optimizer: str = "adam"  # adam, adamw, sgd (Nesterov momentum 0.9), rmsprop
    lr: float = 3e-3  # the peak learning rate of the schedule
    weight_decay: float = 0.0  # applied to weights only, never to biases or norm scales
    schedule: str = "onecycle"  # onecycle, cosine (both with warm-up), constant
    label_smoothing: float = 0.1
    clip_norm: float | None = None  # clip the gradient's global norm
    class_weights: str = "none"  # none, auto (inverse class frequency), or "0:1,3:2.5"
    ema: float = 0.0  # decay of an exponential moving average of the weights; 0 = off
    augment: str = "auto"  # the data set's own policy, or e.g. "flip+crop+cutout" (see cnnkit.data.augment)
    tta: bool = False  # average the test predictions over horizontal flips
    image_size: int | None = None  # default: the data set's image size
    val_split: float = 0.1
    patience: int | None = None  # early stopping: epochs without a better val_loss
    time: float | None = None  # wall-clock budget in seconds; the schedule shrinks to fit
    precision: str = "auto"  # auto (bf16 on a GPU that has it, else fp32), fp32, bf16, fp16
    channels_last: str = "auto"  # auto (on), on, off
    compile: bool = False  # torch.compile the model for training
    seed: int = 0
    deterministic: bool = False
    device: str = "auto"
    runs_dir: str = "runs"
    out: str | None = None
    tensorboard: bool = False
    report: bool = True  # write report.html (evaluation, filters, feature maps, Grad-CAM) when training ends
    verbose: int = 1
    weights: str | None = None  # "imagenet", or a .safetensors/.pth file to start from (fine-tuning)
    freeze_epochs: int | None = None  # head-only epochs before `epochs` of all layers; default 1 with weights
    # Under torchrun (cnnkit.train.distributed); one process ignores these.
    batch_scope: str = "global"  # batch_size is the global batch ("global") or each process's ("process")
    sync_bn: bool = False  # BatchNorm statistics over the global batch (SyncBatchNorm; GPUs only)
    dist_timeout: float = 600.0  # seconds a process waits for the others before the job ends with an error

    @property
    def head_only_epochs(self) -> int:
        """``freeze_epochs`` resolved: 1 when fine-tuning from weights unless set."""
        return self.freeze_epochs if self.freeze_epochs is not None else int(self.weights is not None)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> TrainConfig:
        """A config from a dict (e.g. JSON); unknown keys are an error, not silently ignored."""
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            raise ConfigError(f"unknown training option(s): {', '.join(unknown)}; known: {', '.join(sorted(known))}")
        config = cls(**values)
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TrainConfig:
        try:
            with open(path) as f:
                values = json.load(f)
        except FileNotFoundError:
            raise ConfigError(f"{path}: no such config file") from None
        except json.JSONDecodeError as e:
            raise ConfigError(f"{path}: not valid JSON ({e})") from None
        if not isinstance(values, dict):
            raise ConfigError(f"{path}: a config file holds a JSON object")
        return cls.from_dict(values)

    def replace(self, **overrides: Any) -> TrainConfig:
        """A copy with the given (non-None) values changed, validated."""
        config = dataclasses.replace(self, **{k: v for k, v in overrides.items() if v is not None})
        config.validate()
        return config

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check types and ranges; raise :class:`ConfigError` naming the option."""
        for f in fields(self):
            _check_type(f.name, str(f.type), getattr(self, f.name))
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1, "batch_size must be at least 1"),
            (self.lr > 0, "lr must be positive"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.val_split < 1, "val_split must be in [0, 1)"),
            (self.image_size is None or self.image_size >= 8, "image_size must be at least 8"),
            (0 <= self.max_bad_files <= 1, "max_bad_files must be a share in [0, 1]"),
            (self.workers is None or self.workers >= 0, "workers must be >= 0"),
            (self.verbose in (0, 1, 2), "verbose must be 0, 1 or 2"),
            (self.optimizer in ("adam", "adamw", "sgd", "rmsprop"), "optimizer must be adam, adamw, sgd or rmsprop"),
            (self.schedule in ("onecycle", "cosine", "constant"), "schedule must be onecycle, cosine or constant"),
            (self.clip_norm is None or self.clip_norm > 0, "clip_norm must be positive"),
            (0 <= self.ema < 1, "ema must be a decay in [0, 1), e.g. 0.999 (0 turns it off)"),
            (self.patience is None or self.patience >= 1, "patience must be at least 1"),
            (self.time is None or self.time > 0, "time must be a positive number of seconds"),
            (self.precision in ("auto", "fp32", "bf16", "fp16"), "precision must be auto, fp32, bf16 or fp16"),
            (self.channels_last in ("auto", "on", "off"), "channels_last must be auto, on or off"),
            (self.freeze_epochs is None or self.freeze_epochs >= 0, "freeze_epochs must be >= 0"),
            (not self.freeze_epochs or self.weights is not None, "freeze_epochs needs weights to fine-tune"),
            (self.batch_scope in ("global", "process"), "batch_scope must be global or process"),
            (self.dist_timeout > 0, "dist_timeout must be a positive number of seconds"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.augment != "auto":
            from cnnkit.data.augment import make_augment

            make_augment(self.augment)  # raises for an unknown operation
        if not re.fullmatch(r"none|auto|\d+:\d*\.?\d+(,\d+:\d*\.?\d+)*", self.class_weights):
            raise ConfigError(f"class_weights must be none, auto or 'label:weight,...', got {self.class_weights!r}")
