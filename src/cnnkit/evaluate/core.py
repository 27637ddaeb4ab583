"""Metrics on logits and targets, and batched evaluation of a model.

The same functions compute the engine's per-epoch validation metrics, ``Model.evaluate``
and ``cnnkit evaluate``, so a number means the same thing wherever it is printed.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterable, Iterator
from dataclasses import asdict, dataclass
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.classifier import class_logits, model_pixels
from cnnkit.data.transforms import conform, images_to_tensor
from cnnkit.errors import ConfigError
from cnnkit.kernels import fuse
from cnnkit.runtime import tune_cpu_allocator

__all__ = [
    "METRICS",
    "EvalResult",
    "count_correct",
    "eval_mode",
    "evaluate_arrays",
    "evaluate_tensors",
    "image_logits",
    "predict_logits",
    "resolve_metrics",
]

# Keras metric names -> k of a top-k accuracy (a one-unit model's accuracy is the binary one: see count_correct).
METRICS = {
    "accuracy": 1,
    "acc": 1,
    "binary_accuracy": 1,
    "sparse_categorical_accuracy": 1,
    "categorical_accuracy": 1,
    "top_k_accuracy": 5,
    "sparse_top_k_categorical_accuracy": 5,
    "top_k_categorical_accuracy": 5,
}


def resolve_metrics(metrics: Iterable[Any] | None) -> dict[str, int]:
    """Metric names (or Keras metric objects with a ``name`` and a top-``k``) -> k; unknown names are a clear error."""
    resolved = {}
    for name in metrics or ():
        if not isinstance(name, str) and isinstance(getattr(name, "k", None), int):  # keras.metrics.TopK...(k=3)
            resolved[str(name.name)] = name.k
            continue
        if name not in METRICS:
            raise ConfigError(f"unknown metric {name!r}; cnnkit has: {', '.join(METRICS)}")
        resolved[name] = METRICS[name]
    return resolved


def count_correct(logits: torch.Tensor, targets: torch.Tensor, k: int = 1) -> torch.Tensor:
    """How many rows have their target among the ``k`` highest logits (a 0-d tensor, no host sync).

    A one-unit model (a sigmoid binary classifier) is right where its logit's sign matches the 0/1 target:
    Keras' binary accuracy at threshold 0.5.
    """
    if logits.ndim == 2 and logits.shape[1] == 1:
        return ((logits[:, 0] > 0) == (targets.reshape(-1) > 0.5)).sum()
    if targets.ndim == 2:  # one-hot / soft targets
        targets = targets.argmax(dim=1)
    if k == 1:
        return (logits.argmax(dim=1) == targets).sum()
    k = min(k, logits.shape[1])
    return (logits.topk(k, dim=1).indices == targets[:, None]).any(dim=1).sum()


@contextlib.contextmanager
def eval_mode(model: nn.Module) -> Iterator[None]:
    """Every module of ``model`` in eval mode inside the block, each one's own mode back after it.

    ``model.eval()`` then ``model.train(was)`` costs two walks over the modules, each calling
    ``train()`` on every one (~100 us for the article's CNN, more than its forward on one image):
    this flips the flag only of the modules in training mode, and none at all for a model already
    in eval mode. A model with a module that has its own ``train()`` gets ``model.eval()`` then
    ``model.train(was)``, as before.
    """
    training = [m for m in model.modules() if m.training]
    if not training:
        yield
        return
    if any(type(m).train is not nn.Module.train for m in training):
        was_training = model.training
        model.eval()
        try:
            yield
        finally:
            model.train(was_training)
        return
    # object.__setattr__: what nn.Module.train() sets, without nn.Module.__setattr__'s checks for
    # parameters and submodules (a bool is neither); a property (kernels.Fused's) is still honoured.
    for m in training:
        object.__setattr__(m, "training", False)
    try:
        yield
    finally:
        for m in training:
            object.__setattr__(m, "training", True)


@torch.inference_mode()
def predict_logits(model: nn.Module, x: torch.Tensor, batch_size: int = 256) -> torch.Tensor:
    """Logits ``(N, classes)`` for images ``(N, C, H, W)``, in batches, on the model's device."""
    device = next(model.parameters()).device
    if device.type == "cpu":
        tune_cpu_allocator()
    with eval_mode(model):
        outputs = [model(x[i : i + batch_size].to(device, non_blocking=True)) for i in range(0, len(x), batch_size)]
    if len(outputs) == 1:
        return outputs[0]
    return torch.cat(outputs) if outputs else torch.empty(0)


@torch.inference_mode()
def evaluate_tensors(
    model: nn.Module,
    x: torch.Tensor,
    y: torch.Tensor,
    loss_fn: Callable[[torch.Tensor, torch.Tensor], torch.Tensor],
    metrics: dict[str, int],
    batch_size: int = 256,
) -> dict[str, float]:
    """Mean loss and each metric over ``(x, y)``: ``{"loss": ..., "accuracy": ...}``."""
    logits = predict_logits(model, x, batch_size)
    y = y.to(logits.device)
    results = {"loss": float(loss_fn(logits, y))}
    for name, k in metrics.items():
        results[name] = float(count_correct(logits, y, k)) / max(1, len(y))
    return results


@dataclass(frozen=True)
class EvalResult:
    """What ``cnnkit evaluate`` prints: loss (plain cross-entropy), accuracy and top-k error on ``n`` images.

    ``top_k`` is at most ``classes``; the top-k error only says something when it is smaller
    (:attr:`has_top_k`): with as many guesses as classes every image is "right".
    """

    n: int
    loss: float
    accuracy: float
    top_k: int
    top_k_error: float
    classes: int = 0  # outputs of the model (0: unknown)

    @property
    def has_top_k(self) -> bool:
        """Whether the top-k error is worth printing (k < number of classes)."""
        return self.top_k < self.classes

    @classmethod
    def from_logits(cls, logits: torch.Tensor, labels: torch.Tensor, top_k: int = 5) -> EvalResult:
        """The summary of ``(N, classes)`` logits against ``(N,)`` integer labels."""
        n, classes = max(1, len(labels)), logits.shape[1]
        k = min(top_k, classes)
        return cls(
            n=len(labels),
            loss=float(F.cross_entropy(logits, labels)),
            accuracy=float(count_correct(logits, labels, 1)) / n,
            top_k=k,
            top_k_error=1.0 - float(count_correct(logits, labels, k)) / n,
            classes=classes,
        )

    def to_dict(self) -> dict[str, float]:
        return asdict(self)


def image_logits(model: nn.Module, images: np.ndarray, *, batch_size: int = 256, tta: bool = False) -> torch.Tensor:
    """Float32 CPU logits ``(N, classes)`` of a cnnkit model for NHWC images in [0, 1].

    One per class: a one-unit binary model's two (:func:`cnnkit.classifier.class_logits`).

    Images are first brought to the model's input shape (channels and size), the same
    conversion training used. ``tta`` averages the probabilities of each image and its
    mirror and returns their log, so losses stay comparable.
    """
    x = model_pixels(model, conform(images_to_tensor(images), model.image_shape))  # (N, C, H, W)
    model = fuse(model)  # the C kernels' fast path where it applies
    logits = class_logits(predict_logits(model, x, batch_size).float().cpu())  # (N, classes)
    if tta:
        mirrored = class_logits(predict_logits(model, x.flip(3), batch_size).float().cpu())
        logits = torch.log((logits.softmax(1) + mirrored.softmax(1)) / 2)
    return logits


def evaluate_arrays(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    *,
    batch_size: int = 256,
    top_k: int = 5,
    tta: bool = False,
) -> EvalResult:
    """Loss, accuracy and top-k error of a cnnkit model on NHWC images in [0, 1].

    Images are first brought to the model's input shape (channels and size), the same
    conversion training used. ``tta`` averages the probabilities of each image and its mirror.
    """
    y = torch.as_tensor(labels).long()
    logits = image_logits(model, images, batch_size=batch_size, tta=tta)  # (N, classes)
    return EvalResult.from_logits(logits, y, top_k)
