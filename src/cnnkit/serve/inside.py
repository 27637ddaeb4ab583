"""The inside view over HTTP: ``POST /v1/inside``, ``GET /v1/inside/kernel`` and the page ``GET /inside``.

``POST /v1/inside`` takes one image (the upload rules and limits of ``/v1/predict``) and answers
:func:`cnnkit.explain.inside` for it as JSON:

- ``layers``: every layer in order, with ``name``, ``kind``, ``role``, ``output_shape`` (Keras
  order), ``params``, ``detail``; a flat layer's first ``values``; and for each convolution,
  activation and pooling layer ``maps``: its most active channels as one grayscale PNG strip
  (map ``i`` in columns ``i*w .. i*w+w-1``), each 8-bit pixel ``q`` meaning
  ``low[i] + q * (high[i] - low[i]) / 255`` (so within half a step of the true value).
- ``first_conv``: the first convolution's kernels (the channels shown) and the input patch it
  slides over, as float32 arrays ``{"shape": [...], "f32": base64 little-endian}``: the exact
  numbers of its multiply-and-sum.
- ``probabilities`` for every class, the input as the model saw it, notes on what was left out.

The size is bounded for any model: at most ``max_channels`` maps per layer (256 at most),
``max_size`` pixels a side (64 at most), :data:`MAX_VALUES` map values in all, so even a
ResNet-50 at 224x224 answers in under :data:`MAX_RESPONSE_BYTES`. The work runs on the model
thread, between batches, on the PyTorch model (hooks, as for ``/v1/explain``).
"""

from __future__ import annotations

import base64
import io
import time
from pathlib import Path
from typing import Any

import anyio.to_thread
import numpy as np
import torch
from fastapi import APIRouter, Query, Request
from fastapi.responses import FileResponse, JSONResponse
from PIL import Image

from cnnkit.errors import CnnkitError
from cnnkit.explain import Inside, LayerInside, conv_kernels, inside, resolve_layer
from cnnkit.explain.inside import ConvAtWork, FeatureMaps
from cnnkit.serve.limits import ApiError, deadline
from cnnkit.serve.service import ModelService, tensor_to_png
from cnnkit.serve.uploads import read_uploads

__all__ = ["MAX_RESPONSE_BYTES", "MAX_VALUES", "encode_inside", "inside_router"]

MAX_VALUES = 1_000_000  # feature-map values in one answer, shared by the layers (8-bit each)
MAX_KERNEL_VALUES = 4608  # weights answered for one filter (512 input channels of 3x3)
# What MAX_VALUES and the caps on the first convolution allow, with PNG and base64 overheads.
MAX_RESPONSE_BYTES = 2 * 2**20


def _num(value: float) -> float:
    """A float with 6 significant digits: plenty for display, and JSON stays short."""
    return float(f"{float(value):.6g}")


def _f32(array: np.ndarray) -> dict[str, Any]:
    """An exact float32 array for JSON: its shape and its little-endian bytes in base64."""
    data = np.ascontiguousarray(array, dtype="<f4")
    return {"shape": list(data.shape), "f32": base64.b64encode(data.tobytes()).decode("ascii")}


def _png(pixels: np.ndarray) -> str:
    buffer = io.BytesIO()
    Image.fromarray(pixels, "L").save(buffer, format="PNG", compress_level=6)
    return base64.b64encode(buffer.getvalue()).decode("ascii")


def encode_maps(maps: FeatureMaps) -> dict[str, Any]:
    """Feature maps ``(n, h, w)`` as one 8-bit PNG strip ``(h, n * w)``, each map on its own scale."""
    values = maps.maps  # (n, h, w)
    n, height, width = values.shape
    low = np.array([_num(v) for v in values.min(axis=(1, 2))], dtype=np.float64)  # (n,)
    high = np.array([_num(v) for v in values.max(axis=(1, 2))], dtype=np.float64)
    span = np.where(high > low, high - low, 1.0)[:, None, None]
    quantized = np.clip(np.rint((values - low[:, None, None]) / span * 255.0), 0, 255).astype(np.uint8)
    strip = quantized.transpose(1, 0, 2).reshape(height, n * width)  # map i in columns i*w .. i*w+w-1
    return {
        "png": _png(strip),
        "size": [height, width],
        "full_size": list(maps.full_size),
        "total": maps.total,
        "channels": maps.channels.tolist(),
        "activity": [_num(a) for a in maps.activity],
        "low": low.tolist(),
        "high": high.tolist(),
    }


def _encode_layer(layer: LayerInside) -> dict[str, Any]:
    return {
        "name": layer.name,
        "kind": layer.kind,
        "role": layer.role,
        "output_shape": list(layer.output_shape),
        "params": layer.params,
        "detail": layer.detail,
        "source": layer.source,
        "notes": list(layer.notes),
        "maps": None if layer.maps is None else encode_maps(layer.maps),
        "values": None if layer.values is None else [_num(v) for v in layer.values],
        "values_total": layer.values_total,
    }


def _encode_first_conv(conv: ConvAtWork, shown: FeatureMaps | None) -> dict[str, Any]:
    """The first convolution at work, for the filters whose maps are shown (all of them if none are)."""
    filters = shown.channels if shown is not None else np.arange(len(conv.kernels))
    return {
        "layer": conv.layer,
        "filters": filters.tolist(),
        "kernels": _f32(conv.kernels[filters]),  # (n, C / groups, kh, kw)
        "bias": _f32(conv.bias[filters]),
        "stride": list(conv.stride),
        "dilation": list(conv.dilation),
        "groups": conv.groups,
        "activation": conv.activation,
        "patch": _f32(conv.patch),  # (C, ph, pw)
        "origin": list(conv.origin),
        "positions": list(conv.positions),
        "output_size": list(conv.output_size),
        "normalized": conv.normalized,
    }


def encode_inside(view: Inside) -> dict[str, Any]:
    """The JSON answer of ``POST /v1/inside`` (without its timing) for an :class:`~cnnkit.explain.Inside`."""
    height, width = view.image.shape[1:]
    first = None
    if view.first_conv is not None:
        first = _encode_first_conv(view.first_conv, view.layer(view.first_conv.layer).maps)
    return {
        "model": view.model,
        "input": {"shape": [height, width, view.image.shape[0]], "png": tensor_to_png(torch.from_numpy(view.image))},
        "classes": view.class_names,
        "probabilities": [round(float(p), 6) for p in view.probabilities],
        "predicted": view.class_names[view.predicted],
        "layers": [_encode_layer(layer) for layer in view.layers],
        "first_conv": first,
        "notes": list(view.notes),
    }


def encode_kernel(model: torch.nn.Module, layer: str, channel: int) -> dict[str, Any]:
    """``GET /v1/inside/kernel``: one filter of a convolution (its first input channels if it has many)."""
    try:
        weights = conv_kernels(model, layer)  # (F, C / groups, kh, kw)
        name, module = resolve_layer(model, layer)
    except CnnkitError as e:
        raise ApiError(422, "bad_parameter", str(e)) from None
    if channel >= len(weights):
        raise ApiError(422, "bad_parameter", f"layer {layer!r} has {len(weights)} filters; channel must be below that")
    inputs, kh, kw = weights.shape[1:]
    shown = max(1, min(inputs, MAX_KERNEL_VALUES // (kh * kw)))
    bias = getattr(getattr(module, "conv", module), "bias", None)
    return {
        "layer": name,
        "channel": channel,
        "inputs": inputs,
        "weights": _f32(weights[channel, :shown]),  # (shown, kh, kw)
        "bias": None if bias is None else float(bias[channel].detach()),
        "activation": getattr(module, "activation_name", "linear"),
        "notes": [] if shown == inputs else [f"the first {shown} of {inputs} input channels"],
    }


def inside_router(
    service: ModelService, *, page: Path, page_headers: dict[str, str], docs: dict[str, Any]
) -> APIRouter:
    """The routes of the inside view; ``docs`` holds the upload's OpenAPI ``openapi_extra`` and ``responses``."""
    router = APIRouter()

    @router.get("/inside", include_in_schema=False)
    async def inside_page() -> FileResponse:
        return FileResponse(page, headers=page_headers)

    @router.post("/v1/inside", summary="Every layer's output for one image: the inside view", **docs)
    async def inside_api(
        request: Request,
        max_channels: int = Query(64, ge=1, le=256, description="most feature maps per layer (the most active)"),
        max_size: int = Query(32, ge=4, le=64, description="longest side of a feature map (larger ones averaged)"),
    ) -> JSONResponse:
        if not service.ready:
            raise ApiError(
                503, "not_ready", "the model is not loaded yet, or the server is stopping", {"Retry-After": "1"}
            )
        async with deadline(service.config.timeout_s):
            try:
                uploads = await read_uploads(request, 1)
            except ApiError as e:
                if e.code == "too_many_images":
                    raise ApiError(413, e.code, "the inside view takes one image per request") from None
                raise
            started = time.perf_counter()
            x, _ = await service.prepare_all(uploads)  # (1, C, H, W)
            decoded = time.perf_counter()
            options = {"max_channels": max_channels, "max_size": max_size, "max_values": MAX_VALUES}
            view = await service.batcher.call(lambda: _inside(service, x[0], options))
            computed = time.perf_counter()
            answer = await anyio.to_thread.run_sync(encode_inside, view)
        now = time.perf_counter()
        answer["timing_ms"] = {
            "decode": round((decoded - started) * 1000, 3),
            "inside": round((computed - decoded) * 1000, 3),
            "encode": round((now - computed) * 1000, 3),
            "total": round((now - started) * 1000, 3),
        }
        return JSONResponse(answer)

    @router.get("/v1/inside/kernel", summary="One filter of a convolution: its weights and bias")
    async def kernel_api(
        layer: str = Query(..., description="a convolution's name, as /v1/inside lists it"),
        channel: int = Query(..., ge=0, description="the filter: the channel of the layer's output it makes"),
    ) -> JSONResponse:
        return JSONResponse(encode_kernel(service.model, layer, channel))

    return router


def _inside(service: ModelService, image: torch.Tensor, options: dict[str, int]) -> Inside:
    """:func:`~cnnkit.explain.inside` on the model thread; a model it cannot look into is a 422."""
    try:
        return inside(service.model, image.to(service.device), **options)
    except CnnkitError as e:
        raise ApiError(422, "cannot_explain", str(e)) from None
