"""The model file: one ``.safetensors`` file with the weights and everything else as JSON.

The safetensors header's ``__metadata__`` holds ``format`` (``"cnnkit"``),
``format_version`` and ``cnnkit``: a JSON document with the architecture config, class
names, input shape, normalization, compile settings, training summary, library versions
and a SHA-256 of the weights. Loading reads only JSON and raw tensors, so a model file can
never run code; a pickle (``torch.save``) file is refused with an explanation.

This module knows the format and nothing about models: :func:`write_model_file` takes a
state dict and the metadata a model composed (``Model.save``), :func:`read_model_file`
gives them back checked, and :func:`cnnkit.models.load_model` rebuilds the model from them.
"""

from __future__ import annotations

import hashlib
import json
import os
import platform
import struct
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import save_file

from cnnkit._io import atomic_write
from cnnkit.errors import ModelFileError

__all__ = ["FORMAT_VERSION", "read_metadata", "read_model_file", "read_weights", "write_model_file"]

FORMAT = "cnnkit"
FORMAT_VERSION = 1
_MAX_HEADER = 100 * 2**20  # safetensors' own limit on the JSON header


def _weights_digest(tensors: dict[str, torch.Tensor]) -> str:
    """SHA-256 over names, dtypes, shapes and bytes, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name]
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.contiguous().reshape(-1).view(torch.uint8).numpy().tobytes() if t.numel() else b"")
    return digest.hexdigest()


def _versions() -> dict[str, str]:
    from cnnkit import __version__

    return {"cnnkit": __version__, "torch": torch.__version__, "python": platform.python_version()}


def write_model_file(path: str | os.PathLike, tensors: dict[str, torch.Tensor], metadata: dict[str, Any]) -> Path:
    """Write ``tensors`` (a state dict) and ``metadata`` to ``path`` atomically (the previous file survives
    any failure).

    ``metadata`` is what the model says about itself (it must have an ``architecture``); the file
    adds the library versions, the time it was written and the SHA-256 of the weights.
    """
    path = Path(path)
    if path.suffix not in (".safetensors", ".keras"):
        raise ModelFileError(f"{path}: model files end in .safetensors (or .keras, still in cnnkit's format)")
    tensors = {name: t.detach().cpu().contiguous() for name, t in tensors.items()}
    metadata = {
        **metadata,
        "versions": _versions(),
        "created": datetime.now(UTC).isoformat(timespec="seconds"),
        "weights_sha256": _weights_digest(tensors),
    }
    header = {"format": FORMAT, "format_version": str(FORMAT_VERSION), "cnnkit": json.dumps(metadata)}
    return atomic_write(path, lambda tmp: save_file(tensors, tmp, metadata=header))


def _check_container(path: Path) -> None:
    """Recognize what the file is before handing it to the safetensors parser."""
    if not path.exists():
        raise ModelFileError(f"{path}: no such model file")
    if path.is_dir():
        raise ModelFileError(f"{path} is a folder; give the model file (e.g. {path / 'model.safetensors'})")
    size = path.stat().st_size
    with open(path, "rb") as f:
        head = f.read(9)
    if len(head) == 9 and head[8:9] == b"{":  # an 8-byte header length, then the JSON header
        (header_len,) = struct.unpack("<Q", head[:8])
        if header_len <= _MAX_HEADER and header_len + 8 <= size:
            return
        raise ModelFileError(f"{path} is truncated (its header promises more bytes than the file has)")
    from cnnkit.keras_file import keras_kind

    if keras_kind(path) is not None:
        raise ModelFileError(f"{path} is a Keras model file, not cnnkit's: load it with cnnkit.models.load_model "
                             f"(every cnnkit command that takes a model takes it)")  # fmt: skip
    if head.startswith(b"PK\x03\x04") or (head[:1] == b"\x80" and head[1:2] in (b"\x02", b"\x03", b"\x04", b"\x05")):
        raise ModelFileError(
            f"{path} is a pickle file (PyTorch's torch.save format). cnnkit never unpickles model files, "
            f"because unpickling can run arbitrary code. Save the weights with safetensors instead "
            f"(safetensors.torch.save_file(state_dict, 'weights.safetensors'))."
        )
    if len(head) < 9:
        raise ModelFileError(f"{path} is empty or truncated: not a model file")
    raise ModelFileError(f"{path} is not a safetensors model file")


def _metadata(path: Path, header: dict[str, str]) -> dict[str, Any]:
    """The cnnkit metadata in a safetensors header, or a clear error saying why it is not there."""
    if header.get("format") != FORMAT:
        raise ModelFileError(
            f"{path} is a safetensors file but not a cnnkit model (no cnnkit metadata); "
            f"plain weights can be loaded with model.load_weights()"
        )
    try:
        version = int(header.get("format_version", ""))
    except ValueError:
        raise ModelFileError(f"{path}: bad format_version {header.get('format_version')!r}") from None
    if version > FORMAT_VERSION:
        raise ModelFileError(
            f"{path} was written by a newer cnnkit (model format {version}; this one reads up to "
            f"{FORMAT_VERSION}): upgrade cnnkit with `pip install -U cnnkit`"
        )
    try:
        metadata = json.loads(header["cnnkit"])
    except (KeyError, json.JSONDecodeError):
        raise ModelFileError(f"{path} is damaged: its cnnkit metadata is not valid JSON") from None
    if not isinstance(metadata, dict) or "architecture" not in metadata:
        raise ModelFileError(f"{path} is damaged: its metadata has no architecture")
    return metadata


def read_metadata(path: str | os.PathLike) -> dict[str, Any]:
    """The JSON metadata of a cnnkit model file, without loading the weights."""
    path = Path(path)
    _check_container(path)
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
    except (SafetensorError, OSError, ValueError) as e:
        raise ModelFileError(f"{path} is damaged (truncated or modified): {e}") from None
    return _metadata(path, header)


def read_weights(path: str | os.PathLike) -> dict[str, torch.Tensor]:
    """All tensors of a safetensors file (no code runs; pickles are refused)."""
    path = Path(path)
    _check_container(path)
    try:
        with safe_open(path, framework="pt") as f:
            return {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path} is damaged (truncated or modified): {e}") from None


def read_model_file(path: str | os.PathLike) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
    """A cnnkit model file's metadata and tensors, in one read, the tensors checked against their checksum."""
    path = Path(path)
    _check_container(path)
    try:
        with safe_open(path, framework="pt") as f:
            header = f.metadata() or {}
            metadata = _metadata(path, header)  # a foreign or newer file: said before any tensor is read
            tensors = {name: f.get_tensor(name) for name in f.keys()}  # noqa: SIM118 - safe_open has no __iter__
    except (SafetensorError, OSError, ValueError, RuntimeError) as e:
        raise ModelFileError(f"{path} is damaged (truncated or modified): {e}") from None
    if metadata.get("weights_sha256") != _weights_digest(tensors):
        raise ModelFileError(f"{path} is damaged: its weights do not match their checksum (modified or corrupted)")
    return metadata, tensors
