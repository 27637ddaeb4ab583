"""TorchScript export: a traced, frozen archive that libtorch (C++), TorchServe and mobile runtimes load.

The archive holds the same graph contract as the ONNX export (``[0, 1]`` images in,
probabilities out, dynamic batch) and the same metadata, as the extra file ``cnnkit.json``:
``torch.jit.load(path, _extra_files={"cnnkit.json": ""})`` fills it in.

PyTorch marks TorchScript as deprecated in favour of ``torch.export`` but still ships and
loads it, and it is what most deployed C++ and mobile code consumes today. cnnkit only ever
loads an archive it has just written itself (for the parity check): loading a TorchScript
file runs its code, so cnnkit never loads one it is given.
"""

from __future__ import annotations

import io
import json
import warnings
from typing import Any

import numpy as np
import torch

from cnnkit.errors import ExportError
from cnnkit.export.common import Probabilities, fixed_image_shape
from cnnkit.models.model import Model

__all__ = ["EXTRA_FILE", "TorchScriptRunner", "torchscript_archive"]

EXTRA_FILE = "cnnkit.json"


def torchscript_archive(model: Model, metadata: dict[str, Any]) -> bytes:
    """The model with its softmax, traced at batch 2 and frozen, with ``metadata`` as ``cnnkit.json``."""
    height, width, channels = fixed_image_shape(model)
    wrapper = Probabilities(model).cpu().eval()
    example = torch.rand(2, channels, height, width)  # (2, C, H, W): batch 2 keeps the batch axis symbolic
    buffer = io.BytesIO()
    try:
        with warnings.catch_warnings(), torch.no_grad():  # TorchScript's deprecation notice
            warnings.simplefilter("ignore")
            traced = torch.jit.freeze(torch.jit.trace(wrapper, example).eval())
            torch.jit.save(traced, buffer, _extra_files={EXTRA_FILE: json.dumps(metadata)})
    except Exception as e:  # tracing raises many types; all mean "this model does not trace"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"model {model.name!r} cannot be exported to TorchScript: {first_line}") from None
    return buffer.getvalue()


class TorchScriptRunner:
    """Runs an archive cnnkit has just written (never a file from elsewhere: loading TorchScript runs code)."""

    def __init__(self, archive: bytes) -> None:
        extra = {EXTRA_FILE: ""}
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.module = torch.jit.load(io.BytesIO(archive), map_location="cpu", _extra_files=extra)
        self.metadata = json.loads(extra[EXTRA_FILE])

    @torch.inference_mode()
    def run(self, images: np.ndarray) -> np.ndarray:
        """``(B, C, H, W)`` images in [0, 1] -> ``(B, classes)`` probabilities."""
        return self.module(torch.from_numpy(images)).numpy()
