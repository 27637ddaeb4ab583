"""The model registry: ``create_model(name, num_classes, in_channels, input_size)``.

Each model family lives in its own module and registers its builders with
:func:`register_model`; registering a name twice is an error, so two families can never
silently shadow each other. A builder returns a :class:`~cnnkit.models.Model` for
``(B, in_channels, input_size, input_size)`` images in [0, 1]; ``create_model`` records
how it was called, so a model file can rebuild it.

:func:`register_module` is the same idea for a user's own ``torch.nn.Module`` class: a model
file records the class by name, with its Python module and its constructor's arguments as
JSON (never code), and :func:`module_from_config` rebuilds it, importing that module only
with the user's explicit permission.
"""

from __future__ import annotations

import fnmatch
import functools
import importlib
import inspect
import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn

from cnnkit._suggest import did_you_mean
from cnnkit.errors import ConfigError
from cnnkit.models.model import MODULE_ATTR, Model
from cnnkit.runtime import prefer_channels_last

__all__ = [
    "TRUST_CODE_ENV",
    "ModelEntry",
    "count_parameters",
    "create_model",
    "get_model_entry",
    "list_models",
    "module_from_config",
    "register_model",
    "register_module",
]

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
    """Build a registered model for ``num_classes`` classes and square ``input_size`` images.

    A convolutional model comes channels-last, as ``load_model``, ``load_weights`` and ``fit`` leave it:
    the layout it predicts and trains fastest in (a layout, not a value).
    """
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
    prefer_channels_last(model)
    return model


def count_parameters(name: str, num_classes: int | None = None, **kwargs: Any) -> int:
    """Learnable parameters of a registered model, counted on the meta device (no memory, no init).

    This is the number papers and torchvision report (BatchNorm's running statistics excluded).
    """
    entry = get_model_entry(name)
    with torch.device("meta"):
        model = create_model(name, num_classes=num_classes or entry.num_classes, **kwargs)
    return sum(p.numel() for p in model.parameters())


# -- a user's own torch modules ------------------------------------------------------------------------
TRUST_CODE_ENV = "CNNKIT_TRUST_CODE"  # =1: let load_model import the module a model file names
_MODULES: dict[str, type[nn.Module]] = {}

ModuleClass = type[nn.Module]


def register_module(name: str | None = None) -> Callable[[ModuleClass], ModuleClass]:
    """Class decorator: let ``Model(MyNet(...)).save()`` record ``MyNet`` so ``load_model`` can rebuild it.

    The file stores ``name`` (default ``"package.module.MyNet"``), the class's Python module and
    the arguments its constructor was called with, as JSON: constructor arguments must be JSON
    values (numbers, strings, booleans, None, lists, dicts). No code is stored. Loading the file
    in a process where the class is registered (its module imported) just rebuilds it; otherwise
    cnnkit imports the module only with permission (``load_model(path, trust_code=True)`` or
    ``CNNKIT_TRUST_CODE=1``), since importing a module runs its code.
    """

    def register(cls: ModuleClass) -> ModuleClass:
        if not (isinstance(cls, type) and issubclass(cls, nn.Module)):
            raise TypeError(f"register_module decorates torch.nn.Module classes, not {cls!r}")
        key = name or f"{cls.__module__}.{cls.__qualname__}"
        old = _MODULES.get(key)
        if old is not None and (old.__module__, old.__qualname__) != (cls.__module__, cls.__qualname__):
            raise ValueError(f"module {key!r} is already registered (by {_MODULES[key].__module__})")
        init, signature = cls.__init__, inspect.signature(cls.__init__)

        @functools.wraps(init)
        def __init__(self: nn.Module, *args: Any, **kwargs: Any) -> None:
            init(self, *args, **kwargs)
            if type(self) is cls:  # a subclass records its own call, if it is registered itself
                bound = signature.bind(self, *args, **kwargs)
                bound.apply_defaults()  # the file keeps every argument, so a changed default cannot change it
                arguments = dict(list(bound.arguments.items())[1:])  # without self
                for param in signature.parameters.values():  # **kwargs are stored flat
                    if param.kind is inspect.Parameter.VAR_KEYWORD:
                        arguments.update(arguments.pop(param.name, {}))
                    elif param.kind is inspect.Parameter.VAR_POSITIONAL and arguments.pop(param.name, ()):
                        raise ConfigError(f"{key}: *{param.name} cannot be recorded; pass keyword arguments")
                self.__dict__[MODULE_ATTR] = {"name": key, "module": cls.__module__, "kwargs": arguments}

        cls.__init__ = __init__  # type: ignore[method-assign]
        _MODULES[key] = cls  # a re-import (e.g. a reloaded notebook cell) replaces the old class
        return cls

    return register


def module_from_config(config: dict[str, Any], *, trust_code: bool | None = None) -> nn.Module:
    """Rebuild a registered module from what a model file recorded (``{"name", "module", "kwargs"}``).

    ``trust_code`` None means the ``CNNKIT_TRUST_CODE`` environment variable decides.
    """
    name, module, kwargs = config.get("name", ""), config.get("module", ""), config.get("kwargs", {})
    if name not in _MODULES:
        if trust_code is None:
            trust_code = os.environ.get(TRUST_CODE_ENV, "") not in ("", "0")
        if not trust_code:
            raise ConfigError(
                f"the architecture {name!r} is Python code in module {module!r}, which cnnkit would have to "
                f"import (and so run) to rebuild it; if you trust it, allow it with load_model(path, "
                f"trust_code=True) or {TRUST_CODE_ENV}=1"
            )
        try:
            importlib.import_module(module)
        except ImportError as e:
            raise ConfigError(f"the architecture {name!r} needs module {module!r}, which cannot be imported: {e}; "
                              f"install it or put it on the Python path") from None  # fmt: skip
        if name not in _MODULES:
            raise ConfigError(f"module {module!r} was imported but registers no module named {name!r}")
    try:
        return _MODULES[name](**kwargs)
    except TypeError as e:
        raise ConfigError(f"cannot rebuild {name!r} with the recorded arguments {json.dumps(kwargs)}: {e}") from None
