"""Activation layers with settings: ``ReLU``, ``LeakyReLU``, ``Softmax``, with Keras' arguments.

Each plain case is the activation by name (``ReLU()`` is ``Activation("relu")``, ``Softmax()`` is
``Activation("softmax")``), so a model ending in ``Softmax()`` keeps its logits apart for the loss
as one ending in ``Dense(10, activation="softmax")`` does; the settings run their own formula.
"""

from __future__ import annotations

from typing import Any

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError
from cnnkit.layers.base import Layer

__all__ = ["LeakyReLU", "ReLU", "Softmax"]


class ReLU(Layer):
    """Keras' ``ReLU(max_value=None, negative_slope=0.0, threshold=0.0)``:
    ``x`` from ``threshold`` up (capped at ``max_value``), ``negative_slope * (x - threshold)`` below."""

    def __init__(
        self, max_value: float | None = None, negative_slope: float = 0.0, threshold: float = 0.0, **kwargs: Any
    ) -> None:
        if max_value is not None and max_value < 0:
            raise ConfigError(f"ReLU max_value must be >= 0, got {max_value!r}")
        if negative_slope < 0:
            raise ConfigError(f"ReLU negative_slope must be >= 0, got {negative_slope!r}")
        plain = not negative_slope and not threshold and max_value in (None, 6, 6.0)
        name = ("relu" if max_value is None else "relu6") if plain else None  # torch's own kernels where they fit
        super().__init__(name, **kwargs)
        self.max_value = None if max_value is None else float(max_value)
        self.negative_slope, self.threshold = float(negative_slope), float(threshold)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        if self.activation_name != "linear":
            return x  # the activation module does it
        below = self.negative_slope * (x - self.threshold)
        out = torch.where(x >= self.threshold, x, below)
        return out if self.max_value is None else out.clamp(max=self.max_value)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "max_value": self.max_value, "negative_slope": self.negative_slope,
                "threshold": self.threshold}  # fmt: skip


class LeakyReLU(Layer):
    """Keras' ``LeakyReLU(negative_slope=0.3)``: ``x`` for ``x >= 0``, ``negative_slope * x`` below."""

    def __init__(self, negative_slope: float = 0.3, alpha: float | None = None, **kwargs: Any) -> None:
        if alpha is not None:  # Keras 2's name for the slope (legacy .h5 files)
            negative_slope = alpha
        if negative_slope < 0:
            raise ConfigError(f"LeakyReLU negative_slope must be >= 0, got {negative_slope!r}")
        super().__init__(**kwargs)
        self.negative_slope = float(negative_slope)

    def call(self, x: torch.Tensor) -> torch.Tensor:
        return F.leaky_relu(x, self.negative_slope)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "negative_slope": self.negative_slope}


class Softmax(Layer):
    """Keras' ``Softmax(axis=-1)``: over the channels (the last axis of Keras' shapes)."""

    def __init__(self, axis: int = -1, **kwargs: Any) -> None:
        if axis != -1:
            raise ConfigError(f"cnnkit's Softmax is over the channels (axis=-1), got axis={axis!r}")
        super().__init__("softmax", **kwargs)

    def get_config(self) -> dict[str, Any]:
        return {**super().get_config(), "axis": -1}
