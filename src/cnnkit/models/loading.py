"""Rebuilding models: from an architecture config, an architecture JSON file, or a model file.

:mod:`cnnkit.modelfile` knows the file format (metadata and tensors, checked); this module
turns what it reads back into a :class:`~cnnkit.models.Model`, the inverse of ``Model.save``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, ConfigError, ModelFileError
from cnnkit.keras_file import keras_kind, read_keras_config
from cnnkit.modelfile import read_metadata, read_model_file
from cnnkit.models._registry import create_model, module_from_config
from cnnkit.models.functional import Functional
from cnnkit.models.keras_import import load_keras_model, model_from_keras_config
from cnnkit.models.model import Model
from cnnkit.models.sequential import Sequential
from cnnkit.runs import resolve_model
from cnnkit.runtime import prefer_channels_last

__all__ = [
    "check_model_file",
    "clone_model",
    "load_architecture",
    "load_model",
    "load_model_file",
    "model_from_config",
    "model_from_json",
]


def model_from_config(architecture: dict[str, Any], *, trust_code: bool | None = None) -> Model:
    """Rebuild a model (untrained) from the architecture config a model file stores.

    A registered custom module (``class_name`` ``"module"``) whose class is not imported yet is
    imported only when ``trust_code`` (None: the ``CNNKIT_TRUST_CODE`` environment variable) allows it.
    """
    if not isinstance(architecture, dict):
        raise ConfigError(f"an architecture is a JSON object, got {type(architecture).__name__}")
    kind = architecture.get("class_name")
    if kind == "Sequential":
        return Sequential.from_config(architecture)
    if kind == "Functional":
        return Functional.from_config(architecture)
    if kind == "registry":
        config = dict(architecture.get("config", {}))
        return create_model(config.pop("name", ""), **config)
    if kind == "module":
        return Model(module_from_config(dict(architecture.get("config", {})), trust_code=trust_code))
    raise ConfigError(
        f"unknown architecture kind {kind!r}: expected a Sequential, Functional, registry or module config"
    )


def model_from_json(json_string: str) -> Model:
    """Keras' ``model_from_json``: an untrained model from ``model.to_json()``, cnnkit's or Keras' own."""
    try:
        config = json.loads(json_string)
    except (TypeError, json.JSONDecodeError) as e:
        raise ConfigError(f"model_from_json takes the JSON text model.to_json() returns ({e})") from None
    if isinstance(config, dict) and "keras_version" in config:  # written by Keras itself
        return model_from_keras_config(config)
    return model_from_config(config)


def clone_model(model: Model) -> Model:
    """Keras' ``clone_model``: the same architecture with fresh weights, not compiled. What cnnkit
    records of the data (class names, normalization, pixel range) comes along."""
    clone = model_from_config(model.get_config())
    clone.name, clone.class_names, clone.pixel_max = model.name, model.class_names, model.pixel_max
    clone.set_normalization(model.normalization)
    return clone.to(next(model.parameters()).device)


def load_architecture(path: str | os.PathLike) -> Model:
    """An untrained model from an architecture JSON file (a hand-written or saved Sequential config).

    Errors name the file, and for a layer its index in ``layers``, its name and the field.
    """
    path = Path(path)
    try:
        architecture = json.loads(path.read_text())
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such architecture file") from None
    except (OSError, UnicodeDecodeError) as e:
        raise ConfigError(f"{path}: cannot read it ({e})") from None
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None
    try:
        return model_from_config(architecture)
    except ConfigError as e:
        raise ConfigError(f"{path}: {e}") from None
    except CnnkitError as e:
        raise type(e)(f"{path}: {e}") from None


def check_model_file(path: str | os.PathLike) -> None:
    """Whether ``path`` is a model file :func:`load_model` reads (cnnkit's or Keras'), without loading its weights:
    a missing, pickled, foreign or damaged file is its one clear error here."""
    kind = keras_kind(path)
    if kind == "keras":
        read_keras_config(path)
    elif kind is None:
        read_metadata(path)


def load_model_file(filepath: str | os.PathLike, *, trust_code: bool | None = None) -> tuple[Model, dict[str, Any]]:
    """The model in a model file (or the run it names) and the file's metadata (for a model card), from
    one read of the file.

    See :func:`load_model`.
    """
    path = resolve_model(filepath).model_file("load the .safetensors model it came from")
    if keras_kind(path) is not None:  # a real Keras file (zip or HDF5, by its bytes, whatever its name)
        model, metadata = load_keras_model(path)
        prefer_channels_last(model)
        return model.eval(), metadata
    metadata, tensors = read_model_file(path)  # checked: format, version, checksum
    try:
        model = model_from_config(metadata["architecture"], trust_code=trust_code)
        model.load_state_dict(tensors, strict=True)
    except CnnkitError as e:
        raise ModelFileError(f"{path}: cannot rebuild the model: {e}") from None
    except RuntimeError as e:  # load_state_dict: missing/unexpected keys or shapes
        raise ModelFileError(f"{path}: weights do not fit the stored architecture: {e}") from None
    # What Model.save wrote beside the architecture, put back.
    model.name = metadata.get("name", model.name)
    model.class_names = metadata.get("class_names")
    if metadata.get("input_shape") and not model.built:
        model.build(metadata["input_shape"])
    model.set_normalization(metadata.get("normalization"))
    model.pixel_max = float(metadata.get("pixel_max") or 1.0)  # older files: cnnkit's [0, 1]
    model.training_summary = metadata.get("training") or {}
    compiled = metadata.get("compile")
    if compiled and compiled.get("loss"):
        model.compile(optimizer=compiled["optimizer"], loss=compiled["loss"], metrics=compiled["metrics"])
    prefer_channels_last(model)  # a layout, not a value: what inference and training run fastest on
    model.eval()
    return model, metadata


def load_model(filepath: str | os.PathLike, *, trust_code: bool | None = None) -> Model:
    """Load a model saved with ``model.save()``, or one saved by Keras 3 (``.keras``, legacy ``.h5``); never
    unpickles and never runs code from the file.

    ``filepath``: a ``.safetensors`` model file, or a run named as ``cnnkit predict`` takes it (its
    folder, ``"latest"``, or a prefix of its name under ``runs/``; see :func:`cnnkit.runs.resolve_model`).

    The weights are checked against their checksum. The model comes back in eval mode, its
    convolution weights in channels-last memory (the layout PyTorch runs convolutions fastest
    in on CPUs and GPUs; the values are as saved).

    A model wrapping a custom module (see :func:`cnnkit.models.register_module`) whose class is
    not imported yet needs ``trust_code=True`` (or ``CNNKIT_TRUST_CODE=1``): cnnkit then imports
    the Python module the file names, which runs its code. The file itself never holds code.
    """
    return load_model_file(filepath, trust_code=trust_code)[0]
