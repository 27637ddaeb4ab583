"""Keras-style callbacks: History, EarlyStopping, ModelCheckpoint, CSVLogger.

A callback sees the model (``self.model``) and the epoch's ``logs`` dict
(``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``, ...). Setting
``self.model.stop_training = True`` ends training after the current epoch.
"""

from __future__ import annotations

import copy
import csv
import io
import math
import os
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from cnnkit._io import atomic_write_text
from cnnkit.errors import ConfigError

__all__ = ["CSVLogger", "Callback", "CallbackList", "EarlyStopping", "History", "ModelCheckpoint"]

Logs = dict[str, float]


class Callback:
    """Base class; override the hooks you need."""

    def __init__(self) -> None:
        self.model: nn.Module | None = None
        self.params: dict[str, Any] = {}

    def set_model(self, model: nn.Module) -> None:
        self.model = model

    def set_params(self, params: dict[str, Any]) -> None:
        self.params = params

    def on_train_begin(self, logs: Logs | None = None) -> None: ...
    def on_train_end(self, logs: Logs | None = None) -> None: ...
    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None: ...
    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None: ...


class CallbackList:
    """Calls each hook on every callback, in order."""

    def __init__(self, callbacks: Iterable[Callback], model: nn.Module, params: dict[str, Any]) -> None:
        self.callbacks = list(callbacks)
        for cb in self.callbacks:
            if not isinstance(cb, Callback):
                raise ConfigError(f"callbacks must be cnnkit callbacks, got {type(cb).__name__}")
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

    def improved(self, value: float) -> bool:
        if math.isnan(value):
            return False
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

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

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.wait, self.stopped_epoch, self.best_weights = 0, 0, None
        self._monitor.best = math.inf if self._monitor.mode == "min" else -math.inf
        if self.baseline is not None:
            self._monitor.best = self.baseline

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        value = self._monitor.value(logs)
        if value is None or epoch < self.start_from_epoch:
            return
        self.wait += 1
        if self._monitor.improved(value):
            self._monitor.best, self.wait = value, 0
            if self.restore_best_weights:
                self.best_weights = copy.deepcopy(self.model.state_dict())
        if self.wait >= self.patience and epoch > 0:
            self.stopped_epoch = epoch
            self.model.stop_training = True
            if self.verbose:
                print(f"Epoch {epoch + 1}: early stopping ({self._monitor.monitor} stopped improving)")

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.restore_best_weights and self.best_weights is not None:
            self.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model after each epoch, or only when ``monitor`` improves (``save_best_only``).

    ``filepath`` may hold Keras-style fields, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.safetensors"``.
    Files are written atomically: an interrupted save leaves the previous file intact.
    """

    def __init__(self, filepath: str | os.PathLike, monitor: str = "val_loss", verbose: int = 0,
                 save_best_only: bool = False, save_weights_only: bool = False, mode: str = "auto",
                 initial_value_threshold: float | None = None) -> None:  # fmt: skip
        super().__init__()
        self.filepath = os.fspath(filepath)
        if not self.filepath.endswith(".safetensors"):
            raise ConfigError(f"ModelCheckpoint writes .safetensors files, got {self.filepath!r}")
        self._monitor = _Monitor(monitor, mode)
        if initial_value_threshold is not None:
            self._monitor.best = initial_value_threshold
        self.verbose, self.save_best_only, self.save_weights_only = verbose, save_best_only, save_weights_only

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs or {}
        if self.save_best_only:
            value = self._monitor.value(logs)
            if value is None or not self._monitor.improved(value):
                return
            self._monitor.best = value
        path = self.filepath.format(epoch=epoch + 1, **logs)
        if self.save_weights_only or not hasattr(self.model, "save"):
            from safetensors.torch import save_model

            from cnnkit._io import atomic_write

            atomic_write(path, lambda tmp: save_model(self.model, tmp))
        else:
            self.model.save(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved {path}")


class CSVLogger(Callback):
    """Write one row of logs per epoch to a CSV file, rewritten atomically each epoch."""

    def __init__(self, filename: str | os.PathLike, separator: str = ",", append: bool = False) -> None:
        super().__init__()
        self.filename, self.separator, self.append = os.fspath(filename), separator, append
        self.rows: list[dict[str, Any]] = []

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.rows = []
        if self.append and os.path.exists(self.filename):
            with open(self.filename, newline="") as f:
                self.rows = list(csv.DictReader(f, delimiter=self.separator))

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        row = {"epoch": epoch + 1, **(logs or {})}
        lr = _learning_rate(self.model)
        if lr is not None:
            row.setdefault("lr", lr)
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
