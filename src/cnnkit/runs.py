"""Run directories (``runs/<name>/`` holds everything one training run produced), and what a user's
model argument names.

:func:`resolve_model` is the one place that decides what ``cnnkit predict MODEL``, ``evaluate``,
``explain``, ``export``, ``report``, ``serve`` and :func:`cnnkit.inference.load_predictor` were
given: a model file, an ONNX or TorchScript export, or a run folder (its ``model.safetensors``).
Each caller then says which kinds it can use.
"""

from __future__ import annotations

import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from cnnkit.errors import ConfigError, ModelFileError

__all__ = [
    "MODEL_FILE",
    "ONNX_SUFFIX",
    "TORCHSCRIPT_SUFFIX",
    "ModelKind",
    "ModelSource",
    "create_run_dir",
    "resolve_model",
    "resolve_run",
]

MODEL_FILE = "model.safetensors"
ONNX_SUFFIX = ".onnx"  # `cnnkit export --format onnx`, and the cache next to a model file
TORCHSCRIPT_SUFFIX = ".torchscript.pt"  # `cnnkit export --format torchscript`

ModelKind = Literal["model", "onnx", "torchscript"]
_KIND_NAMES = {"model": "a model file", "onnx": "an ONNX export", "torchscript": "a TorchScript export"}


@dataclass(frozen=True)
class ModelSource:
    """What a model argument names.

    Attributes:
        kind: ``"model"`` (a cnnkit ``.safetensors`` model file), ``"onnx"`` or ``"torchscript"``
            (files ``cnnkit export`` wrote).
        path: the file. Whether it exists and is what it claims is for its reader to say
            (:mod:`cnnkit.modelfile`, :func:`cnnkit.export.open_onnx`), each with its own clear error.
        run_dir: the run folder it was named by, if it was.
    """

    kind: ModelKind
    path: Path
    run_dir: Path | None = None

    def model_file(self, instead: str) -> Path:
        """The model file, for a caller that needs the model itself (its weights, its gradients).

        An export is refused with a ``ConfigError`` that ends with ``instead``: what to give.
        """
        if self.kind != "model":
            raise ConfigError(f"{self.path} is {_KIND_NAMES[self.kind]}: {instead}")
        return self.path


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


def resolve_model(model_or_run: str | os.PathLike) -> ModelSource:
    """What a user's model argument names: a run folder, then a file by what its name says.

    Nothing is read here except whether the path is a folder, so a missing or damaged file gets
    its reader's error, and ``model.onnx`` is known to be an export before it exists.
    """
    path = Path(model_or_run)
    # Each way of naming a model is one branch, tried in order. (Naming a run by `latest` or by the
    # prefix of its name under runs/ would be one more, before the file kinds.)
    if path.is_dir():  # a run folder: its final model
        if not (path / MODEL_FILE).exists():
            raise ModelFileError(f"{path} is a folder without a {MODEL_FILE}: not a finished training run")
        return ModelSource("model", path / MODEL_FILE, run_dir=path)
    name = path.name.lower()
    if name.endswith(ONNX_SUFFIX):
        return ModelSource("onnx", path)
    if name.endswith(TORCHSCRIPT_SUFFIX):
        return ModelSource("torchscript", path)
    return ModelSource("model", path)  # .safetensors, or a file that modelfile explains is not one


def resolve_run(run: str | os.PathLike) -> Path:
    """The run folder a user's run argument names (named as :func:`resolve_model` names them)."""
    source = resolve_model(run)
    if source.run_dir is None:
        if not Path(run).exists():
            raise ConfigError(f"{run}: no such run folder")
        raise ConfigError(f"{run} is {_KIND_NAMES[source.kind]}, not a run folder (runs/<name>/)")
    return source.run_dir
