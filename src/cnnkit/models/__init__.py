"""Models: Keras-style ``Sequential``, ``Model`` over any torch module, the registry, and loading.

``from cnnkit import models``; ``models.Sequential()``, ``models.load_model(path)``,
``models.create_model("seed", num_classes=10)``, ``models.list_models()``,
``models.load_pretrained(model, "imagenet")``.
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, ConfigError
from cnnkit.models import alexnet as _alexnet  # noqa: F401  (each family module registers its models)
from cnnkit.models import lenet as _lenet  # noqa: F401
from cnnkit.models import resnet as _resnet  # noqa: F401
from cnnkit.models import seed as _seed  # noqa: F401
from cnnkit.models import torchvision_models as _torchvision_models  # noqa: F401
from cnnkit.models import vgg as _vgg  # noqa: F401
from cnnkit.models._registry import (
    ModelEntry,
    count_parameters,
    create_model,
    get_model_entry,
    list_models,
    register_model,
)
from cnnkit.models.model import Model
from cnnkit.models.sequential import Sequential
from cnnkit.models.weights import load_pretrained

__all__ = [
    "Model",
    "ModelEntry",
    "Sequential",
    "count_parameters",
    "create_model",
    "get_model_entry",
    "list_models",
    "load_architecture",
    "load_model",
    "load_pretrained",
    "model_from_config",
    "register_model",
]


def model_from_config(architecture: dict[str, Any]) -> Model:
    """Rebuild a model (untrained) from the architecture config a model file stores."""
    if not isinstance(architecture, dict):
        raise ConfigError(f"an architecture is a JSON object, got {type(architecture).__name__}")
    kind = architecture.get("class_name")
    if kind == "Sequential":
        return Sequential.from_config(architecture)
    if kind == "registry":
        config = dict(architecture.get("config", {}))
        return create_model(config.pop("name", ""), **config)
    raise ConfigError(f"unknown architecture kind {kind!r}: expected a Sequential or a registry model config")


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


def load_model(filepath: str | os.PathLike) -> Model:
    """Load a model saved with ``model.save()`` (a ``.safetensors`` model file); never unpickles.

    The model comes back in eval mode, its convolution weights in channels-last memory (the
    layout PyTorch runs convolutions fastest in on CPUs and GPUs; the values are as saved).
    """
    from cnnkit.modelfile import load_model as _load

    return _load(filepath)
