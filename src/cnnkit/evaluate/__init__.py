"""Metrics on logits and targets, batched evaluation of a model, and comparing two models.

The same functions compute the engine's per-epoch validation metrics, ``Model.evaluate``
and ``cnnkit evaluate``, so a number means the same thing wherever it is printed.

- :mod:`~cnnkit.evaluate.core`: logits in batches, top-k counts, loss/accuracy/top-k error
  (:func:`evaluate_arrays` -> :class:`EvalResult`), used by the training engine.
- :mod:`~cnnkit.evaluate.metrics`: the full report (:func:`classification_metrics` ->
  :class:`Evaluation`): per-class precision/recall/F1, confusion matrix, calibration.
- :mod:`~cnnkit.evaluate.compare`: paired bootstrap interval and McNemar's test.
"""

from __future__ import annotations

from cnnkit.evaluate.compare import Comparison, compare_predictions
from cnnkit.evaluate.core import (
    METRICS,
    EvalResult,
    count_correct,
    eval_mode,
    evaluate_arrays,
    evaluate_tensors,
    image_logits,
    predict_logits,
    resolve_metrics,
)
from cnnkit.evaluate.evaluation import compare_models, evaluate_model
from cnnkit.evaluate.metrics import (
    Calibration,
    ClassMetrics,
    ConfusedPair,
    Evaluation,
    calibration,
    classification_metrics,
)

__all__ = [
    "METRICS",
    "Calibration",
    "ClassMetrics",
    "Comparison",
    "ConfusedPair",
    "EvalResult",
    "Evaluation",
    "calibration",
    "classification_metrics",
    "compare_models",
    "compare_predictions",
    "count_correct",
    "evaluate_arrays",
    "evaluate_model",
    "eval_mode",
    "evaluate_tensors",
    "image_logits",
    "predict_logits",
    "resolve_metrics",
]
