"""Export: ONNX, .pt2 (torch.export) and TorchScript files that answer exactly as the PyTorch model does.

``export_model(path, "onnx")`` builds the file in memory, checks it against the model on
real images (the model's own test set when known), and writes it only if it agrees.
``quantize="int8"`` adds ONNX Runtime static quantization and reports its accuracy cost
and speed-up. Every export takes ``(batch, C, H, W)`` images in [0, 1] and returns class
probabilities; class names, input shape and normalization travel in its metadata.

The names below load their module on first use: reading and running an export
(:mod:`cnnkit.export.metadata`, :mod:`cnnkit.export.onnx_session`) needs neither torch nor the
``onnx`` package, and importing this package must not cost their start-up (seconds) to
``cnnkit predict``, which only reads. Not to break an import cycle: there is none.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnkit._lazy import lazy_names

if TYPE_CHECKING:  # what each name is, for type checkers and the import graph (tests/test_architecture.py)
    from cnnkit.export.exporter import FORMATS, ExportResult, build_onnx, default_export_path, export_model
    from cnnkit.export.metadata import EXPORT_VERSION, ExportInfo
    from cnnkit.export.onnx_session import OnnxModel, open_onnx
    from cnnkit.export.parity import FLOAT_TOLERANCE, ParityError, ParityReport
    from cnnkit.export.quantize import QuantizationReport

# Public name -> the module that provides it (the imports above, as data).
_MODULES = {
    "EXPORT_VERSION": "cnnkit.export.metadata",
    "ExportInfo": "cnnkit.export.metadata",
    "FORMATS": "cnnkit.export.exporter",
    "ExportResult": "cnnkit.export.exporter",
    "build_onnx": "cnnkit.export.exporter",
    "default_export_path": "cnnkit.export.exporter",
    "export_model": "cnnkit.export.exporter",
    "OnnxModel": "cnnkit.export.onnx_session",
    "open_onnx": "cnnkit.export.onnx_session",
    "FLOAT_TOLERANCE": "cnnkit.export.parity",
    "ParityError": "cnnkit.export.parity",
    "ParityReport": "cnnkit.export.parity",
    "QuantizationReport": "cnnkit.export.quantize",
}

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


__getattr__ = lazy_names(__name__, _MODULES)


def __dir__() -> list[str]:
    return sorted(__all__)
