"""Predictors: one interface over PyTorch and ONNX Runtime, for ``predict``, ``serve`` and Python.

``load_predictor(path, backend="auto")`` returns an object with ``class_names``,
``image_shape`` ``(H, W, C)`` and ``predict_proba(images)``: images -> ``(B, classes)``
probabilities (a one-unit sigmoid model's two classes: :mod:`cnnkit.classifier`), where images
are anything :func:`cnnkit.data.transforms.to_batch` takes (files, PIL images, Keras' NHWC
arrays, ``(B, C, H, W)`` float32 arrays or tensors in [0, 1], at ``image_shape``). Both
backends compute the same thing (the ONNX graph *is* the model with its softmax, checked
against it to 1e-4), and ``predict_proba`` is safe to call from several threads at once.
:func:`predictor_for` builds one from a model already loaded (the server).

Backends:

- ``torch``: the model file in PyTorch eager, on the chosen device.
- ``onnx``: ONNX Runtime on the CPU. Given a model file, the ONNX export is built and
  parity-checked on first use and cached next to it (``model.cache.onnx``), keyed by the
  SHA-256 of the model file's bytes, so a retrained or modified model is never answered by
  a stale export. Given a ``.onnx`` file (from ``cnnkit export``), that file is used.
- a ``.pt2`` file (from ``cnnkit export --format pt2``: a ``torch.export`` program) runs in
  PyTorch on the CPU, whichever of ``auto`` or ``torch`` is asked for; only archives with cnnkit's
  export metadata and no pickled objects are loaded (:func:`cnnkit.export.pt2.open_pt2`).
- a ``.torchscript.pt`` file (from ``cnnkit export --format torchscript``, or an older cnnkit)
  runs in TorchScript the same way (:func:`cnnkit.export.torchscript.open_torchscript`).
- ``auto`` (the default): ``onnx`` on a CPU, where ONNX Runtime runs the article's CNN
  several times faster than PyTorch eager (see benchmarks/RESULTS.md); ``torch`` on a GPU.
  If the model cannot be exported, ``auto`` warns and falls back to ``torch``.
"""

from __future__ import annotations

import functools
import os
import warnings
from collections.abc import Callable
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from cnnkit.classifier import classify, default_class_names
from cnnkit.data.transforms import ImageSource, to_batch
from cnnkit.errors import ConfigError, ExportError, ModelFileError, ShapeError
from cnnkit.kernels import fuse
from cnnkit.models import Model, load_model
from cnnkit.models.loading import check_model_file
from cnnkit.onnx_predictor import OnnxPredictor, cache_path, open_cache, shared_cache_path  # torch-free: there
from cnnkit.runs import resolve_model
from cnnkit.runtime import resolve_device

__all__ = [
    "BACKENDS",
    "OnnxPredictor",
    "Predictor",
    "TorchPredictor",
    "Pt2Predictor",
    "TorchScriptPredictor",
    "cache_path",
    "load_predictor",
    "predictor_for",
]

BACKENDS = ("auto", "torch", "onnx")


@runtime_checkable
class Predictor(Protocol):
    """What every backend offers."""

    backend: str
    class_names: list[str]
    image_shape: tuple[int, int, int]  # (H, W, C) of one input image
    description: str

    def predict_proba(self, images: ImageSource) -> np.ndarray:
        """Images (see :func:`~cnnkit.data.transforms.to_batch`) -> ``(B, classes)`` float32 probabilities."""
        ...


class TorchPredictor:
    """A cnnkit model in PyTorch eager mode."""

    backend = "torch"

    def __init__(self, model: Model, device: str | torch.device | None = "auto") -> None:
        if model.image_shape is None or any(n is None for n in model.image_shape):
            raise ShapeError(f"model {model.name!r} has no fixed input shape; build it first")
        self.device = resolve_device(device)
        self.model = model.to(self.device).eval()
        self._forward = fuse(self.model)  # the C kernels where they apply; self.model stays the model as written
        self.image_shape: tuple[int, int, int] = tuple(int(n) for n in model.image_shape)  # type: ignore[assignment]
        self.class_names = list(model.class_names) if model.class_names else default_class_names(model._num_outputs())
        self.num_classes = len(self.class_names)
        self.description = f"torch {torch.__version__} eager on {self.device}"

    @torch.inference_mode()
    def predict_proba(self, images: ImageSource) -> np.ndarray:
        x = to_batch(images, self.image_shape).to(self.device)  # (B, C, H, W)
        if len(x) == 0:
            return np.empty((0, self.num_classes), np.float32)
        return torch.softmax(classify(self.model, x, self._forward).float(), dim=1).cpu().numpy()  # (B, classes)


class _ArchivePredictor:
    """A cnnkit export that torch runs on the CPU, opened by its checked ``opener``."""

    backend = ""

    def _open(self, path: str | os.PathLike, opener: Callable, what: str) -> None:
        self.runner, info = opener(path)  # refuses archives cnnkit did not export, before loading
        self.image_shape = info.image_shape
        self.num_classes = len(info.class_names) if info.class_names else None
        self.class_names = list(info.class_names) if info.class_names else []
        if not self.class_names:  # unnamed classes: count them with one forward pass
            height, width, channels = self.image_shape
            self.num_classes = int(self.runner.run(np.zeros((1, channels, height, width), np.float32)).shape[1])
            self.class_names = default_class_names(self.num_classes)
        self.description = f"{self.backend} (torch {torch.__version__} {what} on cpu, {path})"

    def predict_proba(self, images: ImageSource) -> np.ndarray:
        x = np.ascontiguousarray(to_batch(images, self.image_shape).cpu().numpy())  # (B, C, H, W)
        if len(x) == 0:
            return np.empty((0, len(self.class_names)), np.float32)
        return self.runner.run(x)


class TorchScriptPredictor(_ArchivePredictor):
    """A cnnkit TorchScript export, run by the TorchScript interpreter on the CPU."""

    backend = "torchscript"

    def __init__(self, path: str | os.PathLike) -> None:
        from cnnkit.export.torchscript import open_torchscript

        self._open(path, open_torchscript, "TorchScript")


class Pt2Predictor(_ArchivePredictor):
    """A cnnkit ``.pt2`` export (a ``torch.export`` program), run by PyTorch on the CPU."""

    backend = "pt2"

    def __init__(self, path: str | os.PathLike) -> None:
        from cnnkit.export.pt2 import open_pt2

        self._open(path, open_pt2, "torch.export program")


def _cached_onnx(model_path: Path, threads: int | None, model: Callable[[], Model]) -> OnnxPredictor:
    """The model's ONNX export from the cache when it belongs to this exact model file, else built
    from ``model()`` (the model in that file) and cached."""
    from cnnkit._io import atomic_write_bytes, file_sha256
    from cnnkit.export import build_onnx
    from cnnkit.export.common import reference_data

    digest = file_sha256(model_path)
    cache = cache_path(model_path)
    try:
        cached = open_cache(model_path, digest, threads)
        if cached is not None:
            return cached
    except ModelFileError as e:  # a damaged cache is rebuilt, not trusted and not fatal
        warnings.warn(f"rebuilding the ONNX cache: {e}", stacklevel=4)
    payload, _ = build_onnx(model(), source_sha256=digest, reference=reference_data(model()))
    shared = shared_cache_path(digest)
    for where in (cache, shared):  # next to the model; a read-only model folder: the data cache
        try:
            where.parent.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(where, payload)
            return OnnxPredictor(where, threads=threads)
        except OSError as e:
            error = e
    warnings.warn(f"cannot cache the ONNX export at {cache} or {shared} ({error.strerror}); using it from memory",
                  stacklevel=4)  # fmt: skip
    return OnnxPredictor(payload, name=f"the ONNX export of {model_path}", threads=threads)


def _check_backend(backend: str) -> None:
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")


def _predictor(
    model: Callable[[], Model],
    backend: str,
    device: str | torch.device | None,
    threads: int | None,
    model_file: Path | None,
) -> Predictor:
    """The backend decision, for a model that ``model()`` gives (loaded at most once, and only if needed)."""
    _check_backend(backend)
    resolved = resolve_device(device)
    if backend == "onnx" and resolved.type != "cpu" and device not in (None, "auto"):
        raise ConfigError(f"the onnx backend runs on the CPU, not {resolved}; use --backend torch for the GPU")
    # auto: ONNX Runtime on a CPU when there is a model file to cache the export next to; a model
    # object alone would be exported on every call, so it runs in PyTorch.
    if backend == "torch" or (backend == "auto" and (resolved.type != "cpu" or model_file is None)):
        return TorchPredictor(model(), resolved)
    try:
        if model_file is not None:
            return _cached_onnx(model_file, threads, model)
        from cnnkit.export import build_onnx
        from cnnkit.export.common import reference_data

        payload, _ = build_onnx(model(), source_sha256=None, reference=reference_data(model()))
        return OnnxPredictor(payload, name=f"the ONNX export of {model().name!r}", threads=threads)
    except ExportError as e:
        if backend == "onnx":
            raise
        warnings.warn(f"{e}; predicting with PyTorch instead", stacklevel=3)
        return TorchPredictor(model(), resolved)


def predictor_for(
    model: Model,
    backend: str = "auto",
    *,
    model_file: str | os.PathLike | None = None,
    device: str | torch.device | None = "auto",
    threads: int | None = None,
) -> Predictor:
    """A predictor over a model already loaded, without loading it again.

    ``model_file``: the file ``model`` was loaded from (unchanged since); the ONNX export is then
    cached next to it, tied to its SHA-256, and ``auto`` runs ONNX Runtime on a CPU as for a path.
    Without it, ``auto`` runs PyTorch and ``onnx`` exports in memory. Other arguments as
    :func:`load_predictor`.
    """
    return _predictor(lambda: model, backend, device, threads, None if model_file is None else Path(model_file))


def load_predictor(
    model: str | os.PathLike | Model,
    backend: str = "auto",
    *,
    device: str | torch.device | None = "auto",
    threads: int | None = None,
) -> Predictor:
    """A predictor for a model file, a run (its folder, ``"latest"`` or a prefix of its name under
    ``runs/``: :func:`cnnkit.runs.resolve_model`), a ``.onnx`` or ``.torchscript.pt`` export, or a
    :class:`Model`.

    ``backend``: ``"auto"`` (ONNX Runtime on a CPU, PyTorch on a GPU), ``"torch"`` or ``"onnx"``.
    ``threads`` caps ONNX Runtime's threads (default: one per core).
    """
    if isinstance(model, Model):
        return predictor_for(model, backend, device=device, threads=threads)
    source = resolve_model(model)
    if source.kind == "onnx":
        _check_backend(backend)
        if backend == "torch":
            raise ConfigError(
                f"{source.path} is an ONNX export: it runs on the onnx backend; give the .safetensors model"
            )
        return OnnxPredictor(source.path, threads=threads)
    if source.kind == "torchscript":
        _check_backend(backend)
        if backend == "onnx":
            raise ConfigError(f"{source.path} is a TorchScript export: it runs in TorchScript (--backend auto or "
                              f"torch); give its .onnx export for ONNX Runtime")  # fmt: skip
        return TorchScriptPredictor(source.path)
    if source.kind == "pt2":
        _check_backend(backend)
        if backend == "onnx":
            raise ConfigError(f"{source.path} is a .pt2 export: it runs in PyTorch (--backend auto or torch); "
                              f"give its .onnx export for ONNX Runtime")  # fmt: skip
        return Pt2Predictor(source.path)
    path = source.model_file("give the .safetensors model")
    check_model_file(path)  # a missing, pickled or foreign file: its own clear error, before any hashing or export
    return _predictor(functools.cache(lambda: load_model(path)), backend, device, threads, path)
