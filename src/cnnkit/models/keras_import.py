"""Real Keras models in: a Keras 3 ``.keras`` or legacy ``.h5`` file -> a cnnkit model, same predictions.

:mod:`cnnkit.keras_file` reads the file (JSON and arrays); this module maps each Keras layer
config onto a cnnkit layer through one registry (:data:`KERAS_LAYERS`), rebuilds the
``Sequential`` or functional model, and sets the weights through each layer's ``set_weights``
(Keras' own layout: conv kernels ``(kh, kw, in, out)``, Dense ``(in, out)``, depthwise
``(kh, kw, in, multiplier)``, BatchNorm gamma/beta/moving mean/moving variance).

Nothing from the file runs: a ``Lambda`` layer (Python code) and any class cnnkit does not have
are refused by name, all of them in one error. Settings that only shape training
(regularizers, constraints, initializers) are dropped; any other setting cnnkit does not
support is an error naming the layer and the setting, never silently ignored.
"""

from __future__ import annotations

import contextlib
import os
import re
from collections.abc import Callable
from pathlib import Path
from typing import Any

from cnnkit.errors import CnnkitError, ConfigError, ModelFileError
from cnnkit.keras_file import KerasFile, read_keras_file
from cnnkit.layers import INITIALIZERS, LAYERS, InputLayer, Layer, layer_from_config
from cnnkit.models.functional import Functional, _input_shape
from cnnkit.models.model import Model
from cnnkit.models.sequential import LayerModel, Sequential, _fields

__all__ = ["KERAS_LAYERS", "keras_layer", "load_keras_model"]

Converter = Callable[[dict[str, Any]], tuple[str, dict[str, Any]]]

# Settings that change how a model trains, not what it computes: dropped on import.
_TRAINING_ONLY = re.compile(r".*_(regularizer|constraint)$|^(dtype|build_config|sparse|ragged|optional|synchronized"
                            r"|moving_mean_initializer|moving_variance_initializer|beta_initializer|gamma_initializer"
                            r"|renorm_momentum|renorm_clipping)$")  # fmt: skip
# Settings cnnkit has no counterpart for, accepted at Keras' default (which changes nothing).
_DEFAULTS: dict[str, Any] = {"quantization_config": None, "lora_rank": None, "lora_alpha": None, "renorm": False,
                             "pad_to_aspect_ratio": False, "antialias": False}  # fmt: skip
# Settings that only matter with another one off its default (Resizing fills only when it pads).
_UNUSED = {"Resizing": {"fill_mode", "fill_value"}}
_AUGMENTATION = {"RandomFlip", "RandomRotation", "RandomZoom", "RandomTranslation", "RandomContrast"}


def _same(kind: str) -> Converter:
    """A Keras layer cnnkit has under the same name and arguments."""
    return lambda config: (kind, config)


def _batchnorm(config: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    axis = config.get("axis", -1)
    if isinstance(axis, list) and len(axis) == 1:  # tf.keras 2 stores the built axis as a list: [3]
        config = {**config, "axis": axis[0]}
    return "BatchNormalization", config


# Keras class name -> the cnnkit layer class name and config (one place to teach cnnkit a Keras layer).
KERAS_LAYERS: dict[str, Converter] = {
    **{kind: _same(kind) for kind in LAYERS if kind != "InputLayer"},
    "BatchNormalization": _batchnorm,
}


def _initializer(value: Any) -> str | None:
    """A Keras initializer (name or config) as cnnkit's name; None when cnnkit has none by that name
    (the weights are loaded anyway)."""
    name = value.get("class_name") if isinstance(value, dict) else value
    if not isinstance(name, str):
        return None
    snake = re.sub(r"(?<=[a-z])([A-Z])", r"_\1", name).lower()
    return snake if snake in INITIALIZERS else None


def keras_layer(spec: dict[str, Any]) -> Layer:
    """The cnnkit layer for one Keras layer config ``{"class_name", "config"}``."""
    kind, config = spec.get("class_name"), dict(spec.get("config") or {})
    if kind == "Sequential":  # a model nested as a layer (Keras' data augmentation blocks)
        return _sequential(spec)
    if kind in ("Functional", "Model"):
        return Functional.from_config(spec, keras_layer)
    if kind not in KERAS_LAYERS:
        raise ConfigError(f"cnnkit has no Keras layer {kind!r}")
    config.pop("dtype", None)  # a dtype policy; cnnkit computes in float32 (mixed precision: to float rounding)
    target, config = KERAS_LAYERS[kind](config)
    accepted, _ = _fields(LAYERS[target])
    kept: dict[str, Any] = {}
    for key, value in config.items():
        if key.endswith("_initializer") and key in accepted:
            if _initializer(value) is not None:
                kept[key] = _initializer(value)
        elif key in accepted:
            kept[key] = value
        elif (
            _TRAINING_ONLY.match(key)
            or target in _AUGMENTATION  # the identity at inference: its other settings change no prediction
            or (key in _DEFAULTS and value in (_DEFAULTS[key], None))
            or key in _UNUSED.get(target, ())
        ):
            continue
        else:
            raise ConfigError(f"layer {config.get('name')!r} ({kind}): cnnkit does not support its setting "
                              f"{key}={value!r}")  # fmt: skip
    return layer_from_config({"class_name": target, "config": kept})


def _unknown_layers(layers: list[dict[str, Any]]) -> list[str]:
    """Every Keras layer class in ``layers`` cnnkit cannot rebuild, described."""
    found = []
    for spec in layers:
        kind = spec.get("class_name")
        if kind == "InputLayer" or (kind in KERAS_LAYERS and kind not in ("Sequential", "Functional", "Model")):
            continue
        if kind == "Lambda":
            found.append(f"Lambda {spec.get('config', {}).get('name')!r} (Python code, which cnnkit never runs)")
        elif kind in ("Sequential", "Functional", "Model"):  # a nested model: what it holds
            found.extend(_unknown_layers(list((spec.get("config") or {}).get("layers") or [])))
        else:
            found.append(f"{kind} (registered as {spec['registered_name']!r})" if spec.get("registered_name")
                         else str(kind))  # fmt: skip
    return list(dict.fromkeys(found))


def _sequential(config: dict[str, Any]) -> Sequential:
    inner = config.get("config", {})
    specs = list(inner.get("layers", []))
    shape = None
    if specs and specs[0].get("class_name") == "InputLayer":
        shape = _input_shape(specs.pop(0).get("config", {}))
    elif specs and specs[0].get("config", {}).get("batch_input_shape"):  # Keras 2: on the first layer
        shape = list(specs[0]["config"]["batch_input_shape"])[1:]
    elif inner.get("build_input_shape"):
        shape = list(inner["build_input_shape"])[1:]
    model = Sequential(name=inner.get("name"))
    if shape is not None:
        model.add(InputLayer(shape))
    for index, spec in enumerate(specs):
        spec = {**spec, "config": {k: v for k, v in spec.get("config", {}).items() if k != "batch_input_shape"}}
        try:
            model.add(keras_layer(spec))
        except CnnkitError as e:
            raise type(e)(f"layers[{index}] ({spec.get('class_name')}): {e}") from None
    return model


def _set_weights(model: LayerModel, weights: dict[str, list[Any]]) -> None:
    for layer in model.layers:
        expected = layer.get_weights()
        if not expected:
            continue
        if not weights.get(layer.name):
            raise ModelFileError(f"the file has no weights for layer {layer.name!r}")
        layer.set_weights(weights[layer.name])


def _compile(model: Model, config: dict[str, Any]) -> None:
    """Keep Keras' loss and metrics when cnnkit knows them by name (``evaluate`` then works as it did)."""
    compiled = config.get("compile_config") or {}
    loss = compiled.get("loss")
    if isinstance(loss, str):
        metrics = [m for m in compiled.get("metrics") or [] if isinstance(m, str)]
        with contextlib.suppress(CnnkitError):  # a loss cnnkit does not know: it predicts; compile it to evaluate
            model.compile(optimizer="adam", loss=loss, metrics=metrics)


def _takes_0_to_255(model: LayerModel) -> bool | None:
    """Whether the model's first arithmetic on its input is Keras' ``Rescaling(1/255)`` (or
    ``1/127.5``, offset -1): then it was trained on 0..255 pixels, as Keras' image tutorials do.

    Augmentation and resizing layers in front (often a nested ``Sequential``) keep the range;
    ``None``: the model has nothing else (a nested model: look on after it).
    """
    for layer in model.layers:
        if isinstance(layer, LayerModel):
            inner = _takes_0_to_255(layer)
            if inner is None:
                continue
            return inner
        kind = type(layer).__name__
        if kind == "InputLayer" or kind.startswith("Random") or kind == "Resizing":
            continue
        scale = getattr(layer, "scale", None) if kind == "Rescaling" else None
        return scale is not None and 0.98 <= scale * 255 <= 2.02  # 1/255 or 1/127.5
    return None


def model_from_keras_config(config: dict[str, Any]) -> LayerModel:
    """An untrained cnnkit model from the config Keras writes (``model.to_json()``, a ``.keras`` file's)."""
    kind = config.get("class_name")
    if kind == "Sequential":
        return _sequential(config)
    if kind in ("Functional", "Model"):
        return Functional.from_config(config, keras_layer)
    raise ConfigError(f"a Keras {kind!r} (cnnkit reads Sequential and functional models)")


def load_keras_model(path: str | os.PathLike) -> tuple[Model, dict[str, Any]]:
    """A cnnkit model from a Keras 3 ``.keras`` or legacy ``.h5`` file, and metadata like a model file's."""
    path = Path(path)
    source: KerasFile = read_keras_file(path)
    config = source.config
    kind = config.get("class_name")
    layers = config.get("config", {}).get("layers")
    if kind not in ("Sequential", "Functional", "Model") or not isinstance(layers, list):
        raise ModelFileError(f"{path}: a Keras {kind!r} (cnnkit reads Sequential and functional models)")
    unknown = _unknown_layers(layers)
    if unknown:
        raise ModelFileError(f"{path} uses layers cnnkit does not have: {'; '.join(unknown)}. "
                             f"cnnkit has: {', '.join(sorted(KERAS_LAYERS))}")  # fmt: skip
    try:
        model = model_from_keras_config(config)
        _set_weights(model, source.weights)
    except CnnkitError as e:
        raise ModelFileError(f"{path}: cannot rebuild the Keras model: {e}") from None
    _compile(model, config)
    if _takes_0_to_255(model):
        model.pixel_max = 255.0
    metadata = {
        "name": model.name,
        "architecture": model.get_config(),
        "input_shape": list(model.image_shape) if model.image_shape is not None else None,
        "output_activation": model.output_activation,
        "pixel_max": model.pixel_max,
        "class_names": None,
        "keras": {"format": source.kind, "keras_version": source.keras_version},
    }
    return model, metadata
