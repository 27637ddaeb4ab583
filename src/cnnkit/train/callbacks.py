"""Keras-style callbacks: History, EarlyStopping, ModelCheckpoint, CSVLogger.

A callback sees the model (``self.model``) and the epoch's ``logs`` dict
(``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ...). Setting
``self.model.stop_training = True`` ends training after the current epoch.

Under torchrun every rank runs the callbacks, except those marked ``rank_zero_only``
(they write files, or decide from the clock): rank 0 alone runs them, and the others
follow its decision to stop.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
import time
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from cnnkit._io import atomic_write_text
from cnnkit.errors import ConfigError

__all__ = [
    "CSVLogger",
    "Callback",
    "CallbackList",
    "EarlyStopping",
    "History",
    "ModelCheckpoint",
    "TensorBoard",
    "TimeBudget",
]

Logs = dict[str, float]


class Callback:
    """Base class; override the hooks you need."""

    rank_zero_only = False  # under torchrun: run on rank 0 only (set for callbacks that write files)
    resume_epoch: int | None = None  # set in on_train_begin by a callback that restored a backup: fit continues there

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: nn.Module) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def state_dict(self) -> dict[str, Any]:
        """JSON-able state that a resumed run restores (what the callback has counted so far)."""
        return {}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        pass

    def on_train_begin(self, logs: Logs | None = None) -> None: ...
    def on_train_end(self, logs: Logs | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...


# Keras' per-batch hooks. cnnkit's engine calls callbacks once an epoch, so a callback defining one of
# these would silently never run it: refused, as LambdaCallback refuses them.
BATCH_HOOKS = tuple(
    f"on_{stage}batch_{end}" for stage in ("", "train_", "test_", "predict_") for end in ("begin", "end")
)


class CallbackList:
    """Calls each hook on every callback, in order."""

    def __init__(self, callbacks: Iterable[Callback], model: nn.Module, params: dict[str, Any]) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise ConfigError(f"callbacks must be cnnkit callbacks, got {type(cb).__name__}")
            per_batch = [hook for hook in BATCH_HOOKS if callable(getattr(cb, hook, None))]
            if per_batch:
                raise ConfigError(
                    f"{type(cb).__name__} defines {', '.join(per_batch)}: cnnkit calls callbacks once an epoch, "
                    "never per batch; move that work to on_epoch_begin/on_epoch_end (or on_train_begin/end)"
                )
            cb.set_model(model)
            cb.set_params(params)

    def __getattr__(self, hook: str):  # on_train_begin(...), on_epoch_end(...), ...
        def call(*args: Any) -> None:
            for cb in self.callbacks:
                getattr(cb, hook)(*args)

        return call


class History(Callback):
    """Records every epoch's logs: ``history.history["val_accuracy"]`` is a list, one value per epoch."""

    def __init__(self) -> None:
        super().__init__()
        self.history: dict[str, list[float]] = {}
        self.epoch: list[int] = []

    def state_dict(self) -> dict[str, Any]:
        return {"history": self.history, "epoch": self.epoch}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.history = {key: list(values) for key, values in state["history"].items()}
        self.epoch = list(state["epoch"])

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.epoch.append(epoch)
        for key, value in (logs or {}).items():
            self.history.setdefault(key, []).append(value)


class _Monitor:
    """Tracks the best value of a logged quantity (``mode`` min, max or auto from its name)."""

    def __init__(self, monitor: str, mode: str, min_delta: float = 0.0) -> None:
        if mode not in ("auto", "min", "max"):
            raise ConfigError(f"mode must be auto, min or max, got {mode!r}")
        if mode == "auto":
            mode = "max" if any(word in monitor for word in ("acc", "auc", "f1", "precision", "recall")) else "min"
        self.monitor, self.mode, self.min_delta = monitor, mode, abs(min_delta)
        self.best = math.inf if mode == "min" else -math.inf

    def improved(self, value: float, than: float | None = None) -> bool:
        """Whether ``value`` beats ``than`` (default: the best so far) by more than ``min_delta``."""
        than = self.best if than is None else than
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < than - self.min_delta
        return value > than + self.min_delta

    def value(self, logs: Logs | None) -> float | None:
        return None if logs is None else logs.get(self.monitor)


class EarlyStopping(Callback):
    """Stop when ``monitor`` has not improved for ``patience`` epochs (Keras' arguments)."""

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0, verbose: int = 0,
                 mode: str = "auto", baseline: float | None = None, restore_best_weights: bool = False,
                 start_from_epoch: int = 0) -> None:  # fmt: skip
        super().__init__()
        self._monitor = _Monitor(monitor, mode, min_delta)
        self.patience, self.verbose, self.baseline = patience, verbose, baseline
        self.restore_best_weights, self.start_from_epoch = restore_best_weights, start_from_epoch
        self.wait, self.stopped_epoch, self.best_weights = 0, 0, None
        self._resumed = False

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if self._resumed:
            return
        # Keras: the first monitored epoch is always the best so far; the baseline only decides the waiting.
        self.wait, self.stopped_epoch, self.best_weights, self.best_epoch = 0, 0, None, 0
        self._monitor.best = None

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "best": self._monitor.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait, self._monitor.best, self._resumed = state["wait"], state["best"], True

    def _better(self, value: float, than: float | None) -> bool:
        return than is None or self._monitor.improved(value, than)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        value = self._monitor.value(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        if self.restore_best_weights and self.best_weights is None:  # until an epoch improves, this one is best
            self.best_weights, self.best_epoch = copy.deepcopy(self.model.state_dict()), epoch
        self.wait += 1
        if self._better(value, self._monitor.best):
            self._monitor.best, self.best_epoch = value, epoch
            if self.restore_best_weights:
                self.best_weights = copy.deepcopy(self.model.state_dict())
            if self.baseline is None or self._better(value, self.baseline):  # beat the baseline too: wait anew
                self.wait = 0
            return
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping ({self._monitor.monitor} stopped improving)")

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            if self.verbose:
                print(f"Restoring model weights from the end of the best epoch: {self.best_epoch + 1}.")
            self.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model after each epoch, or only when ``monitor`` improves (``save_best_only``).

    ``filepath`` may hold Keras-style fields, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"``.
    Files are written atomically: an interrupted save leaves the previous file intact.
    """

    rank_zero_only = True

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 save_freq: str = "epoch", initial_value_threshold: float | None = None) -> None:  # fmt: skip
        super().__init__()
        self.filepath = os.fspath(filepath)
        if save_freq != "epoch":
            raise ConfigError(f"ModelCheckpoint saves once an epoch (save_freq='epoch'), got save_freq={save_freq!r}")
        if not self.filepath.endswith((".safetensors", ".keras", ".h5")):
            raise ConfigError(f"ModelCheckpoint writes model files (.safetensors, or a .keras name), got "
                              f"{self.filepath!r}")  # fmt: skip
        self._monitor = _Monitor(monitor, mode)
        if initial_value_threshold is not None:
            self._monitor.best = initial_value_threshold
        self.verbose, self.save_best_only, self.save_weights_only = verbose, save_best_only, save_weights_only

    def state_dict(self) -> dict[str, Any]:
        return {"best": self._monitor.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self._monitor.best = state["best"]

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        if not all(torch.isfinite(p).all() for p in self.model.parameters()):
            print(f"Epoch {epoch + 1}: weights are not finite; {self.filepath} keeps its last good model")
            return
        if self.save_best_only:
            value = self._monitor.value(logs)
            if value is None or not self._monitor.improved(value):
                return
            self._monitor.best = value
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_weights_only and hasattr(self.model, "save_weights"):
            self.model.save_weights(path)
        elif self.save_weights_only or not hasattr(self.model, "save"):
            from safetensors.torch import save_model

            from cnnkit._io import atomic_write

            atomic_write(path, lambda tmp: save_model(self.model, tmp))
        else:
            self.model.save(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved {path}")


class CSVLogger(Callback):
    """Write one row of logs per epoch to a CSV file, rewritten atomically each epoch.

    Besides the logs, each row has the learning rate at the epoch's end (``lr``) and how long
    the epoch took (``seconds``).
    """

    rank_zero_only = True

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self.rows: list[dict[str, Any]] = []

    def state_dict(self) -> dict[str, Any]:
        return {"rows": self.rows}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        # The rows up to the checkpoint: a row written after it (then a crash) is dropped.
        self.rows, self.append = list(state["rows"]), False
        self._resumed = True

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if getattr(self, "_resumed", False):
            return
        self.rows = []
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                self.rows = list(csv.DictReader(f, delimiter=self.separator))

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._started = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        row = {"epoch": epoch + 1, **(logs or {})}
        lr = _learning_rate(self.model)
        if lr is not None:
            row.setdefault("lr", lr)
        row["seconds"] = round(time.perf_counter() - self._started, 4)  # training and validation
        self.rows.append(row)
        columns = list(dict.fromkeys(key for r in self.rows for key in r))
        out = io.StringIO()
        writer = csv.DictWriter(out, columns, delimiter=self.separator, lineterminator="\n")
        writer.writeheader()
        writer.writerows(self.rows)
        atomic_write_text(self.filename, out.getvalue())


def _learning_rate(model: nn.Module | None) -> float | None:
    optimizer = getattr(model, "optimizer", None)
    if isinstance(optimizer, torch.optim.Optimizer):
        return float(optimizer.param_groups[0]["lr"])
    return None


class TimeBudget(Callback):
    """Stop training in time to end within ``seconds`` of wall clock, schedule included.

    After the first epoch it knows how long an epoch takes; if the planned epochs do not fit,
    it shortens the run and tells the learning-rate ``schedule`` (which then still decays to
    zero at the new end) instead of cutting training off mid-schedule.
    """

    rank_zero_only = True  # one clock decides; under torchrun the other ranks follow rank 0's schedule

    def __init__(self, seconds: float, schedule: Any = None, steps_per_epoch: int = 0,
                 clock: Callable[[], float] = time.perf_counter) -> None:  # fmt: skip
        super().__init__()
        self.clock = clock
        if seconds <= 0:
            raise ConfigError(f"a time budget must be positive, got {seconds}")
        self.seconds, self.schedule, self.steps_per_epoch = seconds, schedule, steps_per_epoch
        self.used, self._epoch_started, self.planned_epochs = 0.0, 0.0, None

    def state_dict(self) -> dict[str, Any]:
        return {"used": self.used, "planned_epochs": self.planned_epochs}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.used, self.planned_epochs = state["used"], state["planned_epochs"]

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        self._epoch_started = self.clock()

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.used += self.clock() - self._epoch_started
        per_epoch = self.used / (epoch + 1)
        fit = max(epoch + 1, int(self.seconds / per_epoch))
        total = self.params.get("epochs", fit)
        if self.planned_epochs is None and fit < total:
            self.planned_epochs = fit
            if hasattr(self.schedule, "total_steps") and self.steps_per_epoch:  # a cnnkit Schedule
                self.schedule.total_steps = fit * self.steps_per_epoch
            print(f"time budget {self.seconds:.0f}s: training for {fit} of {total} epochs")
        if self.planned_epochs is not None and epoch + 1 >= self.planned_epochs:
            self.model.stop_training = True


class TensorBoard(Callback):
    """Write each epoch's logs (and the learning rate) as TensorBoard scalars under ``log_dir``.

    The event file is created when training begins (so only the rank that trains with it writes).
    """

    rank_zero_only = True

    def __init__(self, log_dir: str | os.PathLike = "logs", **keras_only: Any) -> None:
        super().__init__()
        # Keras' histogram_freq, write_graph, update_freq, ...: accepted; cnnkit writes the epoch scalars only.
        unknown = sorted(
            set(keras_only)
            - {
                "histogram_freq",
                "write_graph",
                "write_images",
                "write_steps_per_second",
                "update_freq",
                "profile_batch",
                "embeddings_freq",
                "embeddings_metadata",
            }
        )
        if unknown:
            raise ConfigError(f"TensorBoard does not take {', '.join(unknown)}")
        try:
            from torch.utils.tensorboard import SummaryWriter
        except ImportError:
            raise ConfigError("TensorBoard logging needs the tensorboard package: pip install tensorboard") from None
        self.log_dir, self._writer_class = os.fspath(log_dir), SummaryWriter
        self.writer: Any = None

    def on_train_begin(self, logs: Logs | None = None) -> None:
        if self.writer is None:
            self.writer = self._writer_class(self.log_dir)

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        for key, value in (logs or {}).items():
            group = "validation" if key.startswith("val_") else "train"
            self.writer.add_scalar(f"{key.removeprefix('val_')}/{group}", value, epoch + 1)
        lr = _learning_rate(self.model)
        if lr is not None:
            self.writer.add_scalar("learning_rate", lr, epoch + 1)
        self.writer.flush()

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.writer is not None:
            self.writer.close()
            self.writer = None
