"""A model on labelled images: the full :class:`~cnnkit.evaluate.metrics.Evaluation`, or two models compared."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
from torch import nn

from cnnkit.errors import DataError
from cnnkit.evaluate.compare import Comparison, compare_predictions
from cnnkit.evaluate.core import image_logits
from cnnkit.evaluate.metrics import Evaluation, classification_metrics

__all__ = ["compare_models", "evaluate_model"]


def evaluate_model(
    model: nn.Module,
    images: np.ndarray,
    labels: np.ndarray,
    class_names: Sequence[str] | None = None,
    *,
    batch_size: int = 256,
    top_k: int = 5,
    bins: int = 15,
    tta: bool = False,
) -> Evaluation:
    """Every metric of a cnnkit model on NHWC images in [0, 1] (brought to its input shape first).

    ``class_names`` default to the model's own; ``tta`` averages each image with its mirror,
    as ``evaluate_arrays`` (and a run trained with ``tta``) does.
    """
    logits = image_logits(model, images, batch_size=batch_size, tta=tta)  # (N, classes)
    names = class_names or getattr(model, "class_names", None)
    return classification_metrics(logits, labels, names, top_k=top_k, bins=bins)


def compare_models(
    a: Evaluation, b: Evaluation, *, confidence: float = 0.95, resamples: int = 10_000, seed: int = 0
) -> Comparison:
    """Model A against model B from their evaluations on the same images."""
    if len(a.labels) != len(b.labels) or not np.array_equal(a.labels, b.labels):
        raise DataError("the two evaluations are not on the same labelled images")
    return compare_predictions(a.correct, b.correct, confidence=confidence, resamples=resamples, seed=seed)
