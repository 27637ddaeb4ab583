"""Export: ONNX, .pt2 (torch.export) and TorchScript files that answer exactly as the PyTorch model does.

``export_model(path, "onnx")`` builds the file in memory, checks it against the model on
real images (the model's own test set when known), and writes it only if it agrees.
``quantize="int8"`` adds ONNX Runtime static quantization and reports its accuracy cost
and speed-up. Every export takes ``(batch, C, H, W)`` images in [0, 1] and returns class
probabilities; class names, input shape and normalization travel in its metadata.
"""

from __future__ import annotations

from cnnkit.export.common import EXPORT_VERSION, ExportInfo
from cnnkit.export.exporter import FORMATS, ExportResult, build_onnx, default_export_path, export_model
from cnnkit.export.onnx import OnnxModel, open_onnx
from cnnkit.export.parity import FLOAT_TOLERANCE, ParityError, ParityReport
from cnnkit.export.quantize import QuantizationReport

__all__ = [
    "EXPORT_VERSION",
    "FLOAT_TOLERANCE",
    "FORMATS",
    "ExportInfo",
    "ExportResult",
    "OnnxModel",
    "ParityError",
    "ParityReport",
    "QuantizationReport",
    "build_onnx",
    "default_export_path",
    "export_model",
    "open_onnx",
]
