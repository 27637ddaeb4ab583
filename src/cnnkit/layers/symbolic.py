"""Symbolic tensors for Keras' functional API: ``x = layers.Conv2D(8, 3)(inputs)`` records a graph.

Calling a layer on a :class:`KerasTensor` builds the layer for that tensor's shape (so a shape
mistake is reported at the line that makes it, as in Keras) and returns a new ``KerasTensor``
that remembers which layer made it from which inputs. :class:`cnnkit.models.Model` turns the
graph between ``inputs`` and ``outputs`` into a torch module.
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from cnnkit.errors import ConfigError

Layer = Any  # a cnnkit.layers.base.Layer (not imported: the base imports this module)

__all__ = ["KerasTensor", "is_symbolic", "snake_case", "symbolic_call", "unique_name"]


class KerasTensor:
    """A symbolic tensor: a shape with the batch axis (``(None, 28, 28, 1)``) and where it came from.

    Attributes:
        shape: Keras' shape, batch axis first (``None``).
        layer: the layer that produced it (an ``InputLayer`` for a model input).
        inputs: the tensors that layer was called on (empty for an input).
        node_index: which call of ``layer`` produced it (a layer can be called several times).
        listed: whether the layer was called on a list (a merge layer) rather than one tensor.
    """

    def __init__(self, shape: Sequence[int | None], layer: Layer, inputs: Sequence[KerasTensor] = (),
                 node_index: int = 0, listed: bool = False) -> None:  # fmt: skip
        self.shape = tuple(shape)
        self.layer = layer
        self.inputs = list(inputs)
        self.node_index = node_index
        self.listed = listed
        self.dtype = "float32"

    @property
    def ndim(self) -> int:
        return len(self.shape)

    @property
    def name(self) -> str | None:
        return self.layer.name

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape}, dtype={self.dtype}, name={self.layer.name}>"

    def __bool__(self) -> bool:
        raise ConfigError("a KerasTensor is symbolic: it has no value to test; it only connects layers")


def is_symbolic(value: Any) -> bool:
    """Whether ``value`` is a KerasTensor or a non-empty list of them (a merge layer's input)."""
    if isinstance(value, KerasTensor):
        return True
    return isinstance(value, (list, tuple)) and bool(value) and all(isinstance(v, KerasTensor) for v in value)


def symbolic_call(layer: Layer, inputs: KerasTensor | Sequence[KerasTensor]) -> KerasTensor:
    """``layer(inputs)`` on symbolic tensors: build the layer (first call) and record the node."""
    if layer.name is None:
        layer.name = unique_name(layer)
    many = not isinstance(inputs, KerasTensor)
    tensors = list(inputs) if many else [inputs]
    shapes = [t.shape[1:] for t in tensors]
    shape = shapes if many else shapes[0]
    if not layer.built:
        output_shape = layer.build(shape)
    else:  # a shared layer: the same weights on another input, which must fit them
        output_shape = layer.compute_output_shape(shape)
        expected = layer.input_shape
        got = [(None, *s) for s in shapes] if many else (None, *shape)
        if expected is not None and _normalized(expected) != _normalized(got):
            raise ConfigError(
                f"layer {layer.name!r} was built for inputs {expected} and is called again on {got}; "
                f"a layer called twice shares its weights, so the shapes must match"
            )
    node_index = layer.__dict__.get("_node_count", 0)
    layer.__dict__["_node_count"] = node_index + 1
    return KerasTensor((None, *output_shape), layer, tensors, node_index, listed=many)


_TAKEN: dict[str, int] = {}  # Keras names layers uniquely per session: conv2d, conv2d_1, ...


def unique_name(layer: Layer) -> str:
    """Keras' automatic name for a layer of the functional API (``conv2d``, then ``conv2d_1``, ...)."""
    base = snake_case(type(layer).__name__)
    count = _TAKEN.get(base, 0)
    _TAKEN[base] = count + 1
    return base if count == 0 else f"{base}_{count}"


def snake_case(name: str) -> str:
    """``MaxPooling2D`` -> ``max_pooling2d``, Keras' default layer names."""
    return re.sub(r"(?<=[a-z])([A-Z])", r"_\1", name).lower()


def _normalized(shape: Any) -> Any:
    if isinstance(shape, (list, tuple)) and shape and isinstance(shape[0], (list, tuple)):
        return [tuple(s) for s in shape]
    return tuple(shape)
