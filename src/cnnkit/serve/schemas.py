"""The shapes of the API's answers, for the OpenAPI document at ``/docs``.

The routes build plain dicts and answer them directly (no validation pass on the way out,
which would cost latency on every request); these models only describe them.
"""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, Field

__all__ = [
    "ErrorBody",
    "ExplainAnswer",
    "ExplainMethod",
    "ExplainResult",
    "Health",
    "ModelCard",
    "PredictAnswer",
    "PredictResult",
]


class PredictResult(BaseModel):
    filename: str = Field(description="the upload's file name ('image' for a raw body)")
    width: int = Field(description="the image's own width, before resizing")
    height: int
    labels: list[str] = Field(description="the top-k classes, most probable first")
    probabilities: list[float]
    input_png: str | None = Field(None, description="with include_input=true: the image the model saw, base64 PNG")


class Timing(BaseModel):
    decode: float = Field(description="ms spent decoding and resizing the images")
    model: float = Field(description="ms of the forward pass this request shared")
    total: float = Field(description="ms from the request's images to its answer")
    explain: float | None = Field(None, description="ms spent on heat maps (/v1/explain)")


class PredictAnswer(BaseModel):
    model: str
    results: list[PredictResult]
    batch_size: int = Field(description="images in the forward pass this request shared with others")
    timing_ms: Timing


class ExplainResult(PredictResult):
    target: str = Field(description="the class the heat map explains")
    heatmap_png: str = Field(description="the heat map over the image as the model saw it, base64 PNG")


class ExplainAnswer(BaseModel):
    model: str
    method: str = Field(description="the heat-map method that drew the maps (gradcam unless asked)")
    results: list[ExplainResult]
    batch_size: int
    timing_ms: Timing


class ExplainMethod(BaseModel):
    name: str = Field(description="what /v1/explain?method= takes")
    title: str = Field(description="a short name to show (Grad-CAM)")
    description: str
    layer: bool = Field(description="whether it looks at a convolution (the CAM family) rather than at pixels")


class ModelCard(BaseModel):
    name: str
    architecture: str | None
    classes: list[str]
    num_classes: int
    input_shape: list[int] = Field(description="(height, width, channels)")
    parameters: int
    normalization: dict[str, list[float]] | None
    training: dict[str, Any] | None = Field(description="data set, epochs and metrics from the model file")
    created: str | None
    versions: dict[str, str] | None
    weights_sha256: str | None
    limits: dict[str, float]
    batching: dict[str, float] = Field(description="settings, and the forward passes run so far (mean batch size)")
    explain: bool = Field(description="whether /v1/explain can draw heat maps for this model")
    explain_methods: list[ExplainMethod] = Field(description="the heat-map methods /v1/explain can draw")
    explain_default: str = Field(description="the method /v1/explain draws without ?method=")
    backend: str = Field(description="what runs the forward passes: torch (PyTorch) or onnx (ONNX Runtime)")
    runtime: str = Field(description="the runtime's version, device and threads")


class Health(BaseModel):
    status: str


class ErrorBody(BaseModel):
    detail: str = Field(description="what went wrong, for a person")
    code: str = Field(description="what went wrong, for a program")
