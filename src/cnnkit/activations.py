"""Activation functions by Keras name, as torch modules.

``get("relu")`` returns ``("relu", nn.ReLU())``; the name is what a model's config
stores, the module is what runs. Softmax acts on the channel axis, as Keras' softmax
acts on the last (channels-last) axis.
"""

from __future__ import annotations

from collections.abc import Callable

import torch
from torch import nn

from cnnkit.errors import ConfigError

__all__ = ["ACTIVATIONS", "ChannelSoftmax", "gelu", "get", "relu", "sigmoid", "softmax", "tanh"]


class ChannelSoftmax(nn.Module):
    """Softmax over channels: dim 1 of ``(B, C, H, W)``, the last dim of ``(B, F)``."""

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return torch.softmax(x, dim=1 if x.ndim == 4 else -1)


ACTIVATIONS: dict[str, Callable[[], nn.Module]] = {
    "linear": nn.Identity,
    "relu": nn.ReLU,
    "relu6": nn.ReLU6,
    "leaky_relu": lambda: nn.LeakyReLU(0.2),  # Keras' default negative slope
    "elu": nn.ELU,
    "selu": nn.SELU,
    "gelu": nn.GELU,
    "silu": nn.SiLU,
    "swish": nn.SiLU,
    "softplus": nn.Softplus,
    "sigmoid": nn.Sigmoid,
    "tanh": nn.Tanh,
    "softmax": ChannelSoftmax,
}


# Keras' activation functions (``keras.activations.relu``), on tensors; given as a layer's
# ``activation=`` they are taken by name, so the model saves and exports as with the string.
def relu(
    x: torch.Tensor, negative_slope: float = 0.0, max_value: float | None = None, threshold: float = 0.0
) -> torch.Tensor:
    """Keras' ``relu``: ``x`` from ``threshold`` up (capped at ``max_value``), below it
    ``negative_slope * (x - threshold)``."""
    out = torch.where(x >= threshold, x, negative_slope * (x - threshold))
    return out if max_value is None else out.clamp(max=max_value)


def sigmoid(x: torch.Tensor) -> torch.Tensor:
    return torch.sigmoid(x)


def tanh(x: torch.Tensor) -> torch.Tensor:
    return torch.tanh(x)


def gelu(x: torch.Tensor, approximate: bool = False) -> torch.Tensor:
    return torch.nn.functional.gelu(x, approximate="tanh" if approximate else "none")


def softmax(x: torch.Tensor, axis: int = -1) -> torch.Tensor:
    """Keras' ``softmax`` over ``axis`` of the tensor as given."""
    return torch.softmax(x, dim=axis)


_FUNCTIONS = {f: f.__name__ for f in (relu, sigmoid, tanh, gelu, softmax)}


def get(activation: str | nn.Module | Callable | None) -> tuple[str, nn.Module]:
    """Resolve a Keras activation name (or ``None`` for linear, a module, or one of this module's
    functions) to ``(name, module)``."""
    if activation is None:
        return "linear", nn.Identity()
    if activation in _FUNCTIONS:  # keras.activations.relu given as activation=
        activation = _FUNCTIONS[activation]
    if isinstance(activation, nn.Module):
        return type(activation).__name__, activation
    if isinstance(activation, str) and activation.lower() in ACTIVATIONS:
        name = activation.lower()
        return name, ACTIVATIONS[name]()
    raise ConfigError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
