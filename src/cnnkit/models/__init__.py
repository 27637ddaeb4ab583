"""Models: Keras-style ``Sequential``, ``Model`` over any torch module or Keras' functional graph, the
registry, and loading (cnnkit's model files, and Keras' ``.keras`` / ``.h5``).

``from cnnkit import models``; ``models.Sequential()``, ``models.Model(inputs, outputs)``, ``models.load_model(path)``,
``models.create_model("seed", num_classes=10)``, ``models.list_models()``,
``models.load_pretrained(model, "imagenet")``.
"""

from __future__ import annotations

from cnnkit.layers import Input
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
    register_module,
)
from cnnkit.models.functional import Functional
from cnnkit.models.loading import (
    clone_model,
    load_architecture,
    load_model,
    load_model_file,
    model_from_config,
    model_from_json,
)
from cnnkit.models.model import Model
from cnnkit.models.sequential import Sequential
from cnnkit.models.weights import load_pretrained

__all__ = [
    "Functional",
    "Input",
    "Model",
    "ModelEntry",
    "Sequential",
    "clone_model",
    "count_parameters",
    "create_model",
    "get_model_entry",
    "list_models",
    "load_architecture",
    "load_model",
    "load_model_file",
    "load_pretrained",
    "model_from_config",
    "model_from_json",
    "register_model",
    "register_module",
]


def __getattr__(name: str) -> object:
    from cnnkit._keras_names import missing  # a Keras name cnnkit lacks: say what to use instead

    raise missing(__name__, name)
