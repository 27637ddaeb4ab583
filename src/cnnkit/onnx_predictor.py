"""The ONNX Runtime predictor, and the ONNX cache of a model file: no torch imported.

A model file's export is cached next to it (``model.cache.onnx``), or, when its folder cannot
take a file (read-only, someone else's), in the data cache by the file's SHA-256
(:func:`shared_cache_path`), so a shared model is exported once, not on every run.

:mod:`cnnkit.inference` re-exports all of this and decides the backends; it is here, apart,
because ONNX Runtime on the CPU needs neither torch nor the ``onnx`` package, so ``cnnkit
predict`` of an export or of a model whose export is cached starts without their seconds of
imports (:func:`cpu_onnx_predictor`). Torch is imported only for what needs it: images that
are not already a ``(B, C, H, W)`` float32 batch (:func:`cnnkit.data.transforms.to_batch`).
"""

from __future__ import annotations

import os
import sys
from pathlib import Path

import numpy as np
import onnxruntime

from cnnkit._io import data_root, file_sha256
from cnnkit.data.inputs import array_layout
from cnnkit.errors import ModelFileError
from cnnkit.export.metadata import EXPORT_VERSION
from cnnkit.export.onnx_session import open_onnx
from cnnkit.runs import resolve_model

__all__ = ["CACHE_SUFFIX", "OnnxPredictor", "cache_path", "cpu_onnx_predictor", "open_cache", "shared_cache_path"]

CACHE_SUFFIX = ".cache.onnx"


class OnnxPredictor:
    """A cnnkit ONNX export run by ONNX Runtime on the CPU."""

    backend = "onnx"

    def __init__(self, source: bytes | str | os.PathLike, *, name: str | None = None, threads: int | None = None):
        self.onnx = open_onnx(source, name=name, threads=threads)
        info = self.onnx.info
        self.image_shape = info.image_shape
        self.num_classes = int(self.onnx.session.get_outputs()[0].shape[1])  # a binary model's graph gives 2
        if info.class_names:
            self.class_names = list(info.class_names)
        else:  # classifier.default_class_names' "0", "1", ...: the graph has counted a one-unit model's two classes
            self.class_names = [str(i) for i in range(self.num_classes)]
        kind = "int8 " if info.quantization != "none" else ""
        self.description = f"onnx ({kind}ONNX Runtime {onnxruntime.__version__}, {self.onnx.name})"

    def predict_proba(self, images) -> np.ndarray:  # images: cnnkit.data.transforms.ImageSource
        """Images (see :func:`~cnnkit.data.transforms.to_batch`) -> ``(B, classes)`` float32 probabilities."""
        height, width, channels = self.image_shape
        if (
            isinstance(images, np.ndarray)
            and images.dtype == np.float32
            and array_layout(images.shape, self.image_shape) == "nchw"
        ):
            x = np.ascontiguousarray(images)  # what to_batch would give for it, without importing torch
        else:
            from cnnkit.data.transforms import to_batch

            x = np.ascontiguousarray(to_batch(images, self.image_shape).cpu().numpy())  # (B, C, H, W)
        if len(x) == 0:
            return np.empty((0, self.num_classes), np.float32)
        return self.onnx.run(x)


def cache_path(model_path: str | os.PathLike) -> Path:
    """Where the ONNX export of a model file is cached: ``model.safetensors`` -> ``model.cache.onnx``."""
    path = Path(model_path)
    return path.with_name(path.name.removesuffix(".safetensors") + CACHE_SUFFIX)


def shared_cache_path(digest: str) -> Path:
    """Where the export of the model file whose SHA-256 is ``digest`` is cached when the file's own folder
    cannot take it: ``$CNNKIT_DATA/onnx/<digest>.cache.onnx``."""
    return data_root() / "onnx" / f"{digest}{CACHE_SUFFIX}"


def open_cache(model_path: Path, digest: str, threads: int | None) -> OnnxPredictor | None:
    """The cached export of the model file whose SHA-256 is ``digest`` (next to it, else in the data
    cache), when there is one made from exactly that file by this export version; None when there is
    none or it is stale. A damaged cache raises :class:`~cnnkit.errors.ModelFileError`."""
    for cache in (cache_path(model_path), shared_cache_path(digest)):
        if not cache.exists():
            continue
        cached = OnnxPredictor(cache, threads=threads)
        info = cached.onnx.info
        if info.source_sha256 == digest and info.export_version == EXPORT_VERSION and info.quantization == "none":
            return cached
    return None


# Where a GPU's driver shows itself on Linux: NVIDIA's, AMD's ROCm (torch.cuda covers both), WSL's GPU bridge.
_GPU_NODES = ("/proc/driver/nvidia/version", "/dev/nvidiactl", "/dev/nvidia0", "/dev/kfd", "/dev/dxg")


def surely_cpu_only() -> bool:
    """Whether :func:`cnnkit.runtime.resolve_device` would surely answer ``cpu`` for ``auto``, told without
    importing torch: Linux (Apple's MPS is macOS only) with no GPU driver at all. Unsure means False."""
    return sys.platform.startswith("linux") and not any(os.path.exists(node) for node in _GPU_NODES)


def cpu_onnx_predictor(
    model: str | os.PathLike, backend: str = "auto", *, device: str | None = "auto", threads: int | None = None
) -> OnnxPredictor | None:
    """What :func:`cnnkit.inference.load_predictor` would return, when it is ONNX Runtime on the CPU and can be
    had without torch: ``model`` (as :func:`cnnkit.runs.resolve_model` reads it) is a ``.onnx`` export, or a
    model file with a valid ONNX cache, and the backend is ``onnx``, or ``auto`` with no GPU. Else None
    (load_predictor then decides, and says what is wrong, as it always has)."""
    if backend not in ("auto", "onnx"):
        return None
    try:
        source = resolve_model(model)
    except Exception:  # noqa: BLE001  (whatever is wrong, load_predictor says it)
        return None
    if source.kind == "onnx":
        return OnnxPredictor(source.path, threads=threads)  # any device: load_predictor ignores it for an export
    if source.kind != "model" or device not in (None, "auto", "cpu"):
        return None
    if backend == "auto" and device != "cpu" and not surely_cpu_only():
        return None  # maybe a GPU: auto means PyTorch there
    path = Path(source.path)
    if not path.is_file():
        return None
    try:
        return open_cache(path, file_sha256(path), threads)  # None: no cache yet, load_predictor makes it
    except ModelFileError:
        return None  # a damaged cache: load_predictor warns and rebuilds it
