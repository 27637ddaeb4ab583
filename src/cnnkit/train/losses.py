"""Keras' classification losses, always computed from logits.

A model's ``forward`` returns logits; its final softmax (or sigmoid) is applied only by
``predict``. A Keras loss with ``from_logits=False`` on a model that ends in softmax is
therefore computed exactly, as log-softmax + NLL, never from clipped probabilities; likewise
``binary_crossentropy`` on a model ending in a sigmoid is computed as the log-sigmoid of its logits.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import torch
import torch.nn.functional as F

from cnnkit._keras_names import missing
from cnnkit.errors import ConfigError

__all__ = ["LOSSES", "BinaryCrossentropy", "CategoricalCrossentropy", "Loss", "SparseCategoricalCrossentropy",
           "binary_crossentropy", "categorical_crossentropy", "get", "resolve",
           "sparse_categorical_crossentropy"]  # fmt: skip

LossFn = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


class Loss:
    """A Keras-style loss; ``__call__(logits, targets)`` returns the mean loss."""

    name = "loss"
    ends_in = "softmax"  # the output activation whose probabilities the loss takes (from_logits=False)

    def __init__(self, from_logits: bool = False, label_smoothing: float = 0.0, **keras_only: Any) -> None:
        # Keras' reduction/name/dtype/axis: cnnkit always averages over the batch, in float32
        unknown = sorted(set(keras_only) - {"reduction", "name", "dtype", "axis", "ignore_class"})
        if unknown or keras_only.get("reduction", "sum_over_batch_size") != "sum_over_batch_size":
            raise ConfigError(f"{type(self).__name__} takes from_logits and label_smoothing; got {keras_only}")
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


class BinaryCrossentropy(Loss):
    """Binary cross-entropy for a one-unit sigmoid classifier: targets 0/1 ``(N,)``, logits ``(N, 1)``.

    As Keras' cats-vs-dogs example: ``Dense(1, activation="sigmoid")`` and ``loss="binary_crossentropy"``.
    ``label_smoothing`` moves each target towards 0.5, as Keras does.
    """

    name = "binary_crossentropy"
    ends_in = "sigmoid"

    def per_sample(self, logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        targets = targets.to(logits.dtype).reshape(logits.shape[0], -1)  # (N, units)
        if targets.shape != logits.shape:
            raise ConfigError(f"binary_crossentropy: {tuple(targets.shape)} targets for {tuple(logits.shape)} "
                              f"outputs; a one-unit sigmoid model takes labels 0/1 of shape (N,)")  # fmt: skip
        if self.label_smoothing:
            targets = targets * (1 - self.label_smoothing) + 0.5 * self.label_smoothing
        return F.binary_cross_entropy_with_logits(logits, targets, reduction="none").mean(dim=1)


LOSSES: dict[str, type[Loss]] = {
    cls.name: cls for cls in (SparseCategoricalCrossentropy, CategoricalCrossentropy, BinaryCrossentropy)
}
# Keras' function forms, which compile(loss=keras.losses.binary_crossentropy) passes: each maps to its class.
sparse_categorical_crossentropy, categorical_crossentropy, binary_crossentropy = (
    SparseCategoricalCrossentropy, CategoricalCrossentropy, BinaryCrossentropy
)  # fmt: skip


def get(loss: str | Loss | dict[str, Any]) -> Loss:
    """A loss by Keras name, from its config, or as given."""
    if isinstance(loss, Loss):
        return loss
    if isinstance(loss, type) and issubclass(loss, Loss):  # keras.losses.binary_crossentropy, passed as is
        return loss()
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
    ends = loss.ends_in  # softmax (categorical) or sigmoid (binary)
    fix = "the last Dense's activation=" + repr(ends)
    if loss.from_logits and output_activation == ends:
        raise ConfigError(
            f"{loss.name}(from_logits=True) but the model's last layer applies {ends}: its outputs are "
            f"probabilities, not logits. Use from_logits=False (the default) or remove the {ends}."
        )
    if not loss.from_logits and output_activation != ends:
        has = f"applies {output_activation}" if output_activation in ("softmax", "sigmoid") else f"has no {ends}"
        raise ConfigError(
            f"{loss.name} expects {ends} probabilities but the model's last layer {has}: use {fix}, "
            f"or pass {type(loss).__name__}(from_logits=True) for a model that returns logits."
        )
    if class_weight is None:
        return loss

    def weighted(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        labels = targets if targets.ndim == 1 else targets.argmax(dim=1)
        return (loss.per_sample(logits, targets) * class_weight.to(logits.device)[labels]).mean()

    return weighted


def __getattr__(name: str) -> Any:
    raise missing(__name__, name)
