"""Keras' classification losses, always computed from logits.

A model's ``forward`` returns logits; its final softmax (or sigmoid) is applied only by
``predict``. A Keras loss with ``from_logits=False`` on a model that ends in softmax is
therefore computed exactly, as log-softmax + NLL, never from clipped probabilities.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError

__all__ = ["CategoricalCrossentropy", "Loss", "SparseCategoricalCrossentropy", "get", "resolve"]

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Loss:
    """A Keras-style loss; ``__call__(logits, targets)`` returns the mean loss."""

    name = "loss"

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0) -> None:
        if not 0 <= label_smoothing < 1:
            raise ConfigError(f"label_smoothing must be in [0, 1), got {label_smoothing}")
        self.from_logits, self.label_smoothing = from_logits, float(label_smoothing)

    def get_config(self) -> dict[str, Any]:
        return {"name": self.name, "from_logits": self.from_logits, "label_smoothing": self.label_smoothing}

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return self.per_sample(logits, targets).mean()

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        """The loss of each sample, ``(N,)``."""
        raise NotImplementedError


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy with integer class labels ``(N,)``, or the soft ``(N, classes)`` targets that
    MixUp and CutMix make of them (``F.cross_entropy`` takes both; label smoothing applies on top)."""

    name = "sparse_categorical_crossentropy"

    def __call__(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, label_smoothing=self.label_smoothing)

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets, reduction="none", label_smoothing=self.label_smoothing)


class CategoricalCrossentropy(Loss):
    """Cross-entropy with one-hot (or soft) targets ``(N, classes)``."""

    name = "categorical_crossentropy"

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        return F.cross_entropy(logits, targets.to(logits.dtype), reduction="none", label_smoothing=self.label_smoothing)


LOSSES: dict[str, type[Loss]] = {cls.name: cls for cls in (SparseCategoricalCrossentropy, CategoricalCrossentropy)}


def get(loss: str | Loss | dict[str, Any]) -> Loss:
    """A loss by Keras name, from its config, or as given."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, dict):
        config = dict(loss)
        name = config.pop("name", None)
        if name not in LOSSES:
            raise ConfigError(f"unknown loss {name!r}; cnnkit has: {', '.join(LOSSES)}")
        return LOSSES[name](**config)
    if isinstance(loss, str) and loss in LOSSES:
        return LOSSES[loss]()
    raise ConfigError(f"unknown loss {loss!r}; cnnkit has: {', '.join(LOSSES)}")


def resolve(loss: Loss, output_activation: str | None, class_weight: torch.Tensor | None = None) -> LossFn:
    """Check the loss fits how the model ends, and return ``fn(logits, targets)``.

    Keras computes a loss on the model's *output*; cnnkit computes the same quantity on
    the logits before the final softmax, which is exact and numerically stable.
    ``class_weight`` ``(classes,)`` weighs each sample's loss by its class, as Keras does.
    """
    ends_in_softmax = output_activation == "softmax"
    if loss.from_logits and ends_in_softmax:
        raise ConfigError(
            f"{loss.name}(from_logits=True) but the model's last layer applies softmax: its outputs are "
            f"probabilities, not logits. Use from_logits=False (the default) or remove the softmax."
        )
    if not loss.from_logits and not ends_in_softmax:
        raise ConfigError(
            f"{loss.name} expects probabilities but the model's last layer has no softmax: add "
            f"activation='softmax' to the last Dense, or pass {type(loss).__name__}(from_logits=True)."
        )
    if class_weight is None:
        return loss

    def weighted(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        labels = targets if targets.ndim == 1 else targets.argmax(dim=1)
        return (loss.per_sample(logits, targets) * class_weight.to(logits.device)[labels]).mean()

    return weighted
