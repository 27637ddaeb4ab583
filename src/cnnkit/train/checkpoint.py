"""Resumable checkpoints: everything a run needs to continue exactly where it stopped.

``resume.safetensors`` in the run folder holds, after every epoch, the model's weights,
the optimizer's state, the EMA, and the random-number generators as tensors, and as JSON
metadata the epoch, the schedule, the callbacks' counters and the history. One file,
written atomically (temp file, fsync, rename): a crash at any moment leaves either the
previous checkpoint or the new one, never a mix. Nothing in it is ever unpickled.
"""

from __future__ import annotations

import json
import os
import random
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file
from torch import nn

from cnnkit._io import atomic_write
from cnnkit.errors import ConfigError
from cnnkit.train.callbacks import Callback
from cnnkit.train.ema import EMA
from cnnkit.train.optimizers import match_state_layout

__all__ = ["RESUME_FILE", "TrainState", "load_checkpoint", "save_checkpoint"]

RESUME_FILE = "resume.safetensors"
_FORMAT = "cnnkit-resume"
_VERSION = 1


@dataclass
class TrainState:
    """The live objects of a run that a checkpoint captures and restores."""

    model: nn.Module
    optimizer: torch.optim.Optimizer
    scheduler: Any = None  # an LRScheduler, or None
    ema: EMA | None = None
    generator: torch.Generator | None = None  # the data order
    scaler: Any = None  # a GradScaler for fp16, or None
    callbacks: dict[str, Callback] = field(default_factory=dict)  # by a stable name
    extra: dict[str, Any] = field(default_factory=dict)  # JSON-able notes (e.g. elapsed time)


def _rng_state() -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    tensors = {"rng/torch": torch.get_rng_state()}
    if torch.cuda.is_available():
        for i, state in enumerate(torch.cuda.get_rng_state_all()):
            tensors[f"rng/cuda/{i}"] = state
    kind, keys, pos, has_gauss, gauss = np.random.get_state()
    tensors["rng/numpy_keys"] = torch.from_numpy(keys.astype(np.int64))
    python = random.getstate()
    return tensors, {
        "numpy": [kind, int(pos), int(has_gauss), float(gauss)],
        "python": [python[0], list(python[1]), python[2]],
    }


def _set_rng_state(tensors: dict[str, torch.Tensor], meta: dict[str, Any]) -> None:
    torch.set_rng_state(tensors["rng/torch"])
    cuda = [tensors[k] for k in sorted(k for k in tensors if k.startswith("rng/cuda/"))]
    if cuda and torch.cuda.is_available():
        torch.cuda.set_rng_state_all(cuda)
    kind, pos, has_gauss, gauss = meta["numpy"]
    np.random.set_state((kind, tensors["rng/numpy_keys"].numpy().astype(np.uint32), pos, has_gauss, gauss))
    version, internal, gauss_next = meta["python"]
    random.setstate((version, tuple(internal), gauss_next))


def _optimizer_state(optimizer: torch.optim.Optimizer) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Split the optimizer's state dict into tensors and JSON (per-parameter scalars kept in JSON)."""
    state = optimizer.state_dict()
    tensors, scalars = {}, {}
    for pid, values in state["state"].items():
        for name, value in values.items():
            if isinstance(value, torch.Tensor):
                tensors[f"optimizer/{pid}/{name}"] = value
            else:
                scalars.setdefault(str(pid), {})[name] = value
    return tensors, {"param_groups": state["param_groups"], "scalars": scalars}


def _load_optimizer_state(optimizer: torch.optim.Optimizer, tensors: dict[str, torch.Tensor], meta: dict) -> None:
    state: dict[int, dict[str, Any]] = {}
    for key, value in tensors.items():
        if key.startswith("optimizer/"):
            _, pid, name = key.split("/", 2)
            state.setdefault(int(pid), {})[name] = value
    for pid, values in meta["scalars"].items():
        state.setdefault(int(pid), {}).update(values)
    optimizer.load_state_dict({"state": state, "param_groups": meta["param_groups"]})
    match_state_layout(optimizer)  # moments come back contiguous, beside channels-last weights


def save_checkpoint(run_dir: str | os.PathLike, state: TrainState, epoch: int) -> Path:
    """Write ``resume.safetensors`` for a run that has completed ``epoch + 1`` epochs."""
    tensors = {f"model/{k}": v for k, v in state.model.state_dict().items()}
    optimizer_tensors, optimizer_meta = _optimizer_state(state.optimizer)
    rng_tensors, rng_meta = _rng_state()
    tensors.update(optimizer_tensors)
    tensors.update(rng_tensors)
    if state.generator is not None:
        tensors["rng/data"] = state.generator.get_state()
    if state.ema is not None:
        tensors.update({f"ema/{k}": v for k, v in state.ema.state_tensors().items()})
    meta = {
        "epoch": epoch,
        "optimizer": optimizer_meta,
        "scheduler": state.scheduler.state_dict() if state.scheduler is not None else None,
        "scaler": state.scaler.state_dict() if state.scaler is not None else None,
        "ema_updates": state.ema.updates if state.ema is not None else None,
        "callbacks": {name: cb.state_dict() for name, cb in state.callbacks.items()},
        "rng": rng_meta,
        "extra": state.extra,
    }
    tensors = {k: v.detach().cpu().contiguous() for k, v in tensors.items()}
    header = {"format": _FORMAT, "format_version": str(_VERSION), "state": json.dumps(meta)}
    return atomic_write(Path(run_dir) / RESUME_FILE, lambda tmp: save_file(tensors, tmp, metadata=header))


def read_checkpoint(run_dir: str | os.PathLike) -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """The tensors and JSON state of a run's checkpoint, or a clear error."""
    path = Path(run_dir) / RESUME_FILE
    if not path.exists():
        raise ConfigError(f"{run_dir} has no {RESUME_FILE}: it never finished an epoch, or is not a run folder")
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            tensors = {k: f.get_tensor(k) for k in f.keys()}  # noqa: SIM118
        if header.get("format") != _FORMAT or int(header.get("format_version", 0)) > _VERSION:
            raise ConfigError(f"{path} is not a resume checkpoint this cnnkit can read")
        return tensors, json.loads(header["state"])
    except (SafetensorError, OSError, ValueError, KeyError) as e:
        raise ConfigError(f"{path} is damaged ({e}); start a new run") from None


def load_checkpoint(run_dir: str | os.PathLike, state: TrainState) -> dict[str, Any]:
    """Restore ``state`` in place from the run's checkpoint; return its JSON metadata (with ``epoch``)."""
    tensors, meta = read_checkpoint(run_dir)
    state.model.load_state_dict({k[len("model/") :]: v for k, v in tensors.items() if k.startswith("model/")})
    _load_optimizer_state(state.optimizer, tensors, meta["optimizer"])
    if state.scheduler is not None and meta["scheduler"] is not None:
        state.scheduler.load_state_dict(meta["scheduler"])
    if state.scaler is not None and meta["scaler"] is not None:
        state.scaler.load_state_dict(meta["scaler"])
    if state.ema is not None and meta["ema_updates"] is not None:
        state.ema.load_state_tensors({k[len("ema/") :]: v for k, v in tensors.items() if k.startswith("ema/")},
                                     meta["ema_updates"])  # fmt: skip
    for name, cb in state.callbacks.items():
        if name in meta["callbacks"]:
            cb.load_state_dict(meta["callbacks"][name])
    _set_rng_state(tensors, meta["rng"])
    if state.generator is not None and "rng/data" in tensors:
        state.generator.set_state(tensors["rng/data"])
    state.extra.update(meta.get("extra", {}))
    return meta
