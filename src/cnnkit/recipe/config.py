"""The training configuration: every option of a run declared once, with its default.

Each field of :class:`TrainConfig` is one training option. Its metadata (:func:`option`) says
how the command line shows it: help text, choices, flag name, metavar, a parser for special
values and the help section. ``cnnkit train``'s flags are generated from these fields
(:mod:`cnnkit.cli._options`), :meth:`TrainConfig.validate` checks the same choices, and the
resolved config is saved with every run as ``config.json`` (:meth:`TrainConfig.from_file`
reads it back). A new field is therefore a new ``--flag`` and a new ``config.json`` key.

Choices come from the registries that use them: optimizer and schedule names from
:mod:`cnnkit.train.optimizers`, precisions from the engine's table, augmentations from
:mod:`cnnkit.data.augment`.
"""

from __future__ import annotations

import dataclasses
import json
import os
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass, fields
from typing import Any

from cnnkit.data.augment import AUGMENTATIONS, parse_policy
from cnnkit.data.decoded_cache import CACHE_MODES
from cnnkit.errors import ConfigError
from cnnkit.train.optimizers import OPTIMIZERS, SCHEDULES
from cnnkit.train.settings import PRECISIONS

__all__ = ["AUTO_BATCH", "BATCH_SCOPES", "CHANNELS_LAST", "LR_FIND_OPTIONS", "TRACKERS", "Option",
           "TrainConfig", "field_type", "option", "option_of", "parse_batch_size", "parse_duration"]  # fmt: skip

CHANNELS_LAST = ("auto", "on", "off")  # "auto" is on: oneDNN and cuDNN both prefer it for convolutions
BATCH_SCOPES = ("global", "process")  # what batch_size counts under torchrun
AUTO_BATCH = 0  # batch_size "auto": the largest that fits the GPU (cnnkit.train.autobatch), recorded once found
TRACKERS = ("none", "mlflow")  # experiment trackers (cnnkit.recipe.tracking)
# The options that change what `cnnkit lr-find`'s sweep sees (the model, its data, the optimizer); the others would not.
LR_FIND_OPTIONS = ("model", "data", "data_dir", "max_bad_files", "workers", "batch_size", "optimizer", "weight_decay",
                   "image_size", "seed", "device", "runs_dir")  # fmt: skip


def parse_duration(text: str) -> float:
    """``90``, ``90s``, ``5m``, ``1.5h`` -> seconds; a ``ValueError`` says what was expected."""
    match = re.fullmatch(r"\s*(\d+(?:\.\d+)?)\s*([smh]?)\s*", text)
    if not match:
        raise ValueError(f"expected a duration like 90, 90s, 5m or 1h, got {text!r}")
    return float(match.group(1)) * {"": 1, "s": 1, "m": 60, "h": 3600}[match.group(2)]


def parse_batch_size(text: str) -> int:
    """``64`` -> 64; ``auto`` -> :data:`AUTO_BATCH`."""
    if text.strip().lower() == "auto":
        return AUTO_BATCH
    try:
        return int(text)
    except ValueError:
        raise ValueError(f"expected a number of images or auto, got {text!r}") from None


@dataclass(frozen=True)
class Option:
    """How one field of a config appears on the command line (its ``metadata["option"]``).

    Attributes:
        help: what the option does; the default is appended when it is a value.
        choices: the allowed values (checked by ``validate`` and by the parser).
        flags: the flags, when not ``--field-name`` (``--no-field-name`` for a bool that is on by default).
        metavar: the placeholder in the help (default: the choices, or the field name in capitals).
        parse: turns the flag's text into the value, for special values (durations); raises ``ValueError``.
        const: makes the flag take no argument and store this value (``-q`` stores ``verbose=0``).
        group: the help section the flag is listed in (default: the command's own options).
    """

    help: str = ""
    choices: Sequence[Any] | None = None
    flags: tuple[str, ...] = ()
    metavar: str | None = None
    parse: Callable[[str], Any] | None = None
    const: Any = None
    group: str | None = None


_NO_OPTION = Option()  # a field declared without option(): a flag of its type, no help


def option(default: Any, help: str = "", **settings: Any) -> Any:
    """A dataclass field with ``default`` and its command-line :class:`Option` (``help``, ``choices``, ...)."""
    return dataclasses.field(default=default, metadata={"option": Option(help, **settings)})


def option_of(f: dataclasses.Field) -> Option:
    """The :class:`Option` of a config field (a plain field has the defaults)."""
    return f.metadata.get("option", _NO_OPTION)


def _one_of(choices: Sequence[Any]) -> str:
    """``a, b or c``."""
    names = [str(c) for c in choices]
    return names[0] if len(names) == 1 else f"{', '.join(names[:-1])} or {names[-1]}"


_TYPES: dict[str, type] = {"int": int, "float": float, "str": str, "bool": bool}


def field_type(f: dataclasses.Field) -> tuple[type, bool]:
    """A config field's value type and whether it may be None, from its annotation as written (``"int | None"``)."""
    base, _, rest = str(f.type).partition(" |")
    if base not in _TYPES or rest.strip() not in ("", "None"):
        raise TypeError(f"option {f.name}: an option is an int, float, str or bool (or None), not {f.type}")
    return _TYPES[base], rest.strip() == "None"


def _check_type(f: dataclasses.Field, value: Any) -> None:
    expected, optional = field_type(f)
    if value is None and optional:
        return
    allowed = (int, float) if expected is float else expected  # an int is a fine float (JSON writes 1.0 as 1)
    if not isinstance(value, allowed) or (expected is not bool and isinstance(value, bool)):
        raise ConfigError(f"option {f.name} must be {expected.__name__}, got {value!r}")


def _parsed(name: str, value: Any) -> Any:
    """A config file's text for a field that parses special values (``"batch_size": "auto"``, ``"time": "5m"``)."""
    f = TrainConfig.__dataclass_fields__[name]
    parse = option_of(f).parse
    if parse is None or not isinstance(value, str) or field_type(f)[0] is str:
        return value
    try:
        return parse(value)
    except ValueError as e:
        raise ConfigError(f"option {name}: {e}") from None


TORCHRUN = "under torchrun"  # the help section of the options only a torchrun job uses


@dataclass
class TrainConfig:
    """Everything a training run depends on.

    ``model`` is a registered name (``cnnkit models``) or the path of an architecture
    JSON (what ``model.get_config()`` returns); ``data`` a data set name (``cnnkit datasets``),
    a folder of class sub-folders, or a CSV of ``path,label``.
    """

    # The data and the model.
    model: str = option("seed", "registered model (see `cnnkit models`) or an architecture .json")
    data: str = option("digits", "data set name (see `cnnkit datasets`), a folder of class sub-folders, "
                       "or a CSV of path,label")  # fmt: skip
    data_dir: str | None = option(None, "the data cache for standard data sets "
                                  "(default: $CNNKIT_DATA, else ~/.cache/cnnkit)")  # fmt: skip
    max_bad_files: float = option(0.1, "stop before training when more than this share of a folder's files "
                                  "is unreadable", metavar="SHARE")  # fmt: skip
    workers: int | None = option(None, "image-decoding workers for a folder or CSV, per process "
                                 "(default: one per core)")  # fmt: skip
    cache: str = option("auto", "where a folder's or CSV's decoded images live between epochs: ram; disk (uint8 at "
                        "the training size in the data cache, decoded once, memory-mapped, shared by torchrun's "
                        "processes); none (decode the files every epoch); auto: ram when they fit in a quarter of "
                        "the free memory, else disk", choices=CACHE_MODES)  # fmt: skip
    # The optimization.
    epochs: int = option(30, "passes over the training images, after any head-only --freeze-epochs")
    batch_size: int = option(64, "images per step (per micro-batch with --accumulate); auto: the largest that fits "
                             "in 0.8 of the GPU's free memory, found by trying (64 on a CPU); under torchrun the "
                             "global batch, split evenly over the processes (so N processes train as one would), "
                             "unless --batch-scope process", parse=parse_batch_size, metavar="N|auto")  # fmt: skip
    accumulate: int = option(1, "add up the gradients of N batches before each optimizer step: trains as a batch N "
                             "times --batch-size would, in the memory of one (under torchrun, one all-reduce per "
                             "step)", metavar="N")  # fmt: skip
    optimizer: str = option("adam", "sgd uses Nesterov momentum 0.9", choices=tuple(OPTIMIZERS))
    lr: float = option(3e-3, "peak learning rate of the schedule (see `cnnkit lr-find`), for the global batch: "
                       "never scaled by the number of processes; when you grow --batch-size k times, raise it "
                       "yourself (about k times for SGD)")  # fmt: skip
    weight_decay: float = option(0.0, "applied to weights, never to biases or norm scales")
    schedule: str = option("onecycle", "the learning rate over the run: onecycle and cosine warm up, then decay "
                           "to zero; constant stays at --lr", choices=SCHEDULES)  # fmt: skip
    label_smoothing: float = option(0.1, "share of each target spread over the other classes")
    clip_norm: float | None = option(None, "clip the gradient's global norm")
    class_weights: str = option("none", "none, auto (inverse class frequency) or 'label:weight,...'")
    ema: float = option(0.0, "keep an exponential moving average of the weights with this decay, e.g. 0.999; "
                        "0 is off", metavar="DECAY")  # fmt: skip
    augment: str = option("auto", "the data set's own policy (auto), none, or operations joined by '+': "
                          + ", ".join(AUGMENTATIONS))  # fmt: skip
    tta: bool = option(False, "average test predictions over flips")
    image_size: int | None = option(None, "resize images to SIZE x SIZE (default: the model's or the data "
                                    "set's size)", metavar="SIZE")  # fmt: skip
    val_split: float = option(0.1, "fraction of the training images held out for validation")
    patience: int | None = option(None, "early stopping: stop after this many epochs without a better val_loss")
    time: float | None = option(None, "wall-clock budget (90s, 5m, 1h); the schedule shrinks to fit",
                                parse=parse_duration)  # fmt: skip
    # How it runs.
    precision: str = option("auto", "auto: bf16 on a GPU that has it, else fp32",
                            choices=("auto", *PRECISIONS))  # fmt: skip
    channels_last: str = option("auto", "channels-last memory layout for convolutions; auto is on",
                                choices=CHANNELS_LAST)  # fmt: skip
    compile: bool = option(False, "torch.compile the model for training")
    seed: int = option(0, "seed of every random number generator")
    deterministic: bool = option(False, "bit-identical runs (slower on GPU)")
    device: str = option("auto", "auto, cpu, cuda, cuda:N (under torchrun each process takes cuda:LOCAL_RANK)")
    # What it writes.
    runs_dir: str = option("runs", "where new run folders go")
    out: str | None = option(None, "the run folder to write (default: runs/<model>-<data>-<time>)")
    tensorboard: bool = option(False, "also write TensorBoard event files")
    track: str = option("none", "log the run to an experiment tracker: mlflow (options, every epoch's metrics, the "
                        "model, report and plots; needs pip install 'cnnkit[mlflow]')", choices=TRACKERS)  # fmt: skip
    track_uri: str | None = option(None, "where --track logs: a folder (default: ./mlruns, an SQLite store with "
                                   "its artifacts) or an MLflow tracking URI (http://..., sqlite:///...)",
                                   metavar="URI")  # fmt: skip
    report: bool = option(True, "skip report.html (evaluation, filters, feature maps, Grad-CAM) at the end "
                          "(a few seconds; `cnnkit report RUN` writes it later)")  # fmt: skip
    verbose: int = option(1, "no progress output, only the result", flags=("-q", "--quiet"), const=0,
                          choices=(0, 1, 2))  # fmt: skip
    # Fine-tuning.
    weights: str | None = option(None, "start from pretrained weights and fine-tune: 'imagenet' (torchvision's, "
                                 "downloaded once), a cnnkit run (its folder, latest, or a prefix of its name) or "
                                 "a .safetensors/.pth file (a cnnkit model or a torchvision state dict)",
                                 metavar="imagenet|RUN|FILE")  # fmt: skip
    freeze_epochs: int | None = option(None, "with --weights: train only the new head for N epochs first "
                                       "(default 1), then all layers", metavar="N")  # fmt: skip
    # Under torchrun (cnnkit.train.distributed); one process ignores these.
    batch_scope: str = option("global", "global: --batch-size is the global batch; process: it is each "
                              "process's batch, and the global batch is that times the number of processes "
                              "(config.json records the global batch)",
                              choices=BATCH_SCOPES, group=TORCHRUN)  # fmt: skip
    sync_bn: bool = option(False, "BatchNorm statistics over the global batch (SyncBatchNorm; GPUs only)",
                           group=TORCHRUN)  # fmt: skip
    dist_timeout: float = option(600.0, "seconds (or 90s, 5m, 1h) a process waits for the others (a hung or "
                                 "dead process) before the job ends with an error", parse=parse_duration,
                                 metavar="TIME", group=TORCHRUN)  # fmt: skip

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
        config = cls(**{name: _parsed(name, value) for name, value in values.items()})
        config.validate()
        return config

    @classmethod
    def from_file(cls, path: str | os.PathLike) -> TrainConfig:
        """A config from a JSON file of options (what ``--config`` reads, and a run's ``config.json``)."""
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
        """Every option by name: JSON-ready, and :meth:`from_dict` gives the same config back."""
        return dataclasses.asdict(self)

    def validate(self) -> None:
        """Check types, choices and ranges; raise :class:`ConfigError` naming the option."""
        for f in fields(self):
            value = getattr(self, f.name)
            _check_type(f, value)
            choices = option_of(f).choices
            if choices is not None and value not in choices:
                raise ConfigError(f"{f.name} must be {_one_of(choices)}, got {value!r}")
        checks = [
            (self.epochs >= 1, "epochs must be at least 1"),
            (self.batch_size >= 1 or self.batch_size == AUTO_BATCH, "batch_size must be at least 1 (or auto)"),
            (self.accumulate >= 1, "accumulate must be at least 1 batch per step"),
            (self.lr > 0, "lr must be positive"),
            (self.weight_decay >= 0, "weight_decay must be >= 0"),
            (0 <= self.label_smoothing < 1, "label_smoothing must be in [0, 1)"),
            (0 <= self.val_split < 1, "val_split must be in [0, 1)"),
            (self.image_size is None or self.image_size >= 8, "image_size must be at least 8"),
            (0 <= self.max_bad_files <= 1, "max_bad_files must be a share in [0, 1]"),
            (self.workers is None or self.workers >= 0, "workers must be >= 0"),
            (self.clip_norm is None or self.clip_norm > 0, "clip_norm must be positive"),
            (0 <= self.ema < 1, "ema must be a decay in [0, 1), e.g. 0.999 (0 turns it off)"),
            (self.patience is None or self.patience >= 1, "patience must be at least 1"),
            (self.time is None or self.time > 0, "time must be a positive number of seconds"),
            (self.freeze_epochs is None or self.freeze_epochs >= 0, "freeze_epochs must be >= 0"),
            (not self.freeze_epochs or self.weights is not None, "freeze_epochs needs weights to fine-tune"),
            (self.dist_timeout > 0, "dist_timeout must be a positive number of seconds"),
        ]
        for ok, message in checks:
            if not ok:
                raise ConfigError(message)
        if self.augment != "auto":
            parse_policy(self.augment)  # raises for an unknown operation
        if not re.fullmatch(r"none|auto|\d+:\d*\.?\d+(,\d+:\d*\.?\d+)*", self.class_weights):
            raise ConfigError(f"class_weights must be none, auto or 'label:weight,...', got {self.class_weights!r}")
