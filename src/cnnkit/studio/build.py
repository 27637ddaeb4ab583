"""The Build step: the registered models as ``cnnkit models`` lists them, and a Sequential from layer blocks.

:func:`layer_table` builds the stack the page sends with the real API
(:meth:`cnnkit.models.Sequential.from_config`) one prefix at a time, so each layer gets the output
shape and parameter count ``summary()`` prints, and the first impossible layer gets the API's own
message (a Dense on a 4-D input says to add a Flatten). :func:`save_architecture` writes the stack as
the architecture JSON ``cnnkit train --model FILE.json`` takes.
"""

from __future__ import annotations

import hashlib
import json
from typing import Any

from cnnkit._io import atomic_write_json
from cnnkit.errors import CnnkitError
from cnnkit.models import Sequential
from cnnkit.models._registry import count_parameters, get_model_entry, list_models
from cnnkit.studio.project import Project, ProjectError

__all__ = ["BLOCKS", "layer_table", "registered_models", "save_architecture"]

# The article's blocks, with the fields the page offers and their defaults (any layer field is accepted).
BLOCKS: dict[str, dict[str, Any]] = {
    "Conv2D": {"filters": 16, "kernel_size": 3, "activation": "relu", "padding": "valid"},
    "MaxPooling2D": {"pool_size": 2},
    "AveragePooling2D": {"pool_size": 2},
    "BatchNormalization": {},
    "Dropout": {"rate": 0.25},
    "Flatten": {},
    "GlobalAveragePooling2D": {},
    "Dense": {"units": 64, "activation": "relu"},
}


def registered_models(num_classes: int) -> list[dict[str, Any]]:
    """Every registered model with its description, input size and parameters for ``num_classes`` classes."""
    out = []
    for name in list_models():
        entry = get_model_entry(name)
        try:
            params = count_parameters(name, num_classes=max(2, num_classes))
        except CnnkitError:
            params = None
        out.append(
            {
                "name": name,
                "description": entry.description,
                "input_size": entry.input_size,
                "in_channels": entry.in_channels,
                "min_input_size": entry.min_input_size,
                "params": params,
            }
        )
    return out


def _config(layers: list[dict[str, Any]], input_shape: list[int]) -> dict[str, Any]:
    specs = [{"class_name": "InputLayer", "config": {"shape": list(input_shape)}}]
    for layer in layers:
        if not isinstance(layer, dict) or not isinstance(layer.get("config", {}), dict):
            raise ProjectError('each layer is {"class_name": "Conv2D", "config": {...}}')
        specs.append({"class_name": layer.get("class_name"), "config": dict(layer.get("config", {}))})
    return {"class_name": "Sequential", "config": {"name": "studio", "layers": specs}}


def layer_table(layers: list[dict[str, Any]], input_shape: list[int]) -> dict[str, Any]:
    """Each layer's output shape and parameters, and the first error (the API's message) if the stack is impossible."""
    rows: list[dict[str, Any]] = []
    for k in range(1, len(layers) + 1):
        try:
            model = Sequential.from_config(_config(layers[:k], input_shape))
        except CnnkitError as e:
            return {"rows": rows, "error": {"index": k - 1, "message": str(e)}, "params": _total(rows)}
        layer = model.layers[-1]
        rows.append({"name": layer.name, "class_name": type(layer).__name__,
                     "output_shape": list(layer.output_shape), "params": layer.count_params()})  # fmt: skip
    return {"rows": rows, "error": None, "params": _total(rows)}


def _total(rows: list[dict[str, Any]]) -> int:
    return sum(r["params"] for r in rows)


def save_architecture(project: Project, layers: list[dict[str, Any]], input_shape: list[int]) -> str:
    """Write the stack as an architecture JSON in the project's state; its path, as ``--model`` takes it."""
    table = layer_table(layers, input_shape)
    if table["error"] is not None:
        raise ProjectError(f"layer {table['error']['index'] + 1}: {table['error']['message']}")
    if not layers:
        raise ProjectError("add layers first (the last one a Dense with one unit per class)")
    config = Sequential.from_config(_config(layers, input_shape)).get_config()
    digest = hashlib.sha1(json.dumps(config, sort_keys=True).encode()).hexdigest()[:10]
    path = project.state / "models" / f"sequential-{digest}.json"
    atomic_write_json(path, config)
    return str(path)  # absolute: the command the studio shows runs from any folder
