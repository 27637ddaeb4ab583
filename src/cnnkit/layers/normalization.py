"""Batch normalization over channels, with Keras' defaults and weight layout."""

from __future__ import annotations

from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.errors import ConfigError
from cnnkit.layers.base import Layer, Shape

__all__ = ["BatchNormalization"]


class BatchNormalization(Layer):
    """Batch normalization over channels, with Keras' defaults (momentum 0.99, epsilon 1e-3)."""

    def __init__(
        self,
        axis: int = -1,
        momentum: float = 0.99,
        epsilon: float = 0.001,
        center: bool = True,
        scale: bool = True,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        if axis not in (-1, 3):
            raise ConfigError("BatchNormalization normalizes the channel axis (axis=-1) only")
        self.axis, self.momentum, self.epsilon = axis, momentum, epsilon
        self.center, self.scale = center, scale

    def _build(self, input_shape: Shape) -> None:
        channels = input_shape[-1]
        norm = nn.BatchNorm2d if len(input_shape) == 3 else nn.BatchNorm1d
        # Keras' momentum weighs the old statistics; torch's weighs the new batch.
        affine = self.center and self.scale
        self.bn = norm(channels, eps=self.epsilon, momentum=1 - self.momentum, affine=affine)
        if not affine:  # Keras can drop gamma or beta alone; torch's module cannot
            self.gamma = nn.Parameter(torch.ones(channels)) if self.scale else None
            self.beta = nn.Parameter(torch.zeros(channels)) if self.center else None

    def call(self, x: torch.Tensor) -> torch.Tensor:
        x = self.bn(x)
        if self.bn.affine:
            return x
        view = (1, -1, 1, 1) if x.ndim == 4 else (1, -1)
        if self.gamma is not None:
            x = x * self.gamma.view(view)
        if self.beta is not None:
            x = x + self.beta.view(view)
        return x

    def _affine(self) -> tuple[torch.Tensor | None, torch.Tensor | None]:
        if self.bn.affine:
            return self.bn.weight, self.bn.bias
        return self.gamma, self.beta

    def get_weights(self) -> list[np.ndarray]:
        gamma, beta = self._affine()
        tensors = [t for t in (gamma, beta) if t is not None] + [self.bn.running_mean, self.bn.running_var]
        return [t.detach().cpu().numpy() for t in tensors]

    def _set_weights(self, weights: list[torch.Tensor]) -> None:
        gamma, beta = self._affine()
        targets = [t for t in (gamma, beta) if t is not None] + [self.bn.running_mean, self.bn.running_var]
        with torch.no_grad():
            for target, value in zip(targets, weights):
                target.copy_(value)

    def get_config(self) -> dict[str, Any]:
        return {
            **super().get_config(),
            "axis": self.axis,
            "momentum": self.momentum,
            "epsilon": self.epsilon,
            "center": self.center,
            "scale": self.scale,
        }
