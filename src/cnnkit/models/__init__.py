"""Models: Keras-style ``Sequential``, ``Model`` over any torch module, the registry, and loading.

``from cnnkit import models``; ``models.Sequential()``, ``models.load_model(path)``,
``models.create_model("seed", num_classes=10)``, ``models.list_models()``.
"""

from __future__ import annotations

import os
from typing import Any

from cnnkit.errors import ConfigError
from cnnkit.models import seed as _seed  # noqa: F401  (registers the family)
from cnnkit.models._registry import ModelEntry, create_model, get_model_entry, list_models, register_model
from cnnkit.models.model import Model
from cnnkit.models.sequential import Sequential

__all__ = [
    "Model",
    "ModelEntry",
    "Sequential",
    "create_model",
    "get_model_entry",
    "list_models",
    "load_model",
    "model_from_config",
    "register_model",
]


def model_from_config(architecture: dict[str, Any]) -> Model:
    """Rebuild a model (untrained) from the architecture config a model file stores."""
    kind = architecture.get("class_name") if isinstance(architecture, dict) else None
    if kind == "Sequential":
        return Sequential.from_config(architecture)
    if kind == "registry":
        config = dict(architecture.get("config", {}))
        return create_model(config.pop("name", ""), **config)
    raise ConfigError(f"unknown architecture kind {kind!r}: expected a Sequential or a registry model config")


def load_model(filepath: str | os.PathLike) -> Model:
    """Load a model saved with ``model.save()`` (a ``.safetensors`` model file); never unpickles."""
    from cnnkit.modelfile import load_model as _load

    return _load(filepath)
