"""cnnkit: image recognition with convolutional neural networks, from the article's CNN to serving.

Keras-style API: ``from cnnkit import layers, models, datasets``. Submodules load on
first use, so ``cnnkit --version`` and other light commands start quickly.
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

# Public name -> the module that provides it.
_LAZY = {
    "layers": "cnnkit.layers",
    "models": "cnnkit.models",
    "data": "cnnkit.data",
    "datasets": "cnnkit.datasets",  # Keras' datasets.mnist.load_data(), and datasets.load_data("digits")
    "utils": "cnnkit.utils",
    "callbacks": "cnnkit.train.keras_callbacks",
    "losses": "cnnkit.train.losses",
    "optimizers": "cnnkit.train.optimizers",
    "metrics": "cnnkit.evaluate.keras_metrics",
    "activations": "cnnkit.activations",
    "mixed_precision": "cnnkit.mixed_precision",
    "explain": "cnnkit.explain",
}

# Keras' top-level names (``import cnnkit as keras; keras.Sequential([...])``) -> their module.
_KERAS_NAMES = {"Sequential": "cnnkit.models", "Model": "cnnkit.models", "Input": "cnnkit.layers"}

__all__ = ["CnnkitError", "__version__", "seed_everything", *_LAZY, *_KERAS_NAMES]


def __getattr__(name: str) -> Any:
    if name in _LAZY:
        module = importlib.import_module(_LAZY[name])
        globals()[name] = module
        return module
    if name in _KERAS_NAMES:
        return getattr(importlib.import_module(_KERAS_NAMES[name]), name)
    if name == "CnnkitError":
        from cnnkit.errors import CnnkitError

        return CnnkitError
    if name == "seed_everything":
        from cnnkit.runtime import seed_everything

        return seed_everything
    from cnnkit._keras_names import missing  # a Keras name cnnkit lacks: say what to use instead

    raise missing("cnnkit", name)


def __dir__() -> list[str]:
    return sorted(__all__)
