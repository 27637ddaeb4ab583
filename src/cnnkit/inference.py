"""Predictors: one interface over PyTorch and ONNX Runtime, for ``predict``, ``serve`` and Python.

``load_predictor(path, backend="auto")`` returns an object with ``class_names``,
``image_shape`` ``(H, W, C)`` and ``predict_proba(images)``: ``(B, C, H, W)`` float32
images in [0, 1] (already at ``image_shape``) -> ``(B, classes)`` probabilities. Both
backends compute the same thing (the ONNX graph *is* the model with its softmax, checked
against it to 1e-4), and ``predict_proba`` is safe to call from several threads at once.

Backends:

- ``torch``: the model file in PyTorch eager, on the chosen device.
- ``onnx``: ONNX Runtime on the CPU. Given a model file, the ONNX export is built and
  parity-checked on first use and cached next to it (``model.cache.onnx``), keyed by the
  SHA-256 of the model file's bytes, so a retrained or modified model is never answered by
  a stale export. Given a ``.onnx`` file (from ``cnnkit export``), that file is used.
- ``auto`` (the default): ``onnx`` on a CPU, where ONNX Runtime runs the article's CNN
  several times faster than PyTorch eager (see benchmarks/RESULTS.md); ``torch`` on a GPU.
  If the model cannot be exported, ``auto`` warns and falls back to ``torch``.
"""

from __future__ import annotations

import os
import warnings
from pathlib import Path
from typing import Protocol, runtime_checkable

import numpy as np
import torch

from cnnkit.errors import ConfigError, ExportError, ModelFileError, ShapeError
from cnnkit.kernels import fuse
from cnnkit.models.model import Model
from cnnkit.runtime import resolve_device

__all__ = ["BACKENDS", "OnnxPredictor", "Predictor", "TorchPredictor", "cache_path", "load_input", "load_predictor"]

BACKENDS = ("auto", "torch", "onnx")
CACHE_SUFFIX = ".cache.onnx"


@runtime_checkable
class Predictor(Protocol):
    """What every backend offers."""

    backend: str
    class_names: list[str]
    image_shape: tuple[int, int, int]  # (H, W, C) of one input image
    description: str

    def predict_proba(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        """``(B, C, H, W)`` float32 images in [0, 1] -> ``(B, classes)`` float32 probabilities."""
        ...


def load_input(source: str | os.PathLike | bytes, image_shape: tuple[int, int, int]) -> torch.Tensor:
    """An image file (or its bytes) as one model input ``(C, H, W)``, prepared exactly as training data
    is: :func:`cnnkit.data.transforms.load_input` (the one decoder, JPEG draft decoding for large
    photos, the same resizing), in the layout predictors take.

    Raises :class:`~cnnkit.errors.DataError` for a file that cannot be read.
    """
    from cnnkit.data.transforms import load_input as load_hwc

    return torch.from_numpy(load_hwc(source, image_shape)).permute(2, 0, 1).contiguous()  # (C, H, W)


def _as_batch(images: np.ndarray | torch.Tensor, image_shape: tuple[int, int, int]) -> np.ndarray:
    """A C-contiguous float32 ``(B, C, H, W)`` array, or a clear error naming the expected shape."""
    if isinstance(images, torch.Tensor):
        images = images.detach().cpu().numpy()
    x = np.ascontiguousarray(images, dtype=np.float32)
    height, width, channels = image_shape
    if x.ndim != 4 or x.shape[1:] != (channels, height, width):
        raise ShapeError(f"the model takes (batch, {channels}, {height}, {width}) images, got {x.shape}")
    return x


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
        self.num_classes = model._num_outputs()
        self.class_names = list(model.class_names) if model.class_names else [str(i) for i in range(self.num_classes)]
        self.description = f"torch {torch.__version__} eager on {self.device}"

    @torch.inference_mode()
    def predict_proba(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        x = torch.from_numpy(_as_batch(images, self.image_shape)).to(self.device)  # (B, C, H, W)
        if len(x) == 0:
            return np.empty((0, self.num_classes), np.float32)
        return torch.softmax(self._forward(x).float(), dim=1).cpu().numpy()  # (B, classes)


class OnnxPredictor:
    """A cnnkit ONNX export run by ONNX Runtime on the CPU."""

    backend = "onnx"

    def __init__(self, source: bytes | str | os.PathLike, *, name: str | None = None, threads: int | None = None):
        import onnxruntime

        from cnnkit.export.onnx import open_onnx

        self.onnx = open_onnx(source, name=name, threads=threads)
        info = self.onnx.info
        self.image_shape = info.image_shape
        self.num_classes = int(self.onnx.session.get_outputs()[0].shape[1])
        self.class_names = list(info.class_names) if info.class_names else [str(i) for i in range(self.num_classes)]
        kind = "int8 " if info.quantization != "none" else ""
        self.description = f"onnx ({kind}ONNX Runtime {onnxruntime.__version__}, {self.onnx.name})"

    def predict_proba(self, images: np.ndarray | torch.Tensor) -> np.ndarray:
        x = _as_batch(images, self.image_shape)
        if len(x) == 0:
            return np.empty((0, self.num_classes), np.float32)
        return self.onnx.run(x)


def cache_path(model_path: str | os.PathLike) -> Path:
    """Where the ONNX export of a model file is cached: ``model.safetensors`` -> ``model.cache.onnx``."""
    path = Path(model_path)
    return path.with_name(path.name.removesuffix(".safetensors") + CACHE_SUFFIX)


def _cached_onnx(model_path: Path, threads: int | None) -> OnnxPredictor:
    """The model's ONNX export from the cache when it belongs to this exact model file, else built and cached."""
    from cnnkit.export import EXPORT_VERSION, build_onnx, file_sha256
    from cnnkit.export.common import reference_data
    from cnnkit.modelfile import read_metadata
    from cnnkit.models import load_model

    read_metadata(model_path)  # a missing, pickled or foreign file: its own clear error, before any hashing
    digest = file_sha256(model_path)
    cache = cache_path(model_path)
    if cache.exists():
        try:
            cached = OnnxPredictor(cache, threads=threads)
            info = cached.onnx.info
            if info.source_sha256 == digest and info.export_version == EXPORT_VERSION and info.quantization == "none":
                return cached
        except ModelFileError as e:  # a damaged cache is rebuilt, not trusted and not fatal
            warnings.warn(f"rebuilding the ONNX cache: {e}", stacklevel=3)
    model = load_model(model_path)
    payload, _ = build_onnx(model, source_sha256=digest, reference=reference_data(model))
    try:
        from cnnkit._io import atomic_write_bytes

        atomic_write_bytes(cache, payload)
        return OnnxPredictor(cache, threads=threads)
    except OSError as e:  # a read-only model folder: run from memory, export again next time
        warnings.warn(f"cannot cache the ONNX export at {cache} ({e.strerror}); using it from memory", stacklevel=3)
        return OnnxPredictor(payload, name=f"the ONNX export of {model_path}", threads=threads)


def load_predictor(
    model: str | os.PathLike | Model,
    backend: str = "auto",
    *,
    device: str | torch.device | None = "auto",
    threads: int | None = None,
) -> Predictor:
    """A predictor for a model file, a run folder, a ``.onnx`` export or a :class:`Model`.

    ``backend``: ``"auto"`` (ONNX Runtime on a CPU, PyTorch on a GPU), ``"torch"`` or ``"onnx"``.
    ``threads`` caps ONNX Runtime's threads (default: one per core).
    """
    if backend not in BACKENDS:
        raise ConfigError(f"unknown backend {backend!r}; choose from {', '.join(BACKENDS)}")
    if isinstance(model, Model):
        if backend == "onnx":
            from cnnkit.export import build_onnx
            from cnnkit.export.common import reference_data

            payload, _ = build_onnx(model, source_sha256=None, reference=reference_data(model))
            return OnnxPredictor(payload, name=f"the ONNX export of {model.name!r}", threads=threads)
        return TorchPredictor(model, device)
    from cnnkit.runs import resolve_model_path

    path = resolve_model_path(model)
    if path.suffix == ".onnx":
        if backend == "torch":
            raise ConfigError(f"{path} is an ONNX export: it runs on the onnx backend; give the .safetensors model")
        return OnnxPredictor(path, threads=threads)
    resolved = resolve_device(device)
    if backend == "onnx" and resolved.type != "cpu" and device not in (None, "auto"):
        raise ConfigError(f"the onnx backend runs on the CPU, not {resolved}; use --backend torch for the GPU")
    if backend == "torch" or (backend == "auto" and resolved.type != "cpu"):
        from cnnkit.models import load_model

        return TorchPredictor(load_model(path), resolved)
    try:
        return _cached_onnx(path, threads)
    except ExportError as e:
        if backend == "onnx":
            raise
        warnings.warn(f"{e}; predicting with PyTorch instead", stacklevel=2)
        from cnnkit.models import load_model

        return TorchPredictor(load_model(path), resolved)
