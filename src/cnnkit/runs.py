"""Run directories (``runs/<name>/`` holds everything one training run produced), and what a user's
model argument names.

:func:`resolve_model` is the one place that decides what ``cnnkit predict MODEL``, ``evaluate``,
``explain``, ``export``, ``report``, ``serve`` and :func:`cnnkit.inference.load_predictor` were
given: a model file, an ONNX or TorchScript export, or a run, and each caller then says which kinds
it can use. A run is named by its folder, as ``latest`` (the newest run under ``runs/``), or by a
prefix of its folder's name that only one run under ``runs/`` has (``seed-digits`` ->
``runs/seed-digits-20261203-101500``); a prefix that several runs share is an error listing them.

A run's age is when it was created: the time of its ``config.json``, written once when the run
starts (extending or resuming it later does not make it newer), else the folder's own time.
"""

from __future__ import annotations

import glob
import os
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path
from typing import Literal

from cnnkit.errors import ConfigError, ModelFileError

__all__ = [
    "LATEST",
    "MODEL_FILE",
    "ONNX_SUFFIX",
    "RUNS_DIR",
    "PT2_SUFFIX",
    "TORCHSCRIPT_SUFFIX",
    "ModelKind",
    "ModelSource",
    "create_run_dir",
    "find_runs",
    "is_run",
    "resolve_model",
    "resolve_run",
    "refuse_runs_as_inputs",
    "several_runs_error",
]

MODEL_FILE = "model.safetensors"
RUNS_DIR = "runs"  # where `cnnkit train` puts runs by default (TrainConfig.runs_dir)
LATEST = "latest"  # names the newest run under the runs folder
ONNX_SUFFIX = ".onnx"  # `cnnkit export --format onnx`, and the cache next to a model file
TORCHSCRIPT_SUFFIX = ".torchscript.pt"  # `cnnkit export --format torchscript`
PT2_SUFFIX = ".pt2"  # `cnnkit export --format pt2` (torch.export.save)

ModelKind = Literal["model", "onnx", "pt2", "torchscript"]
_KIND_NAMES = {"model": "a model file", "onnx": "an ONNX export", "pt2": "a .pt2 export",
               "torchscript": "a TorchScript export"}  # fmt: skip


@dataclass(frozen=True)
class ModelSource:
    """What a model argument names.

    Attributes:
        kind: ``"model"`` (a cnnkit ``.safetensors`` model file), ``"onnx"``, ``"pt2"`` or ``"torchscript"``
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


def _created(run: Path) -> float:
    """When a run was created: its config.json's time (written once, at the start), else the folder's."""
    config = run / "config.json"
    return (config if config.exists() else run).stat().st_mtime


def find_runs(runs_dir: str | os.PathLike = RUNS_DIR, prefix: str = "") -> list[Path]:
    """The finished runs (folders with a model file) directly under ``runs_dir`` whose name starts with
    ``prefix``, oldest first."""
    try:
        entries = list(Path(runs_dir).iterdir())
    except OSError:  # no runs folder yet: no runs
        return []
    runs = [p for p in entries if p.name.startswith(prefix) and is_run(p)]
    return sorted(runs, key=lambda p: (_created(p), p.name))


def _named_run(name: str, runs_dir: str | os.PathLike) -> Path | None:
    """The run that ``latest`` or a name prefix names, None if the argument is not such a name.

    ``runs/seed-digits`` looks in ``runs/``; a bare ``seed-digits`` (or ``latest``) in ``runs_dir``.
    """
    path = Path(name)
    folder = path.parent if path.parent != Path(".") else Path(runs_dir)
    if path.name == LATEST:
        runs = find_runs(folder)
        if not runs:
            raise ConfigError(f"{name}: no finished runs under {folder}/ yet (train one with `cnnkit train`)")
        return runs[-1]
    runs = find_runs(folder, path.name) if path.name else []
    if len(runs) > 1:
        raise several_runs_error(name, runs)
    return runs[0] if runs else None


def resolve_model(model_or_run: str | os.PathLike, *, runs_dir: str | os.PathLike = RUNS_DIR) -> ModelSource:
    """What a user's model argument names: a run folder, ``latest`` or a run's name prefix (looked up in
    ``runs_dir``), then a file by what its name says.

    Nothing is read here except folder listings, so a missing or damaged file gets its reader's
    error, and ``model.onnx`` is known to be an export before it exists.
    """
    path = Path(model_or_run)
    # Each way of naming a model is one branch, tried in order: what exists on disk first.
    if path.is_dir():  # a run folder: its final model
        if not (path / MODEL_FILE).exists():
            raise ModelFileError(f"{path} is a folder without a {MODEL_FILE}: not a finished training run")
        return ModelSource("model", path / MODEL_FILE, run_dir=path)
    name = path.name.lower()
    if name.endswith(ONNX_SUFFIX):
        return ModelSource("onnx", path)
    if name.endswith(TORCHSCRIPT_SUFFIX):
        return ModelSource("torchscript", path)
    if name.endswith(PT2_SUFFIX):
        return ModelSource("pt2", path)
    if not path.exists():  # no file by that name: a pattern, `latest` or a run's name prefix?
        run = _matching_run(str(model_or_run)) if glob.has_magic(str(model_or_run)) else None
        run = run or _named_run(str(model_or_run), runs_dir)
        if run is not None:
            return ModelSource("model", run / MODEL_FILE, run_dir=run)
        if not path.suffix:  # not a file name either: say every way it was tried
            folder = path.parent if path.parent != Path(".") else Path(runs_dir)
            raise ModelFileError(f"{model_or_run}: no such model file or run folder, and no run under {folder}/ "
                                 f"whose name starts with it")  # fmt: skip
    return ModelSource("model", path)  # .safetensors, or a file that modelfile explains is not one


def is_run(path: str | os.PathLike) -> bool:
    """Whether ``path`` is a run folder (one that holds a model file)."""
    return (Path(path) / MODEL_FILE).is_file()


def several_runs_error(pattern: str, runs: list[Path]) -> ConfigError:
    """The one-line error for an argument (or a shell glob) that names several runs where one is meant."""
    listed = ", ".join(str(run) for run in runs)
    return ConfigError(f"{pattern} names {len(runs)} runs: {listed}; name one (its folder, `latest` or a prefix "
                       f"only it has)")  # fmt: skip


def refuse_runs_as_inputs(inputs: list[str | os.PathLike], model: str | os.PathLike | None = None) -> None:
    """Refuse run folders among the images to predict: a shell glob such as ``runs/seed-digits-*/`` that
    matched several runs reaches ``predict`` as several arguments, the first taken as the model and
    the others' plots (``curves.png``, ``confusion.png``) as images.
    """
    runs = []
    for item in map(str, inputs):  # a quoted pattern ("runs/*/") is expanded by predict itself: look at its matches
        matches = glob.glob(item) if glob.has_magic(item) and not Path(item).exists() else [item]
        runs += [Path(p) for p in matches if is_run(p)]
    if not runs:
        return
    if model is not None and is_run(model):  # the glob's first match became the model
        runs = [Path(model), *runs]
        listed = ", ".join(str(run) for run in runs)
        raise ConfigError(
            f"the arguments name {len(runs)} runs ({listed}), as a shell pattern matching several "
            f"runs does: name one (its folder, `latest` or a prefix only it has), then the images"
        )
    raise ConfigError(f"{runs[0]} is a training run, not images: name it as the model (the first argument), "
                      f"or give the image files themselves")  # fmt: skip


def _matching_run(pattern: str) -> Path | None:
    """The one run a quoted glob pattern matches (``"runs/seed-digits-*/"``); several are an error."""
    runs = sorted({Path(p) for p in glob.glob(pattern) if is_run(p)}, key=lambda p: (_created(p), p.name))
    if len(runs) > 1:
        raise several_runs_error(pattern, runs)
    return runs[0] if runs else None


def resolve_run(run: str | os.PathLike, *, runs_dir: str | os.PathLike = RUNS_DIR) -> Path:
    """The run folder a user's run argument names (named as :func:`resolve_model` names them)."""
    try:
        source = resolve_model(run, runs_dir=runs_dir)
    except ModelFileError:
        if not Path(run).exists():
            raise ConfigError(
                f"{run}: no such run folder (nor a run under {runs_dir}/ whose name starts with it)"
            ) from None
        raise
    if source.run_dir is None:
        if not Path(run).exists():
            raise ConfigError(f"{run}: no such run folder")
        raise ConfigError(f"{run} is {_KIND_NAMES[source.kind]}, not a run folder (runs/<name>/)")
    return source.run_dir
