"""ONNX export, and opening an exported file with ONNX Runtime.

The graph is captured by ``torch.export`` and translated by torch's current ONNX exporter
(``torch.onnx.export(..., dynamo=True)``, with onnxscript's op library): the TorchScript-based
exporter (``dynamo=False``) relies on ``torch.jit.trace``, deprecated in torch 2.14, and could not
export some of the zoo (AlexNet's adaptive pooling to a size that does not divide its input).
The batch axis is a ``torch.export`` dynamic dimension; the graph takes ``[0, 1]`` images and
returns probabilities (see :mod:`cnnkit.export.common`). The exporter sees the model as written:
speed-up passes such as :func:`cnnkit.kernels.fuse` are applied by the engine and predictors to
their own copies, never to what is exported.

Every export carries a *self-check*: the probabilities ONNX Runtime gave for two seeded
images when the file was written. Opening the file recomputes them, so a file whose
weights were damaged after export is refused instead of silently answering wrongly.
"""

from __future__ import annotations

import contextlib
import json
import os
import sys
import warnings
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import numpy as np
import onnx
import onnxruntime as ort
import torch
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from cnnkit.errors import ExportError, ModelFileError
from cnnkit.export.common import (
    INPUT_NAME,
    OUTPUT_NAME,
    ExportInfo,
    Probabilities,
    fixed_image_shape,
    metadata_to_strings,
    parse_metadata,
)
from cnnkit.models.model import Model

__all__ = ["DEFAULT_OPSET", "OnnxModel", "onnx_graph", "open_onnx", "with_metadata"]

DEFAULT_OPSET = 18  # the oldest opset torch's dynamo-based exporter writes
_SELF_CHECK_TOLERANCE = {"none": 1e-4, "int8": 5e-2}  # int8 kernels differ a little between CPUs
_ORT_ERRORS = (
    ort_errors.InvalidProtobuf,
    ort_errors.InvalidGraph,
    ort_errors.Fail,
    ort_errors.NoSuchFile,
    ort_errors.InvalidArgument,
    ort_errors.RuntimeException,
)


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
    session = _session(proto.SerializeToString(), "the export", threads=1)
    height, width, channels = (int(n) for n in metadata["input_shape"])
    probe = _self_check_images(channels, height, width)
    probabilities = session.run([OUTPUT_NAME], {INPUT_NAME: probe})[0]
    _set_props(proto, {**props, "self_check": json.dumps({"seed": 0, "probabilities": probabilities.tolist()})})
    return proto.SerializeToString()


def _set_props(proto: onnx.ModelProto, props: dict[str, str]) -> None:
    del proto.metadata_props[:]
    onnx.helper.set_model_props(proto, props)


def _self_check_images(channels: int, height: int, width: int) -> np.ndarray:
    generator = torch.Generator().manual_seed(0)
    return torch.rand(2, channels, height, width, generator=generator).numpy()  # (2, C, H, W)


def _session(source: bytes | str, name: str, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
    # ONNX Runtime's idle threads spin by default, burning the cores that predict's decoding workers
    # (or a server's request handling) need: measured here, a 2,000-file predict ran 1.6x faster without.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except _ORT_ERRORS as e:
        reason = str(e).split(":", 3)[-1].strip() or type(e).__name__
        raise ModelFileError(f"{name} is not a readable ONNX model (damaged or truncated?): {reason}") from None


class OnnxModel:
    """An ONNX Runtime session over a cnnkit export, with its metadata. ``run`` is thread-safe."""

    def __init__(self, session: ort.InferenceSession, info: ExportInfo, name: str) -> None:
        self.session, self.info, self.name = session, info, name

    def run(self, images: np.ndarray) -> np.ndarray:
        """``(B, C, H, W)`` float32 images in [0, 1] -> ``(B, classes)`` probabilities."""
        return self.session.run([OUTPUT_NAME], {INPUT_NAME: images})[0]

    def verify(self) -> None:
        """Recompute the self-check; a file whose numbers changed since export is refused."""
        check = self.info.self_check
        if not check:
            raise ModelFileError(f"{self.name} has no self-check in its metadata; export it again with cnnkit")
        height, width, channels = self.info.image_shape
        expected = np.asarray(check["probabilities"], dtype=np.float32)
        got = self.run(_self_check_images(channels, height, width))
        tolerance = _SELF_CHECK_TOLERANCE.get(self.info.quantization, 1e-4)
        if got.shape != expected.shape or not np.allclose(got, expected, rtol=0, atol=tolerance):
            raise ModelFileError(
                f"{self.name} is damaged: it no longer computes what it computed when exported (modified or corrupted)"
            )


def open_onnx(source: bytes | str | os.PathLike, *, name: str | None = None, threads: int | None = None) -> OnnxModel:
    """Open a cnnkit ONNX export (a path or its bytes), check its metadata and self-check.

    Every problem is a :class:`~cnnkit.errors.ModelFileError` naming the file.
    """
    if isinstance(source, bytes):
        name = name or "the ONNX export"
    else:
        path = Path(source)
        name = name or str(path)
        if not path.is_file():
            raise ModelFileError(f"{path}: no such ONNX file")
        source = str(path)
    session = _session(source, name, threads)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
        raise ModelFileError(f"{name} is not a cnnkit export (inputs {[i.name for i in inputs]})")
    info = parse_metadata(dict(session.get_modelmeta().custom_metadata_map), name)
    model = OnnxModel(session, info, name)
    try:
        model.verify()
    except _ORT_ERRORS as e:
        raise ModelFileError(f"{name} is damaged: ONNX Runtime cannot run it ({e})") from None
    return model
