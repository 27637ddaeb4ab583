"""INT8 quantization for CPU inference: ONNX Runtime static quantization, calibrated on real images.

Static (not dynamic) quantization, because a CNN's cost is in its convolutions and only
static quantization turns them into integer kernels: activation ranges are measured once
on calibration images (training images, so the held-out ones stay held out), weights are
quantized per output channel to 7 bits (``reduce_range``: on CPUs without VNNI, the AVX2
uint8 x int8 kernels saturate 8-bit weights; measured here on the article's CNN, full-range
weights lost 1.1 accuracy points on digits, 7-bit ones none). The QDQ format keeps the graph a plain ONNX graph that
ONNX Runtime fuses into integer kernels. What this costs in accuracy and buys in speed is
measured on held-out images and reported, never assumed.
"""

from __future__ import annotations

import logging
import statistics
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import onnx

from cnnkit.export.common import INPUT_NAME
from cnnkit.export.onnx import OnnxModel
from cnnkit.export.parity import batched, compare_probabilities

__all__ = ["QUANTIZATION", "QuantizationReport", "compare_int8", "quantize_int8"]

QUANTIZATION = "int8"


def quantize_int8(graph: bytes, calibration: np.ndarray, *, batch_size: int = 32) -> bytes:
    """The float graph quantized to INT8 (QDQ, uint8 activations, 7-bit int8 per-channel weights).

    ``calibration`` is ``(N, C, H, W)`` float32 images in [0, 1] that set the activation ranges.
    """
    from onnxruntime.quantization import CalibrationDataReader, QuantFormat, QuantType, quantize_static
    from onnxruntime.quantization.shape_inference import quant_pre_process

    class Batches(CalibrationDataReader):
        def __init__(self) -> None:
            self.start = 0

        def get_next(self) -> dict[str, np.ndarray] | None:
            if self.start >= len(calibration):
                return None
            batch = calibration[self.start : self.start + batch_size]
            self.start += batch_size
            return {INPUT_NAME: np.ascontiguousarray(batch, dtype=np.float32)}

        def rewind(self) -> None:
            self.start = 0

    quant_logger = logging.getLogger()  # the quantizer logs advice at WARNING level through the root logger
    level = quant_logger.level
    quant_logger.setLevel(logging.ERROR)
    try:
        with tempfile.TemporaryDirectory(prefix="cnnkit-quantize-") as tmp:
            source, prepared, quantized = (Path(tmp) / name for name in ("float.onnx", "prepared.onnx", "int8.onnx"))
            source.write_bytes(graph)
            # Shape inference and graph optimization first, as ONNX Runtime recommends: better-placed Q/DQ nodes.
            # From a file: given a ModelProto, quant_pre_process moves its tensors to external data that its
            # own ONNX Runtime pass then cannot read (the dynamo exporter's shape constants, e.g. a Reshape's).
            quant_pre_process(str(source), str(prepared), skip_symbolic_shape=True)
            # The final softmax stays float: quantized, probabilities would come in steps of 1/255.
            softmax = [node.name for node in onnx.load(str(prepared)).graph.node if node.op_type == "Softmax"]
            quantize_static(
                str(prepared), str(quantized), Batches(), quant_format=QuantFormat.QDQ, per_channel=True,
                activation_type=QuantType.QUInt8, weight_type=QuantType.QInt8, reduce_range=True,
                nodes_to_exclude=softmax,
            )  # fmt: skip
            return quantized.read_bytes()
    finally:
        quant_logger.setLevel(level)


@dataclass(frozen=True)
class QuantizationReport:
    """INT8 against float on the same held-out images, both run by ONNX Runtime."""

    n: int
    source: str
    float_accuracy: float | None  # None when the images have no labels
    int8_accuracy: float | None
    agreement: float  # fraction of images whose top class is unchanged
    max_abs_diff: float
    float_ms: float  # median time of one pass over the images, batch_size at a time
    int8_ms: float
    batch_size: int

    @property
    def speedup(self) -> float:
        return self.float_ms / self.int8_ms if self.int8_ms > 0 else float("nan")

    @property
    def accuracy_change(self) -> float | None:
        if self.float_accuracy is None or self.int8_accuracy is None:
            return None
        return self.int8_accuracy - self.float_accuracy

    def __str__(self) -> str:
        if self.accuracy_change is not None:
            accuracy = (
                f"accuracy {self.float_accuracy:.2%} -> {self.int8_accuracy:.2%} "
                f"({self.accuracy_change * 100:+.2f} points), "
            )
        else:
            accuracy = "accuracy not measured (no labels), "
        return (
            f"int8 on {self.source}: {accuracy}top-1 agreement with float {self.agreement:.2%}, "
            f"max |Δp| {self.max_abs_diff:.3f}; speed-up {self.speedup:.2f}x "
            f"({self.float_ms:.1f} -> {self.int8_ms:.1f} ms per pass, batch {self.batch_size})"
        )


def compare_int8(
    float_model: OnnxModel,
    int8_model: OnnxModel,
    images: np.ndarray,
    labels: np.ndarray | None,
    *,
    source: str,
    batch_size: int = 64,
    repeats: int = 5,
) -> QuantizationReport:
    """Accuracy, agreement and speed of the INT8 model against the float one on held-out ``images``.

    The two are timed alternately, pass after pass, so load on a shared machine hits both alike.
    """
    images = np.ascontiguousarray(images, dtype=np.float32)
    reference = batched(float_model.run, images, batch_size)
    quantized = batched(int8_model.run, images, batch_size)
    agreement, diff = compare_probabilities(reference, quantized)
    times: dict[str, list[float]] = {"float": [], "int8": []}
    for _ in range(repeats):
        for key, model in (("float", float_model), ("int8", int8_model)):
            start = time.perf_counter()
            batched(model.run, images, batch_size)
            times[key].append(time.perf_counter() - start)
    accuracy = {}
    if labels is not None:
        accuracy = {key: float((p.argmax(1) == labels).mean()) for key, p in (("f", reference), ("q", quantized))}
    return QuantizationReport(
        n=len(images), source=source, float_accuracy=accuracy.get("f"), int8_accuracy=accuracy.get("q"),
        agreement=agreement, max_abs_diff=diff, float_ms=statistics.median(times["float"]) * 1e3,
        int8_ms=statistics.median(times["int8"]) * 1e3, batch_size=batch_size,
    )  # fmt: skip
