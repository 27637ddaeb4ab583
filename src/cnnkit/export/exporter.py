"""``export_model``: what ``cnnkit export`` does — build the file, prove it agrees, then write it.

The order matters: the exported bytes are built in memory and checked against the PyTorch
model on real images first; only an export that passes is written (atomically), so a
failed check never leaves a file behind.
"""

from __future__ import annotations

import copy
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from cnnkit._io import atomic_write_bytes, file_sha256
from cnnkit.errors import ConfigError
from cnnkit.export.common import Probabilities, ReferenceData, export_metadata, reference_data
from cnnkit.export.onnx import DEFAULT_OPSET, onnx_graph, open_onnx, with_metadata
from cnnkit.export.parity import FLOAT_TOLERANCE, ParityReport, check_parity
from cnnkit.export.pt2 import Pt2Runner, pt2_archive
from cnnkit.export.quantize import QUANTIZATION, QuantizationReport, compare_int8, quantize_int8
from cnnkit.export.torchscript import TorchScriptRunner, torchscript_archive
from cnnkit.models.model import Model
from cnnkit.runs import ONNX_SUFFIX, PT2_SUFFIX, TORCHSCRIPT_SUFFIX

__all__ = ["FORMATS", "ExportResult", "build_onnx", "default_export_path", "export_model"]

FORMATS = ("onnx", "pt2", "torchscript")
_SUFFIX = {"onnx": ONNX_SUFFIX, "pt2": PT2_SUFFIX, "torchscript": TORCHSCRIPT_SUFFIX}  # as resolve_model knows them
# Archives run by torch: how each is built from (model, metadata), run, and named in the parity report.
_ARCHIVES = {
    "pt2": (pt2_archive, Pt2Runner, "the .pt2 export"),
    "torchscript": (torchscript_archive, TorchScriptRunner, "the TorchScript export"),
}


@dataclass(frozen=True)
class ExportResult:
    """Where the export went and how it compares with the PyTorch model."""

    path: Path
    format: str
    size: int
    parity: ParityReport
    quantization: QuantizationReport | None = None


def default_export_path(model_path: str | os.PathLike, export_format: str, quantize: str | None = None) -> Path:
    """Next to the model file: ``model.onnx``, ``model.int8.onnx``, ``model.pt2``, ``model.torchscript.pt``."""
    path = Path(model_path)
    stem = path.name.removesuffix(".safetensors")
    return path.with_name(stem + (f".{quantize}" if quantize else "") + _SUFFIX[export_format])


def torch_probabilities(model: Model):
    """``(B, C, H, W)`` float32 array -> ``(B, classes)`` probabilities, computed by the model in PyTorch."""
    wrapper = Probabilities(model).eval()

    @torch.inference_mode()
    def run(images: np.ndarray) -> np.ndarray:
        return wrapper(torch.from_numpy(images)).numpy()

    return run


@contextmanager
def _exportable(model: Model) -> Iterator[Model]:
    """The model on the CPU in eval mode; the caller's model keeps its device and mode."""
    on_cpu = all(p.device.type == "cpu" for p in model.parameters())
    target = model if on_cpu else copy.deepcopy(model).cpu()
    was_training = target.training
    target.eval()
    try:
        yield target
    finally:
        target.train(was_training)


def build_onnx(
    model: Model,
    *,
    source_sha256: str | None,
    reference: ReferenceData,
    opset: int = DEFAULT_OPSET,
    tolerance: float = FLOAT_TOLERANCE,
) -> tuple[bytes, ParityReport]:
    """The float ONNX export's bytes, checked against the model on ``reference`` images."""
    with _exportable(model) as m:
        metadata = export_metadata(m, source_sha256=source_sha256, export_format="onnx")
        payload = with_metadata(onnx_graph(m, opset), metadata)
        exported = open_onnx(payload, name="the ONNX export", threads=None)
        parity = check_parity(
            torch_probabilities(m), exported.run, reference.images, source=reference.source, tolerance=tolerance
        )
    return payload, parity


def _build_int8(
    model: Model, float_payload: bytes, *, source_sha256: str | None, reference: ReferenceData
) -> tuple[bytes, QuantizationReport]:
    """The INT8 export's bytes, and how it compares with the float export on the held-out images."""
    calibration = reference.calibration.numpy()
    with _exportable(model) as m:
        metadata = export_metadata(m, source_sha256=source_sha256, export_format="onnx", quantization=QUANTIZATION)
    metadata["quantization_details"] = (
        "ONNX Runtime static quantization (QDQ): uint8 activations, 7-bit int8 per-channel weights, "
        f"calibrated on {reference.calibration_source}"
    )
    payload = with_metadata(quantize_int8(float_payload, calibration), metadata)
    float_model, int8_model = open_onnx(float_payload), open_onnx(payload, name="the INT8 export")
    report = compare_int8(float_model, int8_model, reference.images.numpy(), reference.labels, source=reference.source)
    return payload, report


def _build_archive(
    model: Model, export_format: str, *, source_sha256: str | None, reference: ReferenceData, tolerance: float
) -> tuple[bytes, ParityReport]:
    """A ``.pt2`` or TorchScript archive's bytes, checked against the model on ``reference`` images."""
    build, runner_class, what = _ARCHIVES[export_format]
    with _exportable(model) as m:
        metadata = export_metadata(m, source_sha256=source_sha256, export_format=export_format)
        payload = build(m, metadata)
        runner = runner_class(payload)
        parity = check_parity(
            torch_probabilities(m), runner.run, reference.images, source=reference.source, tolerance=tolerance,
            what=what,
        )  # fmt: skip
    return payload, parity


def export_model(
    model: Model | str | os.PathLike,
    export_format: str = "onnx",
    *,
    quantize: str | None = None,
    out: str | os.PathLike | None = None,
    data: str | None = None,
    data_dir: str | None = None,
    opset: int = DEFAULT_OPSET,
    tolerance: float = FLOAT_TOLERANCE,
) -> ExportResult:
    """Export a model (a :class:`Model`, a model file or a run folder) and check it on real images.

    ``quantize="int8"`` (ONNX only) quantizes with calibration images and reports the accuracy
    change and speed-up. ``data`` is what ``cnnkit train --data`` takes (a name, a folder, a
    CSV) to check and calibrate on; by default the run's own recorded split (its ``split.json``),
    else the model's built-in training data set, else (said in the report) synthetic images.
    Raises :class:`~cnnkit.errors.ExportError` (nothing written)
    when the model cannot be exported or the export disagrees with it beyond ``tolerance``.
    """
    if export_format not in FORMATS:
        raise ConfigError(f"unknown export format {export_format!r}; choose from {', '.join(FORMATS)}")
    if quantize not in (None, QUANTIZATION):
        raise ConfigError(f"unknown quantization {quantize!r}; cnnkit quantizes to {QUANTIZATION}")
    if quantize and export_format != "onnx":
        raise ConfigError("--quantize int8 is for ONNX exports (ONNX Runtime static quantization)")
    if isinstance(model, Model):
        if out is None:
            raise ConfigError("give out=PATH when exporting a model object")
        source_sha256, run_dir = None, None
    else:
        from cnnkit.models import load_model
        from cnnkit.runs import resolve_model

        model_path = resolve_model(model).model_file("export the .safetensors model it came from")
        model = load_model(model_path)
        run_dir = model_path.parent  # a run folder when it holds the split.json the model was trained on
        source_sha256 = file_sha256(model_path)
        out = out if out is not None else default_export_path(model_path, export_format, quantize)
    reference = reference_data(model, data, run_dir=run_dir, data_dir=data_dir)
    quantization = None
    if export_format in _ARCHIVES:
        payload, parity = _build_archive(
            model, export_format, source_sha256=source_sha256, reference=reference, tolerance=tolerance
        )
    else:
        payload, parity = build_onnx(
            model, source_sha256=source_sha256, reference=reference, opset=opset, tolerance=tolerance
        )
        if quantize:
            payload, quantization = _build_int8(model, payload, source_sha256=source_sha256, reference=reference)
    path = atomic_write_bytes(out, payload)
    return ExportResult(path, export_format, len(payload), parity, quantization)
