"""The explain methods by name: ``register_method(name, fn, produces=..., description=...)``.

Every surface reads this one table: ``cnnkit explain --method``, the server's
``POST /v1/explain?method=NAME`` and the method list in ``GET /v1/model``, the report's
heat-map section, and the page's method selector. A new method is one function and one
:func:`register_method` call; it then reaches all of them.

What a method produces decides how it is called (``x`` is one image as a ``(1, C, H, W)``
float32 tensor in [0, 1] at the model's input shape, on its device; :func:`heatmap` prepares it):

- ``"heatmap"``: ``fn(model, x, target) -> (H, W)`` float32 in [0, 1] over the input, for
  ``target`` (a class index); a method registered with ``layer=True`` also takes
  ``layer=NAME`` (a convolution; :func:`heatmap` passes the last one by default).
- ``"layer-maps"``: ``fn(model, x, layers) -> {layer name: (C, h, w)}`` (``layers=None``:
  every convolution).
- ``"filters"``: ``fn(model, layer) -> (filters, in_channels, kh, kw)`` (``layer=None``:
  the first convolution).

Registering a name twice is an error, as for models, so two methods never shadow each other.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, Literal

import numpy as np
import torch
from torch import nn

from cnnkit.errors import ConfigError
from cnnkit.explain._layers import class_scores, eval_mode, prepare_image, resolve_layer, resolve_target

__all__ = [
    "DEFAULT_METHOD",
    "PRODUCES",
    "ExplainMethod",
    "HeatMap",
    "get_method",
    "heatmap",
    "list_methods",
    "register_method",
]

Produces = Literal["heatmap", "layer-maps", "filters"]
PRODUCES: tuple[str, ...] = ("heatmap", "layer-maps", "filters")
# What the CLI, the server, the report and the page draw unless told otherwise: the method that measures
# best. By deletion and insertion (benchmarks/explain_quality.py, benchmarks/RESULTS.md) on default-recipe
# models of digits and faces, Layer-CAM at the default layer (the last convolution at least 7x7) beats
# every trivial order (random, centre-out, brightest-first) on both; Grad-CAM at no layer does.
DEFAULT_METHOD = "layercam"


@dataclass(frozen=True)
class ExplainMethod:
    """A registered method: its function, what it produces, and how the surfaces name it.

    ``title`` is the short name a caption or a selector shows (``Grad-CAM``); ``description``
    one sentence for help texts; ``layer`` whether a heat-map method looks at a layer.
    """

    name: str
    fn: Callable[..., Any]
    produces: str
    description: str
    title: str
    layer: bool = False

    def to_dict(self) -> dict[str, Any]:
        """What ``GET /v1/model`` lists for it."""
        return {"name": self.name, "title": self.title, "description": self.description, "layer": self.layer}


@dataclass(frozen=True)
class HeatMap:
    """A heat map ``(H, W)`` in [0, 1], the class it explains, and the layer it looked at (if any)."""

    heat: np.ndarray
    target: int
    layer: str | None


_REGISTRY: dict[str, ExplainMethod] = {}


def register_method(
    name: str,
    fn: Callable[..., Any],
    *,
    produces: Produces,
    description: str,
    title: str | None = None,
    layer: bool = False,
) -> ExplainMethod:
    """Register ``fn`` as the explain method ``name`` (called as the module docstring says)."""
    if name in _REGISTRY:
        raise ValueError(f"explain method {name!r} is already registered (by {_REGISTRY[name].fn.__module__})")
    if produces not in PRODUCES:
        raise ValueError(f"explain method {name!r}: produces must be one of {', '.join(PRODUCES)}, got {produces!r}")
    if layer and produces != "heatmap":
        raise ValueError(f"explain method {name!r}: only a heat-map method takes layer=True")
    entry = ExplainMethod(name, fn, produces, description, title or name, layer)
    _REGISTRY[name] = entry
    return entry


def list_methods(produces: Produces | None = None) -> list[ExplainMethod]:
    """The registered methods in registration order, optionally of one kind."""
    return [m for m in _REGISTRY.values() if produces is None or m.produces == produces]


def get_method(name: str, produces: Produces | None = None) -> ExplainMethod:
    """The method ``name``; a :class:`~cnnkit.errors.ConfigError` naming the known ones if there is none."""
    known = list_methods(produces)
    entry = _REGISTRY.get(name)
    if entry is None or entry not in known:
        kind = "" if produces is None else f"{produces} "
        raise ConfigError(f"unknown {kind}method {name!r}; choose from {', '.join(m.name for m in known)}")
    return entry


def heatmap(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    target: int | str | None = None,
    *,
    method: str = DEFAULT_METHOD,
    layer: str | None = None,
) -> HeatMap:
    """Any registered heat-map method on one image, called the same way for all of them.

    ``target`` is a class index or name; ``None`` explains the predicted class (one forward
    pass decides it). ``layer`` is for methods that look at a layer (the CAM family); the
    others refuse one.
    """
    entry = get_method(method, "heatmap")
    if layer is not None and not entry.layer:
        raise ConfigError(f"{method} explains pixels, not a layer: drop --layer")
    x = prepare_image(model, image)  # (1, C, H, W)
    if not isinstance(target, int):  # a name or the predicted class: the method is handed an index
        with torch.no_grad(), eval_mode(model):
            target = resolve_target(model, target, class_scores(model, x))
    kwargs = {}
    if entry.layer:
        layer, _ = resolve_layer(model, layer)  # the last convolution by default, checked once here
        kwargs["layer"] = layer
    heat = np.asarray(entry.fn(model, x, target, **kwargs), dtype=np.float32)
    if heat.shape != tuple(x.shape[-2:]):
        raise ConfigError(f"explain method {method!r} gave a {heat.shape} map for a {tuple(x.shape[-2:])} image")
    return HeatMap(heat, target, kwargs.get("layer"))
