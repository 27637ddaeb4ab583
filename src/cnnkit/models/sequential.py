"""``Sequential``: a stack of Keras-style layers, Keras' way.

.. code-block:: python

    model = models.Sequential()
    model.add(layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)))
    model.add(layers.MaxPooling2D((2, 2)))
    model.add(layers.Flatten())
    model.add(layers.Dense(10, activation="softmax"))

Each layer is built as it is added (once the input shape is known), so a shape mistake
is reported at the line that makes it. The final softmax is kept apart from ``forward``:
training computes the loss on the logits, ``predict`` returns probabilities.
"""

from __future__ import annotations

import inspect
from collections.abc import Iterable, Sequence
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.errors import CnnkitError, ConfigError, ShapeError
from cnnkit.layers import LAYERS, InputLayer, Layer, layer_from_config
from cnnkit.layers.symbolic import KerasTensor, snake_case
from cnnkit.models.model import Model

__all__ = ["LayerModel", "Sequential"]


class LayerModel(Model):
    """What a model made of Keras-style layers (``self.layers``) has, whether a stack or a graph."""

    layers: nn.ModuleList

    def _output_layer(self) -> Layer:
        """The layer whose output the model returns."""
        return self.layers[-1]

    @property
    def built(self) -> bool:
        return self._image_shape is not None and all(layer.built for layer in self.layers)

    @property
    def output_activation(self) -> str:
        """``softmax`` or ``sigmoid`` when the last layer ends in one (``forward`` then returns the logits
        before it); otherwise ``linear``: the model returns what it computes."""
        if not self.layers:
            return "linear"
        last = self._output_layer()
        if isinstance(last, LayerModel):  # a model nested as the last layer: what it ends in
            return last.output_activation
        return last.activation_name if last.activation_name in ("softmax", "sigmoid") else "linear"

    def _num_outputs(self) -> int:
        return self._output_layer().output_shape[-1]

    @property
    def output_shape(self) -> tuple[int | None, ...]:
        """Keras' output shape, batch axis first."""
        return self._output_layer().output_shape

    def _symbolic_call(self, inputs: Any, **kwargs: Any) -> KerasTensor:
        """``model(x)`` on a Keras tensor: the model as one layer of a functional model (Keras' nesting)."""
        if not isinstance(inputs, KerasTensor) or kwargs:
            raise ConfigError(f"model {self.name!r} takes one Keras tensor as a layer")
        if not self.built:
            self.build(inputs.shape[1:])
        elif tuple(inputs.shape[1:]) != tuple(self.image_shape):
            raise ShapeError(f"model {self.name!r} takes images {self.input_shape}, called on {inputs.shape}")
        node_index = self.__dict__.get("_node_count", 0)
        self.__dict__["_node_count"] = node_index + 1
        return KerasTensor(self.output_shape, self, [inputs], node_index)

    def as_layer(self, x: torch.Tensor) -> torch.Tensor:
        """What the model computes as a layer inside another model: its output, final softmax or sigmoid included."""
        out = self(x)
        if self.output_activation == "softmax":
            return torch.softmax(out, dim=1)
        return torch.sigmoid(out) if self.output_activation == "sigmoid" else out

    def count_params(self) -> int:
        return sum(layer.count_params() for layer in self.layers)

    def get_weights(self) -> list[np.ndarray]:
        """All weights in Keras' layout and order."""
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights: Sequence[np.ndarray]) -> None:
        """Set all weights from arrays in Keras' layout and order (e.g. a Keras model's get_weights())."""
        weights = list(weights)
        expected = sum(len(layer.get_weights()) for layer in self.layers)
        if len(weights) != expected:
            raise ShapeError(f"set_weights expected {expected} arrays, got {len(weights)}")
        for layer in self.layers:
            count = len(layer.get_weights())
            layer.set_weights(weights[:count])
            weights = weights[count:]

    def get_layer(self, name: str | None = None, index: int | None = None) -> Layer:
        """A layer by name or index, as Keras' ``get_layer``."""
        if index is not None:
            return self.layers[index]
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise ConfigError(f"no layer {name!r}; the layers are: {', '.join(la.name for la in self.layers)}")


class Sequential(LayerModel):
    """A linear stack of layers with Keras' ``add`` / ``summary`` / ``compile`` / ``fit`` API."""

    def __init__(self, layers: Iterable[Layer] | None = None, name: str | None = None) -> None:
        super().__init__(name=name or "sequential")
        self.layers = nn.ModuleList()
        for layer in layers or ():
            self.add(layer)

    # -- building --------------------------------------------------------------------
    def _current_shape(self) -> tuple[int | None, ...] | None:
        """The Keras shape the next layer will receive, if known."""
        if self.layers:
            last = self.layers[-1]
            return last.output_shape[1:] if last.built else None
        return self._image_shape

    def add(self, layer: Layer | KerasTensor) -> None:
        """Append a layer, building it now if the input shape is known (``keras.Input(...)`` first sets it)."""
        if isinstance(layer, KerasTensor) and isinstance(layer.layer, InputLayer):
            layer = layer.layer
        if isinstance(layer, InputLayer):
            if self.layers:
                raise ConfigError("an Input/InputLayer must come first in a Sequential model")
            self._image_shape = tuple(layer.shape)
            return
        if not isinstance(layer, Layer):
            raise ConfigError(
                f"Sequential.add() takes cnnkit layers, got {type(layer).__name__}; "
                f"wrap a torch module with cnnkit.models.Model(module, input_shape=...) instead"
            )
        self._name_layer(layer)
        if not self.layers and layer.input_shape_hint is not None:
            self._image_shape = layer.input_shape_hint
        shape = self._current_shape()
        if shape is not None:
            layer.build(shape)  # a ShapeError here leaves the model as it was
        self.layers.append(layer)

    def _name_layer(self, layer: Layer) -> None:
        taken = {existing.name for existing in self.layers}
        if layer.name is None:
            base = snake_case(type(layer).__name__)
            layer.name = base
            suffix = 1
            while layer.name in taken:
                layer.name, suffix = f"{base}_{suffix}", suffix + 1
        elif layer.name in taken:
            raise ConfigError(f"a layer named {layer.name!r} is already in model {self.name!r}")

    def pop(self) -> Layer:
        """Remove and return the last layer."""
        if not self.layers:
            raise ConfigError("pop() on an empty Sequential model")
        layer = self.layers[-1]
        del self.layers[-1]
        return layer

    def build(self, input_shape: Sequence[int | None]) -> None:
        """Build every layer for images of ``input_shape`` ``(H, W, C)``."""
        self._image_shape = tuple(input_shape)
        shape = self._image_shape
        for layer in self.layers:
            shape = layer.build(shape) if not layer.built else layer.output_shape[1:]

    # -- computing ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> logits: every layer as written, in order (the last one's softmax or
        sigmoid is left to ``predict``)."""
        if not self.layers:
            raise ConfigError("the model has no layers; add some with model.add(...)")
        x = self.normalize(x)
        for layer in self.layers[:-1]:
            x = layer(x)
        last = self.layers[-1]
        return last.logits(x) if self.output_activation != "linear" else last(x)

    def get_config(self) -> dict[str, Any]:
        """Keras-style config: the input shape and each layer's config."""
        specs = [{"class_name": type(layer).__name__, "config": layer.get_config()} for layer in self.layers]
        if self._image_shape is not None:
            specs.insert(0, {"class_name": "InputLayer", "config": {"shape": list(self._image_shape)}})
        return {"class_name": "Sequential", "config": {"name": self.name, "layers": specs}}

    @classmethod
    def from_config(cls, config: dict[str, Any]) -> Sequential:
        """Rebuild from ``get_config()`` output (also the JSON a model file stores, or one written by hand).

        A mistake names the layer (its index in ``layers``, its name and class) and the field.
        """
        if not isinstance(config, dict) or config.get("class_name", "Sequential") != "Sequential":
            found = config.get("class_name") if isinstance(config, dict) else type(config).__name__
            raise ConfigError(f"not a Sequential config: class_name={found!r}")
        inner = config.get("config", config)
        if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
            raise ConfigError('a Sequential config needs "layers": a list of {"class_name": ..., "config": {...}}')
        model = cls(name=inner.get("name"))
        for index, spec in enumerate(inner["layers"]):
            place = spec_place(index, spec)
            try:
                model.add(layer_from_spec(spec))
            except ShapeError as e:
                raise ShapeError(f"{place}: {e}") from None
            except CnnkitError as e:
                raise ConfigError(f"{place}: {e}") from None
            except (TypeError, ValueError) as e:  # a value of the wrong type deep inside a layer
                raise ConfigError(f"{place}: bad value ({e})") from None
        return model

    def summary_rows(self) -> list[tuple[str, str, str, int | str]]:
        return [
            (layer.name, type(layer).__name__, str(layer.output_shape) if layer.built else "?",
             layer.count_params() if layer.built else "0 (unbuilt)")
            for layer in self.layers
        ]  # fmt: skip


def spec_place(index: int, spec: Any) -> str:
    """``layers[3] 'dense_1' (Dense)``: where in the config a layer is."""
    if not isinstance(spec, dict):
        return f"layers[{index}]"
    name = spec.get("config", {}).get("name") if isinstance(spec.get("config"), dict) else None
    kind = spec.get("class_name")
    return f"layers[{index}]" + (f" {name!r}" if name else "") + (f" ({kind})" if kind else "")


def _fields(cls: type) -> tuple[set[str], set[str]]:
    """The config fields a layer class takes (its and its bases' keyword arguments), and the required ones."""
    accepted: set[str] = set()
    required: set[str] = set()
    for klass in cls.__mro__:
        if klass in (Layer.__mro__[1:]):  # nn.Module and object take nothing from a config
            break
        params = list(inspect.signature(klass.__init__).parameters.values())[1:]
        named = [p for p in params if p.kind not in (p.VAR_POSITIONAL, p.VAR_KEYWORD)]
        accepted |= {p.name for p in named}
        if klass is cls:
            required = {p.name for p in named if p.default is p.empty}
    return accepted, required


def layer_from_spec(spec: Any) -> Layer:
    """A layer from ``{"class_name": ..., "config": {...}}``, refusing unknown or missing fields by name."""
    if not isinstance(spec, dict) or not isinstance(spec.get("config", {}), dict):
        raise ConfigError('each layer is {"class_name": "Conv2D", "config": {...}}')
    kind, config = spec.get("class_name"), spec.get("config", {})
    if kind not in LAYERS:
        raise ConfigError(f"unknown layer class {kind!r}; cnnkit knows: {', '.join(sorted(LAYERS))}")
    accepted, required = _fields(LAYERS[kind])
    unknown = sorted(set(config) - accepted)
    if unknown:
        raise ConfigError(f"unknown field {unknown[0]!r}; {kind} takes: {', '.join(sorted(accepted))}")
    missing = sorted(required - set(config))
    if missing:
        raise ConfigError(f"missing field {missing[0]!r}")
    try:
        return layer_from_config(spec)
    except CnnkitError as e:
        culprit = _culprit(LAYERS[kind], config, required)
        if culprit is None:
            raise
        raise ConfigError(f"field {culprit!r}: {e}") from None


def _culprit(cls: type, config: dict[str, Any], required: set[str]) -> str | None:
    """The one optional field whose removal makes the layer valid (to name it in the error)."""
    for key in config:
        if key in required:
            continue
        try:
            cls(**{k: v for k, v in config.items() if k != key})
        except Exception:  # still broken without this field: not the culprit
            continue
        return key
    return None
