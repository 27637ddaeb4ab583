"""The model registry: ``create_model(name, num_classes, in_channels, input_size)``.

Each model family lives in its own module and registers its builders with
:func:`register_model`; registering a name twice is an error, so two families can never
silently shadow each other. A builder returns a :class:`~cnnkit.models.Model` for
``(B, in_channels, input_size, input_size)`` images in [0, 1]; ``create_model`` records
how it was called, so a model file can rebuild it.
"""

from __future__ import annotations

import fnmatch
import inspect
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch

from cnnkit._suggest import did_you_mean
from cnnkit.errors import ConfigError
from cnnkit.models.model import Model

__all__ = ["ModelEntry", "count_parameters", "create_model", "get_model_entry", "list_models", "register_model"]

Builder = Callable[..., Model]


@dataclass(frozen=True)
class ModelEntry:
    """A registered architecture and what ``cnnkit models`` says about it.

    ``input_size``, ``in_channels`` and ``num_classes`` are the defaults (what the architecture
    was designed for); ``min_input_size`` the smallest square image it can take; ``imagenet``
    the torchvision model whose published ImageNet weights fit it (``--weights imagenet``).
    """

    name: str
    builder: Builder
    description: str
    paper: str
    input_size: int
    in_channels: int
    num_classes: int = 10
    min_input_size: int = 8
    imagenet: str | None = None


_REGISTRY: dict[str, ModelEntry] = {}


def register_model(
    name: str,
    *,
    description: str,
    paper: str = "",
    input_size: int = 32,
    in_channels: int = 3,
    num_classes: int = 10,
    min_input_size: int = 8,
    imagenet: str | None = None,
) -> Callable[[Builder], Builder]:
    """Decorator: register ``builder(num_classes, in_channels, input_size, **kwargs) -> Model``."""

    def register(builder: Builder) -> Builder:
        if name in _REGISTRY:
            raise ValueError(f"model {name!r} is already registered (by {_REGISTRY[name].builder.__module__})")
        _REGISTRY[name] = ModelEntry(
            name, builder, description, paper, input_size, in_channels, num_classes, min_input_size, imagenet
        )
        return builder

    return register


def get_model_entry(name: str) -> ModelEntry:
    if name not in _REGISTRY:
        raise ConfigError(f"unknown model {name!r}{did_you_mean(name, _REGISTRY)}; "
                          f"available: {', '.join(sorted(_REGISTRY))}")  # fmt: skip
    return _REGISTRY[name]


def list_models(pattern: str = "*") -> list[str]:
    """Registered model names matching a shell-style ``pattern``, sorted."""
    return sorted(name for name in _REGISTRY if fnmatch.fnmatch(name, pattern))


def create_model(
    name: str, num_classes: int = 10, in_channels: int | None = None, input_size: int | None = None, **kwargs: Any
) -> Model:
    """Build a registered model for ``num_classes`` classes and square ``input_size`` images."""
    entry = get_model_entry(name)
    if not isinstance(num_classes, int) or isinstance(num_classes, bool) or num_classes < 2:
        raise ConfigError(f"num_classes must be an int >= 2, got {num_classes!r}")
    in_channels = in_channels or entry.in_channels
    input_size = input_size or entry.input_size
    if in_channels not in (1, 3):
        raise ConfigError(f"in_channels must be 1 (grey) or 3 (RGB), got {in_channels}")
    if not isinstance(input_size, int) or input_size < entry.min_input_size:
        raise ConfigError(
            f"{name} needs images of at least {entry.min_input_size}x{entry.min_input_size} pixels, "
            f"got input_size={input_size!r}; resize them (cnnkit train --image-size {entry.min_input_size})"
        )
    try:  # check the family's own options before building, so a typo is a clear error
        inspect.signature(entry.builder).bind(num_classes, in_channels, input_size, **kwargs)
    except TypeError as e:
        raise ConfigError(f"bad argument for model {name!r}: {e}") from None
    model = entry.builder(num_classes=num_classes, in_channels=in_channels, input_size=input_size, **kwargs)
    if model.architecture is None and type(model) is Model:
        model.architecture = {
            "class_name": "registry",
            "config": {"name": name, "num_classes": num_classes, "in_channels": in_channels,
                       "input_size": input_size, **kwargs},
        }  # fmt: skip
    model.training_summary.setdefault("model", name)
    return model


def count_parameters(name: str, num_classes: int | None = None, **kwargs: Any) -> int:
    """Learnable parameters of a registered model, counted on the meta device (no memory, no init).

    This is the number papers and torchvision report (BatchNorm's running statistics excluded).
    """
    entry = get_model_entry(name)
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes or entry.num_classes, **kwargs)
    return sum(p.numel() for p in model.parameters())
