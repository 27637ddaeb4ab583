"""TorchScript export: a traced, frozen archive that libtorch (C++), TorchServe and mobile runtimes load.

The archive holds the same graph contract as the ONNX export (``[0, 1]`` images in,
probabilities out, dynamic batch) and the same metadata, as the extra file ``cnnkit.json``:
``torch.jit.load(path, _extra_files={"cnnkit.json": ""})`` fills it in.

PyTorch marks TorchScript (and ``torch.jit.trace``) as deprecated in favour of ``torch.export``
but still ships and loads it, and it is what deployed libtorch C++ and mobile code consumes today;
users who run the model with torch itself get :mod:`cnnkit.export.pt2` instead.

cnnkit runs only its own archives: :func:`open_torchscript` first reads ``cnnkit.json`` out of
the zip archive without loading anything (a file without cnnkit's export metadata is refused),
and only then hands it to ``torch.jit.load``, which unpickles no Python objects (its restricted
unpickler builds tensors and TorchScript values only) and runs the archive's code in the
TorchScript interpreter, not in Python.
"""

from __future__ import annotations

import io
import json
import os
import warnings
import zipfile
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.errors import ExportError, ModelFileError
from cnnkit.export.common import (
    ExportInfo,
    Probabilities,
    archive_metadata,
    fixed_image_shape,
    metadata_to_strings,
    parse_metadata,
)
from cnnkit.models.model import Model

__all__ = ["EXTRA_FILE", "TorchScriptRunner", "open_torchscript", "read_torchscript_info", "torchscript_archive"]

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
    """Runs a cnnkit TorchScript archive: one it has just written, or one :func:`open_torchscript` checked."""

    def __init__(self, archive: bytes | str | os.PathLike) -> None:
        extra = {EXTRA_FILE: ""}
        source = io.BytesIO(archive) if isinstance(archive, bytes) else str(archive)
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            self.module = torch.jit.load(source, map_location="cpu", _extra_files=extra)
        self.metadata = json.loads(extra[EXTRA_FILE])

    @torch.inference_mode()
    def run(self, images: np.ndarray) -> np.ndarray:
        """``(B, C, H, W)`` images in [0, 1] -> ``(B, classes)`` probabilities."""
        return self.module(torch.from_numpy(images)).numpy()


def read_torchscript_info(path: str | os.PathLike) -> ExportInfo:
    """The cnnkit metadata of a TorchScript archive, read from the zip without loading the archive.

    Raises :class:`~cnnkit.errors.ModelFileError` for a missing file, a file that is not a TorchScript
    archive, or an archive that cnnkit did not export (no ``cnnkit.json`` with its export metadata).
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such TorchScript file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")]
            raw = archive.read(names[0]) if len(names) == 1 else None
    except (zipfile.BadZipFile, OSError) as e:
        raise ModelFileError(f"{path} is not a TorchScript archive ({e})") from None
    foreign = (f"{path} is a TorchScript archive that cnnkit did not export (no cnnkit export metadata); cnnkit "
               f"runs only its own exports, because loading TorchScript runs the code inside it")  # fmt: skip
    metadata = archive_metadata(raw, path, "torchscript", foreign)
    return parse_metadata(metadata_to_strings(metadata), str(path))


def open_torchscript(path: str | os.PathLike) -> tuple[TorchScriptRunner, ExportInfo]:
    """A cnnkit TorchScript export, its metadata checked before it is loaded (see the module's notes)."""
    info = read_torchscript_info(path)
    try:
        runner = TorchScriptRunner(path)
    except RuntimeError as e:  # torch.jit.load: a damaged or truncated archive
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"{path} is damaged: torch cannot load it ({first_line})") from None
    return runner, info
