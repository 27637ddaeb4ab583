"""ONNX export, and opening an exported file with ONNX Runtime.

The graph is captured by ``torch.export`` and translated by torch's current ONNX exporter
(``torch.onnx.export(..., dynamo=True)``, with onnxscript's op library): the TorchScript-based
exporter (``dynamo=False``) relies on ``torch.jit.trace``, deprecated in torch 2.14, and could not
export some of the zoo (AlexNet's adaptive pooling to a size that does not divide its input).
The batch axis is a ``torch.export`` dynamic dimension; the graph takes ``[0, 1]`` images and
returns probabilities (see :mod:`cnnkit.export.common`). The exporter sees the model as written:
speed-up passes such as :func:`cnnkit.kernels.fuse` are applied by the engine and predictors to
their own copies, never to what is exported.

Every export carries a *self-check* (written here by :func:`with_metadata`): the probabilities
ONNX Runtime gave for two seeded images. Opening an export (:func:`open_onnx`, in
:mod:`cnnkit.export.onnx_session`: torch-free, re-exported here) recomputes them.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterator
from typing import Any

import onnx
import torch

from cnnkit.errors import ExportError
from cnnkit.export.common import (
    INPUT_NAME,
    OUTPUT_NAME,
    Probabilities,
    fixed_image_shape,
    metadata_to_strings,
)
from cnnkit.export.onnx_session import OnnxModel, open_onnx, ort_session, self_check_images
from cnnkit.models.model import Model

__all__ = ["DEFAULT_OPSET", "OnnxModel", "onnx_graph", "open_onnx", "with_metadata"]

DEFAULT_OPSET = 18  # the oldest opset torch's dynamo-based exporter writes


def onnx_graph(model: Model, opset: int = DEFAULT_OPSET) -> bytes:
    """The model with its softmax as an ONNX graph (no metadata yet): images ``(batch, C, H, W)`` -> probabilities."""
    height, width, channels = fixed_image_shape(model)
    wrapper = Probabilities(model).cpu().eval()
    example = torch.rand(2, channels, height, width)  # batch 2, so nothing gets specialized to batch 1
    try:
        with warnings.catch_warnings(), _no_stdout(), torch.no_grad():
            warnings.simplefilter("ignore")  # torch.export's notes on the graph it captured
            program = torch.onnx.export(
                wrapper, (example,), None, dynamo=True, opset_version=opset, verbose=False,
                input_names=[INPUT_NAME], output_names=[OUTPUT_NAME],
                dynamic_shapes=({0: torch.export.Dim("batch")},),
            )  # fmt: skip
    except Exception as e:  # torch.export and the exporter raise many types; all mean "this does not export"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"model {model.name!r} cannot be exported to ONNX: {first_line}") from None
    return program.model_proto.SerializeToString()


@contextlib.contextmanager
def _no_stdout() -> Iterator[None]:
    """Send what is written to file descriptor 1 to /dev/null for the duration.

    torch's exporters print progress and, when an op does not export, graphs to stdout (some of
    it from C++): that would bury the one-line error and corrupt ``predict``'s CSV/JSON output
    when ``auto`` falls back to PyTorch.
    """
    with contextlib.suppress(OSError, ValueError):
        sys.stdout.flush()
    try:
        saved = os.dup(1)
    except OSError:  # no stdout at all: nothing to keep clean
        yield
        return
    try:
        with open(os.devnull, "wb") as devnull:
            os.dup2(devnull.fileno(), 1)
        yield
    finally:
        os.dup2(saved, 1)
        os.close(saved)


def with_metadata(graph: bytes, metadata: dict[str, Any]) -> bytes:
    """The graph with ``metadata`` as its metadata_props and a self-check computed by ONNX Runtime."""
    proto = onnx.load_from_string(graph)
    props = metadata_to_strings(metadata)
    _set_props(proto, props)
    proto.doc_string = f"cnnkit export of {metadata.get('name', 'a model')}: {metadata.get('output', '')}"
    onnx.checker.check_model(proto)
    session = ort_session(proto.SerializeToString(), "the export", threads=1)
    height, width, channels = (int(n) for n in metadata["input_shape"])
    probe = self_check_images(channels, height, width)
    probabilities = session.run([OUTPUT_NAME], {INPUT_NAME: probe})[0]
    _set_props(proto, {**props, "self_check": json.dumps({"seed": 0, "probabilities": probabilities.tolist()})})
    return proto.SerializeToString()


def _set_props(proto: onnx.ModelProto, props: dict[str, str]) -> None:
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)
