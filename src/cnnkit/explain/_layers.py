"""Finding a model's layers by name, and running it with hooks on them.

Names are what a user sees: a ``Sequential`` model's Keras layer names (``conv2d_1``),
otherwise module paths inside the wrapped network (``layer4.1.conv2``, without the
``net.`` prefix a :class:`~cnnkit.models.Model` adds). A Keras ``Conv2D`` layer counts
as one convolution whose output is *after* its activation, as Keras shows it.
"""

from __future__ import annotations

import threading
import weakref
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn

from cnnkit.classifier import classify
from cnnkit.data.transforms import ImageSource, to_batch
from cnnkit.errors import ConfigError, ShapeError

__all__ = [
    "HOOK_LOCK",
    "MIN_CAM_SIDE",
    "capture",
    "class_scores",
    "conv_layer_names",
    "eval_mode",
    "model_device",
    "named_layers",
    "prepare_image",
    "resolve_layer",
    "resolve_target",
]

# Hooks on a shared model see every forward pass, including another thread's (the server):
# one explanation at a time keeps each hook's capture its own.
HOOK_LOCK = threading.RLock()

# The smallest map side a CAM method's default layer has (see _last_executed: why, and the measurement).
MIN_CAM_SIDE = 7


def _is_conv(module: nn.Module) -> bool:
    from cnnkit.layers import Conv2D

    return isinstance(module, Conv2D | nn.Conv2d)


def _root(model: nn.Module) -> tuple[nn.Module, str]:
    """The module whose paths are the user-facing names, and the prefix dropped from them."""
    net = getattr(model, "net", None)
    if isinstance(net, nn.Module) and not hasattr(model, "layers"):
        return net, "net."
    return model, ""


def named_layers(model: nn.Module, kind: str = "conv") -> dict[str, nn.Module]:
    """Layer name -> module, in registration order.

    ``kind="conv"``: every convolution; ``kind="all"``: every Keras layer of a ``Sequential``
    model, or every leaf module of any other network.
    """
    layers = getattr(model, "layers", None)
    if isinstance(layers, nn.ModuleList) and all(hasattr(layer, "name") for layer in layers):
        # A Sequential model: its Keras layers, by their Keras names.
        return {layer.name: layer for layer in layers if kind == "all" or _is_conv(layer)}
    root, _ = _root(model)
    found: dict[str, nn.Module] = {}
    inside_conv: list[str] = []  # a Keras Conv2D counts once: skip the nn.Conv2d inside it
    for name, module in root.named_modules():
        if not name or any(name.startswith(prefix + ".") for prefix in inside_conv):
            continue
        if _is_conv(module):
            found[name] = module
            inside_conv.append(name)
        elif kind == "all" and not any(True for _ in module.children()):
            found[name] = module
    return found


def conv_layer_names(model: nn.Module) -> list[str]:
    """The names of the model's convolutions, in the order they were defined."""
    return list(named_layers(model, "conv"))


def resolve_layer(model: nn.Module, name: str | None) -> tuple[str, nn.Module]:
    """``(name, module)`` for a layer name; ``None``: the last convolution run whose map is at least 7x7."""
    convs = named_layers(model, "conv")
    if name is None:
        if not convs:
            raise ConfigError(f"{type(model).__name__} has no convolution to explain; pass a layer name")
        return _last_executed(model, convs)
    if name in convs:
        return name, convs[name]
    everything = {**named_layers(model, "all"), **dict(_root(model)[0].named_modules()), **dict(model.named_modules())}
    everything.pop("", None)
    if name in everything:
        return name, everything[name]
    shown = ", ".join(list(convs)[:20]) + (" ..." if len(convs) > 20 else "")
    raise ConfigError(f"model has no layer {name!r}; its convolutions are: {shown or 'none'}")


def _last_executed(model: nn.Module, convs: dict[str, nn.Module]) -> tuple[str, nn.Module]:
    """The last convolution the forward pass runs whose map is at least ``MIN_CAM_SIDE`` on each side.

    Registration order can differ from execution order, so one probe pass decides. A small
    map says little about *where*: upsampled from 3x3 (the article's CNN's last convolution
    on 28x28 digits) every heat map is a blur over the whole image, and it measures worse than
    a centre-out order by deletion (benchmarks/explain_quality.py). So the last convolution
    whose map is at least 7x7 is taken (a ResNet's last stage on a 224x224 photo, as usual); if
    none is that large, the largest map (the last of equals). The answer is cached per model.
    """
    if len(convs) == 1:
        return next(iter(convs.items()))
    shape = getattr(model, "image_shape", None)
    if not shape or any(n is None for n in shape):
        return list(convs.items())[-1]
    key = (tuple(shape), tuple(convs))
    cached = _LAST_CONV.get(model)
    if cached is not None and cached[0] == key:
        return cached[1], convs[cached[1]]
    height, width, channels = shape
    ran: list[tuple[str, tuple[int, int]]] = []  # (name, output (h, w)) in execution order

    def record(name: str):  # noqa: ANN202
        return lambda module, inputs, out: ran.append((name, tuple(out.shape[-2:]) if out.ndim == 4 else (0, 0)))

    with HOOK_LOCK, eval_mode(model), torch.no_grad():
        handles = [m.register_forward_hook(record(n)) for n, m in convs.items()]
        try:
            model(torch.zeros(1, channels, height, width, device=model_device(model)))
        finally:
            for handle in handles:
                handle.remove()
    large = [name for name, (h, w) in ran if min(h, w) >= MIN_CAM_SIDE]
    if large:
        name = large[-1]
    elif ran:
        name = max(reversed(ran), key=lambda item: item[1][0] * item[1][1])[0]  # the largest map, the last of equals
    else:
        name = list(convs)[-1]
    _LAST_CONV[model] = (key, name)
    return name, convs[name]


_LAST_CONV: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def model_device(model: nn.Module) -> torch.device:
    param = next(model.parameters(), None)
    return param.device if param is not None else torch.device("cpu")


@contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Evaluation mode (dropout off, BatchNorm on its running statistics), restored afterwards."""
    was_training = model.training
    model.eval()
    try:
        yield
    finally:
        model.train(was_training)


@contextmanager
def capture(modules: dict[str, nn.Module], *, for_gradients: bool = False) -> Iterator[dict[str, torch.Tensor]]:
    """Record each module's output of the next forward pass into the yielded dict (first call wins).

    ``for_gradients=True`` hands the rest of the network a copy of the output, so an
    in-place operation downstream (``ReLU(inplace=True)``) cannot overwrite the tensor
    whose gradient is asked for.
    """
    outputs: dict[str, torch.Tensor] = {}

    def hook(name: str):  # noqa: ANN202
        def record(module: nn.Module, inputs: Any, output: Any) -> Any:
            if not isinstance(output, torch.Tensor) or name in outputs:
                return None
            outputs[name] = output
            return output.clone() if for_gradients else None

        return record

    handles = [module.register_forward_hook(hook(name)) for name, module in modules.items()]
    try:
        yield outputs
    finally:
        for handle in handles:
            handle.remove()


def class_scores(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """``(B, C, H, W)`` images -> ``(B, classes)`` logits: what every method explains (a binary model's two)."""
    return classify(model, x)


def prepare_image(model: nn.Module, image: ImageSource) -> torch.Tensor:
    """One image as a ``(1, C, H, W)`` float32 tensor on the model's device, at its input shape.

    Anything :func:`~cnnkit.data.transforms.to_batch` reads (a file, a PIL image, a Keras-style
    ``(H, W, C)`` or ``(H, W)`` array, a ``(C, H, W)`` or ``(1, C, H, W)`` tensor), conformed to
    the model's input shape (channels, size). Values are in [0, 1] (the model normalizes inside ``forward``).
    """
    x = to_batch(image, getattr(model, "image_shape", None), conform_arrays=True)
    if x.shape[0] != 1:
        raise ShapeError(f"explain one image at a time: (C, H, W) or (1, C, H, W), got {tuple(x.shape)}")
    return x.to(model_device(model))


def resolve_target(model: nn.Module, target: int | str | None, logits: torch.Tensor) -> int:
    """A class index from an index, a class name, or ``None`` (the predicted class)."""
    classes = logits.shape[-1]
    if target is None:
        return int(logits[0].argmax())
    names: Sequence[str] = getattr(model, "class_names", None) or []
    if isinstance(target, str):
        if target in names:
            return list(names).index(target)
        if target.isdigit() and int(target) < classes:
            return int(target)
        known = ", ".join(names) or f"0..{classes - 1}"
        raise ConfigError(f"unknown class {target!r}; the model's classes are: {known}")
    index = int(target)
    if not 0 <= index < classes:
        raise ConfigError(f"class index {index} is out of range for a model with {classes} classes")
    return index
