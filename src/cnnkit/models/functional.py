"""Keras' functional API: ``keras.Model(inputs, outputs)`` over layer calls on symbolic tensors.

.. code-block:: python

    inputs = keras.Input(shape=(32, 32, 3))
    x = layers.Conv2D(16, 3, padding="same", activation="relu")(inputs)
    y = layers.Conv2D(16, 3, padding="same")(x)
    x = layers.Activation("relu")(layers.Add()([x, y]))  # a residual connection
    outputs = layers.Dense(10, activation="softmax")(layers.GlobalAveragePooling2D()(x))
    model = keras.Model(inputs, outputs)

The graph between ``inputs`` and ``outputs`` becomes a torch module whose ``forward`` runs the
layers in order, each on the outputs it was called on; it trains, evaluates, predicts, saves,
loads and explains as a ``Sequential`` model does. One image input and one output (a
classifier), as everything cnnkit runs takes. The config is Keras 3's (``inbound_nodes`` with
``keras_history``), so the same reader rebuilds cnnkit's own files and Keras' (see
:mod:`cnnkit.models.keras_import`).
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn

from cnnkit.errors import CnnkitError, ConfigError, ShapeError
from cnnkit.layers import Input, InputLayer, KerasTensor, Layer
from cnnkit.models.sequential import LayerModel, Sequential, layer_from_spec

__all__ = ["Functional"]

LayerFactory = Callable[[dict[str, Any]], Layer]


def _one(value: Any, what: str) -> KerasTensor:
    """The single tensor of ``inputs`` / ``outputs`` (a tensor, or a list or dict holding one)."""
    if isinstance(value, dict):
        value = list(value.values())
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ConfigError(f"cnnkit models take one image input and give one output; got {len(value)} {what}")
        value = value[0]
    if not isinstance(value, KerasTensor):
        raise ConfigError(f"Model {what} must be KerasTensors (from keras.Input(...) and layer calls), "
                          f"got {type(value).__name__}")  # fmt: skip
    return value


def _in_order(inp: KerasTensor, out: KerasTensor) -> list[KerasTensor]:
    """The tensors from ``inp`` (excluded) to ``out``, each after the ones it is computed from."""
    order: list[KerasTensor] = []
    seen: set[int] = {id(inp)}
    stack: list[tuple[KerasTensor, bool]] = [(out, False)]
    while stack:  # depth-first, iterative: deep residual nets need no recursion limit
        tensor, expanded = stack.pop()
        if id(tensor) in seen and not expanded:
            continue
        if expanded:
            order.append(tensor)
            continue
        if isinstance(tensor.layer, InputLayer):
            raise ConfigError(f"the outputs depend on input {tensor.layer.name!r}, which is not the model's input "
                              f"{inp.layer.name!r}")  # fmt: skip
        seen.add(id(tensor))
        stack.append((tensor, True))
        stack.extend((source, False) for source in reversed(tensor.inputs) if id(source) not in seen)
    return order


class Functional(LayerModel, functional_api=True):
    """A model over a graph of Keras-style layers: ``keras.Model(inputs, outputs)``."""

    def __init__(self, inputs: Any, outputs: Any, name: str | None = None, **kwargs: Any) -> None:
        super().__init__(name=name or "functional", **kwargs)
        inp, out = _one(inputs, "inputs"), _one(outputs, "outputs")
        if len(inp.shape) != 4:
            raise ShapeError(f"cnnkit models take images: keras.Input(shape=(height, width, channels)), "
                             f"got shape {inp.shape[1:]}")  # fmt: skip
        tensors = _in_order(inp, out)
        if not tensors:
            raise ConfigError("the model has no layers between its input and its output")
        layers: list[Layer] = []
        for tensor in tensors:
            if not any(tensor.layer is layer for layer in layers):
                layers.append(tensor.layer)
        names = [layer.name for layer in layers] + [inp.layer.name]
        duplicate = next((n for n in names if names.count(n) > 1), None)
        if duplicate is not None:
            raise ConfigError(f"two layers of the model are named {duplicate!r}; layer names must be unique")
        self.layers = nn.ModuleList(layers)
        self.input_name = inp.layer.name
        self._image_shape = tuple(inp.shape[1:])
        self.inputs, self.outputs = [inp], [out]
        # Each step: (index of its layer, the values it takes, whether as a list); value 0 is the input.
        ids = {id(inp): 0}
        self._steps: list[tuple[int, tuple[int, ...], bool]] = []
        for tensor in tensors:
            index = next(i for i, layer in enumerate(layers) if layer is tensor.layer)
            self._steps.append((index, tuple(ids[id(s)] for s in tensor.inputs), tensor.listed))
            ids[id(tensor)] = len(ids)
        last_use = {value: i for i, (_, sources, _) in enumerate(self._steps) for value in sources}
        self._release = [tuple(v for v, i in last_use.items() if i == step) for step in range(len(self._steps))]

    @property
    def input(self) -> KerasTensor:
        return self.inputs[0]

    @property
    def output(self) -> KerasTensor:
        return self.outputs[0]

    def _output_layer(self) -> Layer:
        return self.layers[self._steps[-1][0]]

    def add(self, layer: Layer) -> None:
        raise ConfigError("add() is for Sequential models; a functional model is fixed by its inputs and outputs")

    def build(self, input_shape: Sequence[int | None]) -> None:
        if tuple(input_shape) != self._image_shape:
            raise ShapeError(f"model {self.name!r} was built for images {(None, *self._image_shape)}, "
                             f"not {(None, *input_shape)}")  # fmt: skip

    # -- computing ---------------------------------------------------------------------
    def forward(self, x: torch.Tensor) -> torch.Tensor:
        """``(B, C, H, W)`` images -> logits: each layer on what it was called on (the output layer's
        softmax is left to ``predict``, as in ``Sequential``)."""
        values: dict[int, torch.Tensor] = {0: self.normalize(x)}
        last = len(self._steps) - 1
        for i, (index, sources, listed) in enumerate(self._steps):
            layer = self.layers[index]
            arg = [values[s] for s in sources] if listed else values[sources[0]]
            if isinstance(layer, LayerModel):  # a model used as a layer
                values[i + 1] = layer(arg) if i == last else layer.as_layer(arg)
            else:
                values[i + 1] = layer.logits(arg) if i == last and self.output_activation != "linear" else layer(arg)
            for value in self._release[i]:  # free what no later layer reads
                del values[value]
        return values[last + 1]

    # -- the graph, as Keras describes it -----------------------------------------------
    def _nodes(self) -> list[tuple[str, int, list[tuple[str, int]]]]:
        """Per step: its layer's name, which call of that layer it is, and its sources' ``(layer, call)``."""
        made: dict[int, tuple[str, int]] = {0: (self.input_name, 0)}
        calls: dict[int, int] = {}
        nodes = []
        for i, (index, sources, _) in enumerate(self._steps):
            node = calls.get(index, 0)
            calls[index] = node + 1
            name = self.layers[index].name
            nodes.append((name, node, [made[s] for s in sources]))
            made[i + 1] = (name, node)
        return nodes

    def summary_rows(self) -> list[tuple[str, str, str, int | str, str]]:
        """``(name, type, output shape, params, connected to)``, the input layer first, as Keras 3 shows."""
        rows: list[tuple[str, str, str, int | str, str]] = [
            (self.input_name, "InputLayer", str((None, *self._image_shape)), 0, "-")
        ]
        connected: dict[str, list[str]] = {}
        for name, _, sources in self._nodes():
            connected.setdefault(name, []).extend(f"{src}[{node}][0]" for src, node in sources)
        for layer in self.layers:
            rows.append((layer.name, type(layer).__name__, str(layer.output_shape), layer.count_params(),
                         ", ".join(connected[layer.name])))  # fmt: skip
        return rows

    def get_config(self) -> dict[str, Any]:
        """Keras 3's functional config: each layer with its ``inbound_nodes``, and the input and output."""
        steps, nodes = self._steps, self._nodes()
        shapes = {0: (None, *self._image_shape)}
        for i, (index, _, _) in enumerate(steps):
            shapes[i + 1] = self.layers[index].output_shape
        by_layer: dict[int, list[dict[str, Any]]] = {}
        for (index, sources, listed), (_, _, origins) in zip(steps, nodes):
            args = [_tensor_spec(shapes[s], origin) for s, origin in zip(sources, origins)]
            by_layer.setdefault(index, []).append({"args": [args] if listed else args, "kwargs": {}})
        specs: list[dict[str, Any]] = [{
            "class_name": "InputLayer", "name": self.input_name, "inbound_nodes": [],
            "config": {"batch_shape": [None, *self._image_shape], "name": self.input_name},
        }]  # fmt: skip
        for index, layer in enumerate(self.layers):
            config = layer.get_config()["config"] if isinstance(layer, LayerModel) else layer.get_config()
            specs.append({"class_name": type(layer).__name__, "config": config, "name": layer.name,
                          "inbound_nodes": by_layer[index]})  # fmt: skip
        out_name, out_node, _ = nodes[-1]
        return {"class_name": "Functional", "config": {
            "name": self.name, "layers": specs,
            "input_layers": [self.input_name, 0, 0], "output_layers": [out_name, out_node, 0],
        }}  # fmt: skip

    @classmethod
    def from_config(cls, config: dict[str, Any], make_layer: LayerFactory | None = None) -> Functional:
        """Rebuild from a functional config: cnnkit's own (``get_config``) or Keras' (3, or 2's lists).

        ``make_layer`` turns one ``{"class_name", "config"}`` into a layer (cnnkit's strict reader by
        default; the Keras importer passes its own).
        """
        make_layer = make_layer or _cnnkit_layer
        inner = config.get("config", config) if isinstance(config, dict) else None
        if not isinstance(inner, dict) or not isinstance(inner.get("layers"), list):
            raise ConfigError('a functional config needs "layers": a list of layers with their "inbound_nodes"')
        made: dict[tuple[str, int], KerasTensor] = {}
        pending: list[tuple[Layer, int, list[Any], bool]] = []
        for index, spec in enumerate(inner["layers"]):
            if not isinstance(spec, dict):
                raise ConfigError(f"layers[{index}] is not a layer")
            name = spec.get("name") or (spec.get("config") or {}).get("name")
            if spec.get("class_name") == "InputLayer":
                made[(name, 0)] = Input(_input_shape(spec.get("config") or {}), name=name)
                continue
            try:
                layer = make_layer({"class_name": spec.get("class_name"), "config": spec.get("config") or {}})
            except CnnkitError as e:
                raise type(e)(f"layers[{index}] {name!r} ({spec.get('class_name')}): {e}") from None
            layer.name = name
            for node, inbound in enumerate(spec.get("inbound_nodes") or []):
                pending.append((layer, node, *_inbound(inbound)))
        while pending:  # a node whose inputs are all made can be made; repeat until none is left
            ready = [p for p in pending if all((src, node) in made for src, node in p[2])]
            if not ready:
                missing = sorted({f"{s}[{n}]" for p in pending for s, n in p[2] if (s, n) not in made})
                raise ConfigError(f"the functional config refers to layers it does not define: {', '.join(missing)}")
            for layer, node, sources, listed in ready:
                args = [made[s] for s in sources]
                try:
                    made[(layer.name, node)] = layer(args if listed else args[0])
                except CnnkitError as e:
                    raise type(e)(f"layer {layer.name!r} ({type(layer).__name__}): {e}") from None
            pending = [p for p in pending if p not in ready]
        ends = []
        for key in ("input_layers", "output_layers"):
            entries = inner.get(key) or []
            entries = [entries] if entries and isinstance(entries[0], str) else entries
            if len(entries) != 1:
                raise ConfigError(f"cnnkit models take one image input and give one output; {key} has {len(entries)}")
            if (entries[0][0], entries[0][1]) not in made:
                raise ConfigError(f"{key} names {entries[0][0]!r}, which the config does not make")
            ends.append(made[(entries[0][0], entries[0][1])])
        return cls(ends[0], ends[1], name=inner.get("name"))


def _cnnkit_layer(spec: dict[str, Any]) -> Layer:
    """A layer of a cnnkit functional config: a Keras-style layer, or a model nested as one."""
    if spec.get("class_name") == "Sequential":
        return Sequential.from_config(spec)
    if spec.get("class_name") == "Functional":
        return Functional.from_config(spec)
    return layer_from_spec(spec)


def _tensor_spec(shape: Sequence[int | None], origin: tuple[str, int]) -> dict[str, Any]:
    history = [origin[0], origin[1], 0]
    return {"class_name": "__keras_tensor__", "config": {"shape": list(shape), "dtype": "float32",
                                                         "keras_history": history}}  # fmt: skip


def _input_shape(config: dict[str, Any]) -> list[int | None]:
    """An InputLayer's image shape: Keras 3's ``batch_shape``, Keras 2's ``batch_input_shape``, or ``shape``."""
    for key in ("batch_shape", "batch_input_shape"):
        if config.get(key):
            return list(config[key])[1:]
    if config.get("shape"):
        return list(config["shape"])
    raise ConfigError("an InputLayer config needs batch_shape (or shape)")


def _inbound(node: Any) -> tuple[list[tuple[str, int]], bool]:
    """A node's sources ``(layer, call)`` and whether they form a list, from Keras 3's or Keras 2's format."""
    if isinstance(node, dict):  # Keras 3: {"args": [tensor | [tensors]], "kwargs": {...}}
        args = node.get("args") or []
        if len(args) != 1:
            raise ConfigError(f"a layer call with {len(args)} positional arguments is not an image layer call")
        listed = isinstance(args[0], list)
        tensors = args[0] if listed else [args[0]]
        try:
            return [(t["config"]["keras_history"][0], int(t["config"]["keras_history"][1])) for t in tensors], listed
        except (KeyError, TypeError, IndexError):
            raise ConfigError("an inbound node's argument is not a __keras_tensor__ with a keras_history") from None
    if isinstance(node, list) and node:  # Keras 2: [[layer, node_index, tensor_index, kwargs], ...]
        return [(entry[0], int(entry[1])) for entry in node], len(node) > 1
    raise ConfigError(f"cannot read the inbound node {node!r}")
