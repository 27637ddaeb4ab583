"""The model behind the server: decoding uploads as training does, batching, the predictor, the card.

Every upload goes through :func:`cnnkit.data.transforms.open_input` and
:func:`~cnnkit.data.transforms.to_batch`, the functions that prepare training images and
``cnnkit predict``'s files (the one decoder with its pixel cap, JPEG draft decoding, the same
resizing), so an image gets the same answer from the server as from the command line.
Forward passes run through a :mod:`cnnkit.inference` predictor (PyTorch or ONNX Runtime,
``ServeConfig.backend``) on the batcher's model thread.

Heat maps need gradients, which only PyTorch gives: the PyTorch model is kept for
``/v1/explain`` whatever the backend, and the predictor is built from it (the model file is
resolved once and read once; a cached ONNX export is tied to that file's SHA-256). It is
loaded at start, not on the first explain request, so a model file that cannot be loaded
fails the start rather than a request, the card (parameters, whether it can be explained)
is known at once, and the first heat map is as quick as the next. The cost is one more copy
of the weights in memory with the ONNX backend (0.4 MB for the article's model, 45 MB for a ResNet-18).
"""

from __future__ import annotations

import asyncio
import base64
import contextlib
import io
import logging
import os
import time
import warnings
from collections.abc import AsyncIterator, Awaitable, Callable
from typing import Any

import anyio.to_thread
import torch
from PIL import Image

from cnnkit.data.decode import ALLOWED_FORMATS
from cnnkit.data.transforms import open_input, to_batch
from cnnkit.errors import CnnkitError, DataError, ImageTooLargeError, UnsupportedImageError
from cnnkit.explain import DEFAULT_METHOD, conv_layer_names, get_method, heatmap, list_methods, overlay
from cnnkit.inference import Predictor, TorchPredictor, predictor_for
from cnnkit.models import Model, load_model_file
from cnnkit.serve.batching import Batcher, BatchStats
from cnnkit.serve.config import ServeConfig, resolve_served_model
from cnnkit.serve.limits import Admission, ApiError, describe
from cnnkit.serve.metrics import ServeMetrics
from cnnkit.serve.uploads import Upload

__all__ = ["ModelService", "image_error", "png_base64", "tensor_to_png"]

log = logging.getLogger("uvicorn.error")  # shown with uvicorn's own lines

# Uploads this small are decoded on the event loop: a 28x28 PNG decodes in tens of microseconds,
# and handing it to a worker thread and back costs several times that (and GIL hand-overs under
# load). Anything larger, or whose header says it is larger, is decoded in a worker thread, so a
# big image never holds up the other requests.
INLINE_BYTES = 64 * 1024
INLINE_PIXELS = 256 * 256


def image_error(upload: Upload, error: DataError) -> ApiError:
    """The status a decoding failure deserves: too big 413, not an image 415, damaged 422."""
    detail = str(error)
    if not detail.startswith(f"{upload.name}: "):
        detail = f"{upload.name}: {detail}"
    if isinstance(error, ImageTooLargeError):
        return ApiError(413, "too_many_pixels", detail)
    if isinstance(error, UnsupportedImageError):
        return ApiError(415, "unsupported_image", detail)
    return ApiError(422, "bad_image", detail)


def png_bytes(image: Image.Image) -> bytes:
    buffer = io.BytesIO()
    image.save(buffer, format="PNG")
    return buffer.getvalue()


def png_base64(image: Image.Image) -> str:
    """A PIL image as base64 PNG text, for JSON."""
    return base64.b64encode(png_bytes(image)).decode("ascii")


def tensor_to_png(image: torch.Tensor) -> str:
    """A ``(C, H, W)`` image in [0, 1] as base64 PNG text (what the model saw, for the page)."""
    array = (image.clamp(0, 1) * 255).round().to(torch.uint8).permute(1, 2, 0).cpu().numpy()  # (H, W, C)
    return png_base64(Image.fromarray(array[..., 0] if array.shape[2] == 1 else array))


class ModelService:
    """One loaded model, its predictor, batcher and card; shared by every request of a server process.

    Args:
        predictor: what runs the forward passes (:func:`cnnkit.inference.predictor_for`).
        model: the PyTorch model, for heat maps and the card (with the torch backend, the predictor's own).
        config: the server's settings.
        metadata: the model file's metadata, for the card.
    """

    def __init__(
        self, predictor: Predictor, model: Model, config: ServeConfig, metadata: dict[str, Any] | None = None
    ) -> None:
        if model.image_shape is None or any(n is None for n in model.image_shape):
            raise DataError(f"model {model.name!r} has no fixed input shape (height, width, channels) to serve")
        self.predictor = predictor
        self.model = model.eval()
        self.config = config
        self.metadata = metadata or {}
        self.device = _device_of(model)  # where Grad-CAM runs
        self.admission = Admission(config.max_in_flight)
        self.arriving = 0  # requests being read and decoded: the batcher waits for them, and only for them
        self.batcher = Batcher(
            self._forward,
            max_batch=config.max_batch,
            wait_ms=config.batch_wait_ms,
            pending=lambda: self.arriving,
            inline_ms=config.inline_ms,
        )
        self.ready = False
        self._decode_slots: asyncio.Semaphore | None = None
        self.input_shape = predictor.image_shape  # (H, W, C)
        self.class_names = list(predictor.class_names)
        self.explainable = bool(conv_layer_names(model))  # Grad-CAM needs a convolution to look at
        self.notes: list[str] = []  # warnings from loading, logged at start
        runtime = _runtime(predictor, config.threads)
        self.metrics = ServeMetrics(model.name, predictor.backend, runtime, config.max_batch)

    @classmethod
    def load(cls, model: Model | str | os.PathLike, config: ServeConfig) -> ModelService:
        """From a loaded model, or a model file / run folder, on ``config.backend``.

        What :func:`~cnnkit.inference.predictor_for` warns about (a damaged ONNX cache rebuilt, a
        model that does not export served by PyTorch) is kept in ``notes``, for the log at start.
        """
        with warnings.catch_warnings(record=True) as caught:
            warnings.simplefilter("always")
            predictor, torch_model, metadata = _load(model, config)
        service = cls(predictor, torch_model, config, metadata)
        service.notes = [str(note.message) for note in caught]
        return service

    # -- lifecycle --------------------------------------------------------------------
    async def start(self) -> None:
        """Start the model thread and warm it up (first passes allocate and pick kernels)."""
        for note in self.notes:
            log.warning("%s", note)  # here, once uvicorn's logging is set up
        if self.config.threads is not None:
            torch.set_num_threads(self.config.threads)  # decoding, heat maps, and the torch backend's passes
        # Decoding runs in worker threads; a few at a time bounds the memory of big uploads.
        self._decode_slots = asyncio.Semaphore(max(1, min(4, os.cpu_count() or 1)))
        self.batcher.start()
        height, width, channels = self.input_shape
        # The whole path once: decoder plugins, the thread pool, then each batch size's kernels.
        blank = Image.new("L" if channels == 1 else "RGB", (width, height))
        probe, _ = await self.prepare_all([Upload("warm-up.png", png_bytes(blank))])  # (1, C, H, W)
        for size in sorted({1, min(2, self.config.max_batch), self.config.max_batch}):
            await self.batcher.submit(probe.expand(size, -1, -1, -1).contiguous())
        self.batcher.stats = BatchStats()  # count requests only
        self.batcher.observe = self.metrics.batch_size.observe
        self.ready = True

    def stop(self) -> None:
        self.ready = False
        self.batcher.stop(timeout=self.config.drain_timeout_s)
        self.metrics.close()

    # -- inference --------------------------------------------------------------------
    def _forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> ``(B, classes)`` probabilities on the CPU; the model thread only."""
        return torch.from_numpy(self.predictor.predict_proba(x))

    def prepare(self, upload: Upload) -> tuple[torch.Tensor, tuple[int, int]]:
        """One upload as the model input ``(1, C, H, W)``, prepared as training data is, and its (width, height)."""
        try:
            decoded = open_input(upload.data, self.input_shape, max_pixels=self.config.max_pixels, name=upload.name)
        except DataError as e:
            raise image_error(upload, e) from None
        return to_batch(decoded.image, self.input_shape), decoded.size  # (1, C, H, W) in [0, 1]

    async def prepare_all(self, uploads: list[Upload]) -> tuple[torch.Tensor, list[tuple[int, int]]]:
        """Decode every upload (small ones on the event loop, others in a worker thread); ``(n, C, H, W)`` and sizes."""

        def work() -> tuple[torch.Tensor, list[tuple[int, int]]]:
            prepared = [self.prepare(upload) for upload in uploads]
            return torch.cat([x for x, _ in prepared]), [size for _, size in prepared]

        if all(_decodes_quickly(upload) for upload in uploads):
            return work()
        async with self._decode_slots:
            return await anyio.to_thread.run_sync(work)

    def top_k(self, probabilities: torch.Tensor, k: int) -> list[tuple[list[str], list[float]]]:
        """Per row of ``(n, classes)`` probabilities: the ``k`` best labels and their probabilities."""
        top = probabilities.topk(min(k, probabilities.shape[1]), dim=1)
        names = self.class_names
        return [  # through Python lists: indexing a tensor element by element costs more than the rest
            ([names[i] for i in indices], [round(p, 6) for p in values])
            for values, indices in zip(top.values.tolist(), top.indices.tolist())
        ]

    @contextlib.asynccontextmanager
    async def arrival(self) -> AsyncIterator[None]:
        """Mark a request as on its way to the model (read and decode inside this block)."""
        self.arriving += 1
        try:
            yield
        finally:
            self.arriving -= 1

    async def predict(
        self, read: Callable[[], Awaitable[list[Upload]]], top_k: int, include_input: bool = False
    ) -> dict[str, Any]:
        """The JSON answer of ``POST /v1/predict`` for the uploads ``read()`` gives."""
        answer, _, _ = await self._recognize(read, top_k, include_input)
        return answer

    async def explain(
        self,
        read: Callable[[], Awaitable[list[Upload]]],
        top_k: int,
        target: str | None,
        include_input: bool = False,
        method: str = DEFAULT_METHOD,
    ) -> dict[str, Any]:
        """``POST /v1/explain``: the predict answer plus, per image, a heat map over it.

        ``method`` is a registered heat-map method (:func:`cnnkit.explain.list_methods`), Grad-CAM
        by default; the map explains ``target`` (a class name), or each image's top class.
        """
        try:
            get_method(method, "heatmap")
        except CnnkitError as e:
            raise ApiError(422, "bad_parameter", str(e)) from None
        if not self.explainable:
            raise ApiError(422, "cannot_explain", f"model {self.model.name!r} has no convolution for Grad-CAM")
        if target is not None and target not in self.class_names:
            shown = ", ".join(self.class_names[:10]) + (", ..." if len(self.class_names) > 10 else "")
            raise ApiError(422, "bad_parameter", f"target {target!r} is not one of the model's classes ({shown})")
        answer, x, probabilities = await self._recognize(read, top_k, include_input)
        targets = [self.class_names.index(target)] * len(x) if target else probabilities.argmax(dim=1).tolist()
        started = time.perf_counter()
        # On the model thread, between batches: the methods' hooks must not see other requests' passes.
        heatmaps = await self.batcher.call(lambda: self._heatmaps(x, targets, method))
        answer["method"] = method
        for item, index, heat in zip(answer["results"], targets, heatmaps):
            item["target"] = self.class_names[index]
            item["heatmap_png"] = png_base64(heat)
        answer["timing_ms"]["explain"] = round((time.perf_counter() - started) * 1000, 3)
        answer["timing_ms"]["total"] = round(answer["timing_ms"]["total"] + answer["timing_ms"]["explain"], 3)
        return answer

    def _heatmaps(self, x: torch.Tensor, targets: list[int], method: str) -> list[Image.Image]:
        """``method``'s heat maps over ``(n, C, H, W)`` images for their ``targets``; on the model thread only."""
        try:
            return [
                overlay(image, heatmap(self.model, image.to(self.device), t, method=method).heat)
                for image, t in zip(x, targets)
            ]
        except CnnkitError as e:
            raise ApiError(422, "cannot_explain", str(e)) from None

    async def _recognize(
        self, read: Callable[[], Awaitable[list[Upload]]], top_k: int, include_input: bool
    ) -> tuple[dict[str, Any], torch.Tensor, torch.Tensor]:
        """Read, decode and batch the uploads: the answer, the model inputs and their probabilities."""
        if not self.ready:
            raise ApiError(
                503, "not_ready", "the model is not loaded yet, or the server is stopping", {"Retry-After": "1"}
            )
        async with self.arrival():
            uploads = await read()
            started = time.perf_counter()
            x, sizes = await self.prepare_all(uploads)  # (n, C, H, W)
        decoded = time.perf_counter()
        result = await self.batcher.submit(x)  # (n, classes) probabilities
        results = []
        for i, (upload, (labels, probs)) in enumerate(zip(uploads, self.top_k(result.outputs, top_k))):
            item: dict[str, Any] = {
                "filename": upload.name,
                "width": sizes[i][0],
                "height": sizes[i][1],
                "labels": labels,
                "probabilities": probs,
            }
            if include_input:
                item["input_png"] = tensor_to_png(x[i])
            results.append(item)
        answer = {
            "model": self.model.name,
            "results": results,
            "batch_size": result.batch_size,
            "timing_ms": _timing(started, decoded, result.model_ms),
        }
        return answer, x, result.outputs

    # -- the model card ----------------------------------------------------------------
    def card(self) -> dict[str, Any]:
        """What ``GET /v1/model`` answers: the model, how it was trained, and the server's limits."""
        architecture = self.metadata.get("architecture") or self.model.architecture or {}
        kind = architecture.get("class_name")
        if kind == "registry":
            kind = architecture.get("config", {}).get("name", kind)
        height, width, channels = self.input_shape
        return {
            "name": self.model.name,
            "architecture": kind,
            "classes": self.class_names,
            "num_classes": len(self.class_names),
            "input_shape": [height, width, channels],
            "parameters": self.model.count_params(),
            "normalization": self.model.normalization,
            "training": self.metadata.get("training") or self.model.training_summary or None,
            "created": self.metadata.get("created"),
            "versions": self.metadata.get("versions"),
            "weights_sha256": self.metadata.get("weights_sha256"),
            "limits": describe(self.config),
            "batching": {
                "max_batch": self.config.max_batch,
                "wait_ms": self.config.batch_wait_ms,
                **self.batcher.stats.to_dict(),  # since the warm-up
                "refused": self.admission.refused,
            },
            "explain": self.explainable,
            "explain_methods": [m.to_dict() for m in list_methods("heatmap")],  # what /v1/explain?method= takes
            "explain_default": DEFAULT_METHOD,
            "backend": self.predictor.backend,
            "runtime": _runtime(self.predictor, self.config.threads),
        }


def _load(source: Model | str | os.PathLike, config: ServeConfig) -> tuple[Predictor, Model, dict[str, Any]]:
    """The predictor that serves, the PyTorch model heat maps need, and the model file's metadata.

    A model file is resolved once and read once; the predictor is built from the model read
    (the ONNX backend exports it, or finds its export cached next to the file).
    """
    options = {"device": config.device, "threads": config.threads}
    if isinstance(source, Model):
        return predictor_for(source, config.backend, **options), source, {}
    path = resolve_served_model(source)
    model, metadata = load_model_file(path)  # a missing, pickled or damaged file: its own clear error, first
    predictor = predictor_for(model, config.backend, model_file=path, **options)
    if isinstance(predictor, TorchPredictor):
        return predictor, predictor.model, metadata
    return predictor, model, metadata  # on the CPU, beside ONNX Runtime: for heat maps only


def _decodes_quickly(upload: Upload) -> bool:
    """Whether ``upload`` is small enough to decode on the event loop (its header read, nothing decoded)."""
    if len(upload.data) > INLINE_BYTES:
        return False
    try:
        with Image.open(io.BytesIO(upload.data), formats=ALLOWED_FORMATS) as image:  # the header only
            width, height = image.size
    except Exception:  # not an image (or a bomb): prepare() refuses it at once, from the same header
        return True
    return width * height <= INLINE_PIXELS


def _device_of(model: Model) -> torch.device:
    return next((p.device for p in model.parameters()), torch.device("cpu"))


def _runtime(predictor: Predictor, threads: int | None) -> str:
    """What runs the forward passes, for the card: ``ONNX Runtime 1.32.0 on cpu, 1 thread``."""
    if predictor.backend == "onnx":
        import onnxruntime

        engine = f"ONNX Runtime {onnxruntime.__version__} on cpu"
    else:
        engine = f"PyTorch {torch.__version__} on {getattr(predictor, 'device', 'cpu')}"
    return f"{engine}, {threads} thread{'' if threads == 1 else 's'}" if threads else engine


def _timing(started: float, decoded: float, model_ms: float) -> dict[str, float]:
    now = time.perf_counter()
    return {
        "decode": round((decoded - started) * 1000, 3),
        "model": round(model_ms, 3),
        "total": round((now - started) * 1000, 3),
    }
