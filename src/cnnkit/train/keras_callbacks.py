"""``keras.callbacks``: every callback cnnkit has, under Keras' names and with Keras' semantics.

The basic ones live in :mod:`cnnkit.train.callbacks` (History, EarlyStopping, ModelCheckpoint,
CSVLogger, TensorBoard); this module adds the ones that steer the learning rate
(ReduceLROnPlateau, LearningRateScheduler), BackupAndRestore (an interrupted ``fit`` resumes
from its backup folder), TerminateOnNaN and LambdaCallback. Each epoch's logs get the
``learning_rate``, as Keras 3 logs it. A Keras callback cnnkit lacks is one clear error.
"""

from __future__ import annotations

import inspect
import math
import os
import shutil
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from cnnkit._keras_names import missing
from cnnkit.errors import ConfigError
from cnnkit.train.callbacks import (
    Callback,
    CSVLogger,
    EarlyStopping,
    History,
    Logs,
    ModelCheckpoint,
    TensorBoard,
    TimeBudget,
    _Monitor,
)
from cnnkit.train.checkpoint import RESUME_FILE, TrainState, load_checkpoint, save_checkpoint

__all__ = [
    "BackupAndRestore",
    "CSVLogger",
    "Callback",
    "EarlyStopping",
    "History",
    "LambdaCallback",
    "LearningRateScheduler",
    "ModelCheckpoint",
    "ReduceLROnPlateau",
    "TensorBoard",
    "TerminateOnNaN",
    "TimeBudget",
]


def _optimizer(callback: Callback) -> torch.optim.Optimizer:
    optimizer = getattr(callback.model, "optimizer", None)
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise ConfigError(f"{type(callback).__name__} needs a compiled model being fitted (model.optimizer)")
    return optimizer


def _get_lr(callback: Callback) -> float:
    return float(_optimizer(callback).param_groups[0]["lr"])


def _set_lr(callback: Callback, rate: float) -> None:
    if not isinstance(rate, (int, float)) or not math.isfinite(rate):
        raise ConfigError(f"{type(callback).__name__}: the learning rate must be a finite number, got {rate!r}")
    for group in _optimizer(callback).param_groups:
        group["lr"] = float(rate)


class LearningRateScheduler(Callback):
    """Set the learning rate at each epoch's start to ``schedule(epoch, lr)`` (or ``schedule(epoch)``)."""

    def __init__(self, schedule: Callable[..., float], verbose: int = 0) -> None:
        super().__init__()
        self.schedule, self.verbose = schedule, verbose
        try:
            self._takes_lr = len(inspect.signature(schedule).parameters) >= 2
        except (TypeError, ValueError):
            self._takes_lr = True

    def on_epoch_begin(self, epoch: int, logs: Logs | None = None) -> None:
        rate = self.schedule(epoch, _get_lr(self)) if self._takes_lr else self.schedule(epoch)
        _set_lr(self, float(rate))
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {float(rate)}.")

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        if logs is not None:
            logs["learning_rate"] = _get_lr(self)


class ReduceLROnPlateau(Callback):
    """Multiply the learning rate by ``factor`` when ``monitor`` has not improved for ``patience`` epochs."""

    def __init__(self, monitor: str = "val_loss", factor: float = 0.1, patience: int = 10, verbose: int = 0,
                 mode: str = "auto", min_delta: float = 1e-4, cooldown: int = 0, min_lr: float = 0.0,
                 **keras_only: Any) -> None:  # fmt: skip
        super().__init__()
        if factor >= 1.0:
            raise ConfigError(f"ReduceLROnPlateau does not support a factor >= 1.0, got {factor}")
        if set(keras_only) - {"epsilon"}:
            raise ConfigError(f"ReduceLROnPlateau does not take {', '.join(sorted(keras_only))}")
        self._monitor = _Monitor(monitor, mode, keras_only.get("epsilon", min_delta))
        self.factor, self.patience, self.verbose = factor, patience, verbose
        self.cooldown, self.min_lr = cooldown, min_lr
        self.wait, self.cooldown_counter = 0, 0

    def state_dict(self) -> dict[str, Any]:
        return {"wait": self.wait, "cooldown_counter": self.cooldown_counter, "best": self._monitor.best}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.wait, self.cooldown_counter, self._monitor.best = state["wait"], state["cooldown_counter"], state["best"]

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        logs = logs if logs is not None else {}
        logs["learning_rate"] = _get_lr(self)
        value = self._monitor.value(logs)
        if value is None:
            return
        if self.cooldown_counter > 0:
            self.cooldown_counter -= 1
            self.wait = 0
        if self._monitor.improved(value):
            self._monitor.best, self.wait = value, 0
        elif self.cooldown_counter <= 0:
            self.wait += 1
            if self.wait >= self.patience:
                old = _get_lr(self)
                if old > self.min_lr:
                    _set_lr(self, max(old * self.factor, self.min_lr))
                    if self.verbose:
                        print(f"Epoch {epoch + 1}: ReduceLROnPlateau reducing learning rate to {_get_lr(self)}.")
                    self.cooldown_counter, self.wait = self.cooldown, 0


class TerminateOnNaN(Callback):
    """Stop training after an epoch whose loss is NaN or infinite."""

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        loss = (logs or {}).get("loss")
        if loss is not None and not math.isfinite(loss):
            print(f"Epoch {epoch + 1}: invalid loss, terminating training")
            self.model.stop_training = True


class LambdaCallback(Callback):
    """A callback from functions: ``on_epoch_begin(epoch, logs)``, ``on_epoch_end(epoch, logs)``,
    ``on_train_begin(logs)``, ``on_train_end(logs)``. cnnkit's engine has no per-batch hooks."""

    def __init__(self, on_epoch_begin: Callable | None = None, on_epoch_end: Callable | None = None,
                 on_train_begin: Callable | None = None, on_train_end: Callable | None = None,
                 **batch_hooks: Callable) -> None:  # fmt: skip
        super().__init__()
        if batch_hooks:
            raise ConfigError(f"LambdaCallback: cnnkit calls callbacks once an epoch, not {', '.join(batch_hooks)}; "
                              f"use on_epoch_begin/on_epoch_end")  # fmt: skip
        for hook, fn in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                         ("on_train_begin", on_train_begin), ("on_train_end", on_train_end)):  # fmt: skip
            if fn is not None:
                setattr(self, hook, fn)


class BackupAndRestore(Callback):
    """Back up the training state each epoch into ``backup_dir``; a ``fit`` that was interrupted resumes there.

    Run the same ``fit(..., callbacks=[BackupAndRestore("backup")])`` again after a crash, Ctrl-C or
    kill: it loads the weights, the optimizer's state and the random generators of the last finished
    epoch and trains the remaining epochs only. The backup is written atomically (cnnkit's
    ``resume.safetensors``, never a pickle) and deleted when ``fit`` completes (``delete_checkpoint``).
    """

    rank_zero_only = True

    def __init__(self, backup_dir: str | os.PathLike, save_freq: str = "epoch", double_checkpoint: bool = False,
                 delete_checkpoint: bool = True) -> None:  # fmt: skip
        super().__init__()
        if save_freq != "epoch":
            raise ConfigError(f"BackupAndRestore backs up once an epoch (save_freq='epoch'), got {save_freq!r}")
        self.backup_dir, self.delete_checkpoint = Path(backup_dir), delete_checkpoint
        del double_checkpoint  # every backup is atomic: there is never a half-written one to fall back from

    def _state(self) -> TrainState:
        return TrainState(model=self.model, optimizer=_optimizer(self))

    def on_train_begin(self, logs: Logs | None = None) -> None:
        self.resume_epoch = None
        if (self.backup_dir / RESUME_FILE).exists():
            meta = load_checkpoint(self.backup_dir, self._state())
            self.resume_epoch = int(meta["epoch"]) + 1
            print(f"BackupAndRestore: resuming from {self.backup_dir} after epoch {self.resume_epoch}")

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        self.backup_dir.mkdir(parents=True, exist_ok=True)
        save_checkpoint(self.backup_dir, self._state(), epoch)

    def on_train_end(self, logs: Logs | None = None) -> None:
        if self.delete_checkpoint:
            (self.backup_dir / RESUME_FILE).unlink(missing_ok=True)
            if self.backup_dir.is_dir() and not any(self.backup_dir.iterdir()):
                shutil.rmtree(self.backup_dir, ignore_errors=True)


def __getattr__(name: str) -> Any:
    raise missing(__name__, name)
