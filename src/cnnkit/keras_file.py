"""Keras' model files, read as data: ``.keras`` (Keras 3) and legacy ``.h5``, without Keras.

A ``.keras`` file is a zip of ``config.json`` (the architecture), ``metadata.json`` and
``model.weights.h5`` (HDF5: ``layers/<layer name>/vars/0, 1, ...`` in Keras' variable order);
a legacy ``.h5`` file holds the same config as its ``model_config`` attribute and each layer's
weights under ``model_weights/<layer name>``, ordered by its ``weight_names`` attribute. Only JSON
and arrays are read, so a Keras file can never run code here (a Lambda layer's code stays in
the file: :mod:`cnnkit.models.keras_import` refuses it by name).

This module knows the formats and nothing about models; files are recognized by their
magic bytes, whatever their names say (cnnkit's own model files are safetensors even when
named ``.keras``).
"""

from __future__ import annotations

import io
import json
import os
import re
import zipfile
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.errors import ModelFileError

__all__ = ["KerasFile", "keras_kind", "read_keras_config", "read_keras_file"]

_HDF5_MAGIC = b"\x89HDF\r\n\x1a\n"
_MAX_WEIGHTS = 4 * 2**30  # a zip member larger than this is refused before it is read into memory


@dataclass
class KerasFile:
    """What a Keras model file holds: the architecture config and each layer's weights in Keras' layout."""

    config: dict[str, Any]
    weights: dict[str, list[np.ndarray]] = field(default_factory=dict)
    keras_version: str | None = None
    kind: str = "keras"  # "keras" (Keras 3's zip) or "h5" (legacy HDF5)


def keras_kind(path: str | os.PathLike) -> str | None:
    """``"keras"`` for a Keras 3 zip, ``"h5"`` for an HDF5 file, ``None`` for anything else (by content)."""
    try:
        with open(path, "rb") as f:
            head = f.read(8)
    except OSError:
        return None
    if head == _HDF5_MAGIC:
        return "h5"
    if head.startswith(b"PK\x03\x04"):
        try:
            with zipfile.ZipFile(path) as archive:
                return "keras" if "config.json" in archive.namelist() else None
        except zipfile.BadZipFile:
            return None
    return None


def read_keras_file(path: str | os.PathLike) -> KerasFile:
    """The config and weights of a Keras ``.keras`` or legacy ``.h5`` model file."""
    path = Path(path)
    kind = keras_kind(path)
    try:
        if kind == "keras":
            return _read_zip(path)
        if kind == "h5":
            return _read_h5(path)
    except (OSError, KeyError, ValueError, zipfile.BadZipFile) as e:
        raise ModelFileError(f"{path} is a damaged Keras file: {e}") from None
    raise ModelFileError(f"{path} is not a Keras model file")


def read_keras_config(path: str | os.PathLike) -> dict[str, Any]:
    """The architecture config of a ``.keras`` zip, without reading its weights."""
    try:
        with zipfile.ZipFile(path) as archive:
            return _json(archive.read("config.json"), Path(path), "config.json")
    except (OSError, KeyError, zipfile.BadZipFile) as e:
        raise ModelFileError(f"{path} is a damaged Keras file: {e}") from None


def _json(raw: bytes | str, path: Path, what: str) -> dict[str, Any]:
    try:
        value = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelFileError(f"{path}: its {what} is not valid JSON") from None
    if not isinstance(value, dict):
        raise ModelFileError(f"{path}: its {what} is not a JSON object")
    return value


def _read_zip(path: Path) -> KerasFile:
    import h5py

    with zipfile.ZipFile(path) as archive:
        names = archive.namelist()
        config = _json(archive.read("config.json"), path, "config.json")
        metadata = _json(archive.read("metadata.json"), path, "metadata.json") if "metadata.json" in names else {}
        if "model.weights.h5" not in names:
            raise ModelFileError(f"{path} has no model.weights.h5: a Keras file without weights")
        if archive.getinfo("model.weights.h5").file_size > _MAX_WEIGHTS:
            raise ModelFileError(f"{path}: its weights are larger than cnnkit reads ({_MAX_WEIGHTS // 2**30} GB)")
        data = archive.read("model.weights.h5")
    with h5py.File(io.BytesIO(data), "r") as h5:
        tree = _tree(h5)
    return KerasFile(config, _by_layer_name(config, tree.get("layers", {})), metadata.get("keras_version"), "keras")


def _tree(group: Any) -> dict[str, Any]:
    """A saved object's variables (``vars/0, 1, ...``) and, for a model, its layers' (``layers/<key>``)."""
    variables = group.get("vars")
    node: dict[str, Any] = {"vars": [np.asarray(variables[str(i)][()]) for i in range(len(variables or ()))]}
    if "layers" in group:
        node["layers"] = {key: _tree(sub) for key, sub in group["layers"].items()}
    return node


def _snake(name: str) -> str:
    """Keras' ``to_snake_case``: ``BatchNormalization`` -> ``batch_normalization``."""
    name = re.sub(r"(.)([A-Z][a-z]+)", r"\1_\2", re.sub(r"\W+", "", name))
    return re.sub(r"([a-z])([A-Z])", r"\1_\2", name).lower()


def _by_layer_name(config: dict[str, Any], saved: dict[str, Any]) -> dict[str, list[np.ndarray]]:
    """``model.weights.h5`` keys layers by class, not by name: ``conv2d``, ``conv2d_1``, ... in the model's
    layer order (Keras' saving_lib names each saveable in a list so). Keyed here by the layers' names; a
    model nested as a layer gets all its layers' weights in order, as its ``get_weights()`` lists them."""
    used: dict[str, int] = {}
    named: dict[str, list[np.ndarray]] = {}
    for spec in (config.get("config") or {}).get("layers") or []:
        key = _snake(str(spec.get("class_name")))
        used[key] = used.get(key, -1) + 1
        key = key if used[key] == 0 else f"{key}_{used[key]}"
        name = spec.get("name") or (spec.get("config") or {}).get("name")
        if key not in saved or not name:
            continue
        if "layers" in saved[key]:
            named[name] = [w for inner in _by_layer_name(spec, saved[key]["layers"]).values() for w in inner]
        else:
            named[name] = saved[key]["vars"]
    return named


def _text(value: Any) -> str:
    return value.decode() if isinstance(value, bytes) else str(value)


def _read_h5(path: Path) -> KerasFile:
    import h5py

    with h5py.File(path, "r") as h5:
        if "model_config" not in h5.attrs:
            raise ModelFileError(
                f"{path} is an HDF5 file without a model config (Keras' weights-only .weights.h5, or not Keras): "
                f"cnnkit needs a whole model saved with model.save('model.h5') or model.save('model.keras')"
            )
        config = _json(_text(h5.attrs["model_config"]), path, "model_config")
        version = _text(h5.attrs["keras_version"]) if "keras_version" in h5.attrs else None
        weights: dict[str, list[np.ndarray]] = {}
        root = h5.get("model_weights", h5)
        for name in (_text(n) for n in root.attrs.get("layer_names", [])):
            group = root[name]
            weights[name] = [np.asarray(group[_text(w)][()]) for w in group.attrs.get("weight_names", [])]
    return KerasFile(config, weights, version, "h5")
