"""An exponential moving average (EMA) of a model's weights, for evaluation and saving.

The average is kept as plain tensors beside the model (not a second module), updated
after every optimizer step with one fused ``lerp``; ``applied(model)`` swaps it into the
model for validation or saving and swaps the trained weights back afterwards.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager

import torch
from torch import nn

__all__ = ["EMA"]


class EMA:
    """EMA of every floating-point parameter and buffer (BatchNorm statistics included).

    The decay warms up as ``min(decay, (1 + t) / (10 + t))``, so early steps are not
    dominated by the random initialization.
    """

    def __init__(self, model: nn.Module, decay: float = 0.999) -> None:
        if not 0 < decay < 1:
            raise ValueError(f"EMA decay must be in (0, 1), got {decay}")
        self.decay = decay
        self.updates = 0
        self.tensors = [t.detach().clone() for t in self._sources(model)]

    @staticmethod
    def _sources(model: nn.Module) -> list[torch.Tensor]:
        return [t for t in (*model.parameters(), *model.buffers()) if t.is_floating_point()]

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        decay = min(self.decay, (1 + self.updates) / (10 + self.updates))
        torch._foreach_lerp_(self.tensors, [t.detach() for t in self._sources(model)], 1 - decay)

    @contextmanager
    def applied(self, model: nn.Module) -> Iterator[nn.Module]:
        """Temporarily load the averaged weights into ``model``."""
        sources = self._sources(model)
        saved = [t.detach().clone() for t in sources]
        with torch.no_grad():
            torch._foreach_copy_(sources, self.tensors)
        try:
            yield model
        finally:
            with torch.no_grad():
                torch._foreach_copy_(sources, saved)

    def state_tensors(self) -> dict[str, torch.Tensor]:
        return {str(i): t for i, t in enumerate(self.tensors)}

    def load_state_tensors(self, tensors: dict[str, torch.Tensor], updates: int) -> None:
        with torch.no_grad():
            for i, t in enumerate(self.tensors):
                t.copy_(tensors[str(i)])
        self.updates = updates
