"""Opening a cnnkit ONNX export with ONNX Runtime, checked: no torch, no ``onnx`` package.

ONNX Runtime reads the graph and its metadata (``get_modelmeta().custom_metadata_map``) by
itself, so opening and running an export needs neither torch nor the ``onnx`` package (whose
import alone costs most of a second): ``cnnkit predict`` on an export starts in a fraction of
the time. Writing an export (:mod:`cnnkit.export.onnx`) needs both.

Every export carries a *self-check*: the probabilities ONNX Runtime gave for two seeded
images when the file was written. Opening the file recomputes them, so a file whose
weights were damaged after export is refused instead of silently answering wrongly.
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import onnxruntime as ort
from onnxruntime.capi import onnxruntime_pybind11_state as ort_errors

from cnnkit.errors import ModelFileError
from cnnkit.export.metadata import INPUT_NAME, OUTPUT_NAME, ExportInfo, parse_metadata

__all__ = ["ORT_ERRORS", "OnnxModel", "open_onnx", "ort_session", "self_check_images"]

_SELF_CHECK_TOLERANCE = {"none": 1e-4, "int8": 5e-2}  # int8 kernels differ a little between CPUs
ORT_ERRORS = (
    ort_errors.InvalidProtobuf,
    ort_errors.InvalidGraph,
    ort_errors.Fail,
    ort_errors.NoSuchFile,
    ort_errors.InvalidArgument,
    ort_errors.RuntimeException,
)


def self_check_images(channels: int, height: int, width: int) -> np.ndarray:
    """The two seeded images every export's self-check is computed on: ``(2, C, H, W)`` float32 in [0, 1).

    Bit for bit ``torch.rand(2, C, H, W, generator=torch.Generator().manual_seed(0))``, what cnnkit has
    always used (so every export written before still verifies), computed without torch: torch's CPU
    generator is the standard 32-bit Mersenne Twister seeded by ``init_genrand`` (as NumPy's legacy
    ``RandomState``), and a float32 in [0, 1) is its next draw's low 24 bits times 2**-24.
    """
    draws = np.random.RandomState(0).randint(0, 2**32, size=2 * channels * height * width, dtype=np.uint32)
    return ((draws & 0xFFFFFF).astype(np.float32) * np.float32(2.0**-24)).reshape(2, channels, height, width)


def ort_session(source: bytes | str, name: str, threads: int | None) -> ort.InferenceSession:
    options = ort.SessionOptions()
    options.log_severity_level = 3  # errors only: ORT's warnings are not the user's business
    # ONNX Runtime's idle threads spin by default, burning the cores that predict's decoding workers
    # (or a server's request handling) need: measured here, a 2,000-file predict ran 1.6x faster without.
    options.add_session_config_entry("session.intra_op.allow_spinning", "0")
    if threads:
        options.intra_op_num_threads = threads
    try:
        return ort.InferenceSession(source, options, providers=["CPUExecutionProvider"])
    except ORT_ERRORS as e:
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
        got = self.run(self_check_images(channels, height, width))
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
    session = ort_session(source, name, threads)
    inputs, outputs = session.get_inputs(), session.get_outputs()
    if [i.name for i in inputs] != [INPUT_NAME] or OUTPUT_NAME not in [o.name for o in outputs]:
        raise ModelFileError(f"{name} is not a cnnkit export (inputs {[i.name for i in inputs]})")
    info = parse_metadata(dict(session.get_modelmeta().custom_metadata_map), name)
    model = OnnxModel(session, info, name)
    try:
        model.verify()
    except ORT_ERRORS as e:
        raise ModelFileError(f"{name} is damaged: ONNX Runtime cannot run it ({e})") from None
    return model
