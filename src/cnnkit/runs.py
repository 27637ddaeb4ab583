"""Run directories: ``runs/<name>/`` holds everything one training run produced."""

from __future__ import annotations

import os
from datetime import datetime
from pathlib import Path

from cnnkit.errors import ConfigError, ModelFileError

__all__ = ["MODEL_FILE", "create_run_dir", "resolve_model_path"]

MODEL_FILE = "model.safetensors"


def create_run_dir(runs_dir: str | os.PathLike, stem: str, out: str | os.PathLike | None = None) -> Path:
    """A new, empty run folder: ``out`` if given, else ``runs_dir/<stem>-<timestamp>`` made unique.

    An existing ``out`` that already holds a model is refused, so a run never overwrites another.
    """
    if out is not None:
        path = Path(out)
        if (path / MODEL_FILE).exists():
            raise ConfigError(f"{path} already holds a trained model; choose another --out or remove it")
        path.mkdir(parents=True, exist_ok=True)
        return path
    base = Path(runs_dir) / f"{stem}-{datetime.now().strftime('%Y%m%d-%H%M%S')}"
    path, n = base, 1
    while True:
        try:
            path.mkdir(parents=True, exist_ok=False)
            return path
        except FileExistsError:
            n += 1
            path = base.with_name(f"{base.name}-{n}")


def resolve_model_path(model_or_run: str | os.PathLike) -> Path:
    """A model file, or a run folder (its ``model.safetensors``)."""
    path = Path(model_or_run)
    if path.is_dir():
        if not (path / MODEL_FILE).exists():
            raise ModelFileError(f"{path} is a folder without a {MODEL_FILE}: not a finished run")
        return path / MODEL_FILE
    return path
