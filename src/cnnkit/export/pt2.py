"""``.pt2`` export: the model's ``torch.export`` program, saved with ``torch.export.save``.

The successor of the TorchScript export for users who run a model with torch itself (Python's
``torch.export.load``, ``cnnkit predict --backend torch``, ``load_predictor``): ``torch.export`` captures the graph
without ``torch.jit.trace`` (deprecated in torch 2.14), with a dynamic batch dimension, and
the archive holds the same graph contract as every cnnkit export (``[0, 1]`` images in,
probabilities out; see :mod:`cnnkit.export.common`) and the metadata as the extra file
``cnnkit.json``: ``torch.export.load(path, extra_files={"cnnkit.json": ""})`` fills it in. The
exporter sees the model as written (no :func:`cnnkit.kernels.fuse`).

``torch.export.load`` unpickles some payloads (pickled weights and constants, and the sample
inputs when they are not plain tensors), so cnnkit runs only archives that pass
:func:`read_pt2_info` first: cnnkit's export metadata, every weight and constant stored as raw
tensor bytes, and sample inputs that ``torch.load(weights_only=True)`` reads.
"""

from __future__ import annotations

import io
import json
import os
import pickle
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

__all__ = ["EXTRA_FILE", "Pt2Runner", "exported_program", "open_pt2", "pt2_archive", "read_pt2_info"]

EXTRA_FILE = "cnnkit.json"


def exported_program(model: Model) -> torch.export.ExportedProgram:
    """The model with its softmax captured by ``torch.export``, the batch axis dynamic."""
    height, width, channels = fixed_image_shape(model)
    wrapper = Probabilities(model).cpu().eval()
    example = torch.rand(2, channels, height, width)  # (2, C, H, W): batch 2 keeps the batch axis symbolic
    with torch.no_grad():
        return torch.export.export(wrapper, (example,), dynamic_shapes=({0: torch.export.Dim("batch")},))


def pt2_archive(model: Model, metadata: dict[str, Any]) -> bytes:
    """The ``.pt2`` archive's bytes, with ``metadata`` as ``cnnkit.json``."""
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")
            program = exported_program(model)
    except Exception as e:  # torch.export raises many types; all mean "this model does not export"
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ExportError(f"model {model.name!r} cannot be exported to .pt2: {first_line}") from None
    buffer = io.BytesIO()
    with warnings.catch_warnings():  # torch's note that weights sharing no storage are saved one by one
        warnings.simplefilter("ignore", UserWarning)
        torch.export.save(program, buffer, extra_files={EXTRA_FILE: json.dumps(metadata)})
    return buffer.getvalue()


class Pt2Runner:
    """Runs a cnnkit ``.pt2`` archive: one it has just written, or one :func:`open_pt2` checked."""

    def __init__(self, archive: bytes | str | os.PathLike) -> None:
        extra = {EXTRA_FILE: ""}
        source = io.BytesIO(archive) if isinstance(archive, bytes) else str(archive)
        self.module = torch.export.load(source, extra_files=extra).module()
        self.metadata = json.loads(extra[EXTRA_FILE])

    @torch.inference_mode()
    def run(self, images: np.ndarray) -> np.ndarray:
        """``(B, C, H, W)`` images in [0, 1] -> ``(B, classes)`` probabilities."""
        return self.module(torch.from_numpy(images)).numpy()


def _pickled_payloads(archive: zipfile.ZipFile) -> list[str]:
    """What in the archive ``torch.export.load`` would unpickle beyond plain tensors."""
    found = []
    for name in archive.namelist():
        if name.endswith(("_weights_config.json", "_constants_config.json")):
            for fqn, meta in json.loads(archive.read(name)).get("config", {}).items():
                if meta.get("use_pickle") or not str(meta.get("path_name", "")).startswith(("weight_", "tensor_")):
                    found.append(fqn)
        elif "/data/sample_inputs/" in name:
            try:
                torch.load(io.BytesIO(archive.read(name)), weights_only=True)
            except (pickle.UnpicklingError, RuntimeError, EOFError):
                found.append(name)
    return found


def read_pt2_info(path: str | os.PathLike) -> ExportInfo:
    """The cnnkit metadata of a ``.pt2`` archive, checked (see the module's notes) without loading it.

    Raises :class:`~cnnkit.errors.ModelFileError` for a missing file, a file that is not a ``.pt2``
    archive, one cnnkit did not export, or one that would unpickle more than tensors.
    """
    path = Path(path)
    if not path.is_file():
        raise ModelFileError(f"{path}: no such .pt2 file")
    try:
        with zipfile.ZipFile(path) as archive:
            names = [n for n in archive.namelist() if n.endswith(f"/extra/{EXTRA_FILE}")]
            raw = archive.read(names[0]) if len(names) == 1 else None
            pickled = _pickled_payloads(archive)
    except (zipfile.BadZipFile, OSError, json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelFileError(f"{path} is not a readable .pt2 archive ({e})") from None
    foreign = f"{path} is a .pt2 archive that cnnkit did not export (no cnnkit export metadata)"
    metadata = archive_metadata(raw, path, "pt2", foreign)
    if pickled:
        raise ModelFileError(f"{path} holds pickled objects ({', '.join(pickled[:3])}): loading it would run "
                             f"their code, and cnnkit's exports hold only tensors; export it again")  # fmt: skip
    return parse_metadata(metadata_to_strings(metadata), str(path))


def open_pt2(path: str | os.PathLike) -> tuple[Pt2Runner, ExportInfo]:
    """A cnnkit ``.pt2`` export, its metadata and contents checked before it is loaded."""
    info = read_pt2_info(path)
    try:
        runner = Pt2Runner(path)
    except (RuntimeError, KeyError, ValueError) as e:  # a damaged or truncated archive
        first_line = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ModelFileError(f"{path} is damaged: torch cannot load it ({first_line})") from None
    return runner, info
