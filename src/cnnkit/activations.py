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

__all__ = ["ACTIVATIONS", "ChannelSoftmax", "get"]


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


def get(activation: str | nn.Module | None) -> tuple[str, nn.Module]:
    """Resolve a Keras activation name (or ``None`` for linear, or a module) to ``(name, module)``."""
    if activation is None:
        return "linear", nn.Identity()
    if isinstance(activation, nn.Module):
        return type(activation).__name__, activation
    if isinstance(activation, str) and activation.lower() in ACTIVATIONS:
        name = activation.lower()
        return name, ACTIVATIONS[name]()
    raise ConfigError(f"unknown activation {activation!r}; choose one of: {', '.join(ACTIVATIONS)}")
