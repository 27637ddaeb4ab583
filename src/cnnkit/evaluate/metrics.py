"""How good a classifier really is, from its logits on labelled images.

:func:`classification_metrics` turns ``(N, classes)`` logits and ``(N,)`` labels into an
:class:`Evaluation`: loss, accuracy and top-k error (the ImageNet metric), per-class
precision/recall/F1/support and the confusion matrix (scikit-learn does that arithmetic),
the most confused pairs, calibration (expected calibration error over equal-width
confidence bins, Guo et al. 2017) and each image's loss, so the worst mistakes can be shown.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import asdict, dataclass, field
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.errors import DataError, ShapeError
from cnnkit.evaluate.core import EvalResult

__all__ = ["Calibration", "ClassMetrics", "ConfusedPair", "Evaluation", "calibration", "classification_metrics"]


@dataclass(frozen=True)
class ClassMetrics:
    """One row of the per-class table."""

    name: str
    precision: float
    recall: float
    f1: float
    support: int


@dataclass(frozen=True)
class ConfusedPair:
    """``count`` images of class ``true`` were predicted as ``predicted`` (``rate`` of that class)."""

    true: str
    predicted: str
    count: int
    rate: float


@dataclass(frozen=True)
class Calibration:
    """Reliability: per confidence bin, how often the prediction was right; ECE is the weighted gap."""

    ece: float
    edges: list[float]  # bins+1 edges over [0, 1]
    confidence: list[float | None]  # mean confidence per bin (None: empty bin)
    accuracy: list[float | None]  # accuracy per bin
    count: list[int]


@dataclass(frozen=True)
class Evaluation:
    """Everything ``cnnkit evaluate`` reports about a model on labelled images."""

    summary: EvalResult
    class_names: list[str]
    per_class: list[ClassMetrics]
    macro: dict[str, float]
    weighted: dict[str, float]
    confusion: np.ndarray  # (classes, classes): rows are true classes, columns predictions
    calibration: Calibration
    labels: np.ndarray = field(repr=False)  # (N,)
    probabilities: np.ndarray = field(repr=False)  # (N, classes)
    losses: np.ndarray = field(repr=False)  # (N,): each image's cross-entropy

    @property
    def predictions(self) -> np.ndarray:
        return self.probabilities.argmax(axis=1)

    @property
    def correct(self) -> np.ndarray:
        """``(N,)`` bool: which images the model got right."""
        return self.predictions == self.labels

    @property
    def confusion_normalized(self) -> np.ndarray:
        """Each row divided by its class's count (recall on the diagonal); empty rows stay 0."""
        rows = self.confusion.sum(axis=1, keepdims=True)
        return np.divide(self.confusion, rows, out=np.zeros(self.confusion.shape), where=rows > 0)

    def most_confused(self, n: int = 5) -> list[ConfusedPair]:
        """The ``n`` largest off-diagonal cells of the confusion matrix (ties: true class, then predicted)."""
        off = self.confusion.copy()
        np.fill_diagonal(off, 0)
        order = sorted(zip(*np.nonzero(off)), key=lambda ij: (-off[ij], ij[0], ij[1]))[:n]
        rates = self.confusion_normalized
        return [
            ConfusedPair(self.class_names[i], self.class_names[j], int(off[i, j]), float(rates[i, j])) for i, j in order
        ]

    def worst(self, n: int = 16) -> np.ndarray:
        """Indices of the ``n`` images with the highest loss, worst first."""
        return np.argsort(-self.losses, kind="stable")[:n]

    def to_dict(self, *, confused: int = 10, worst: int = 10) -> dict[str, Any]:
        """JSON-able: the summary's keys at the top level, then the details."""
        predictions = self.predictions
        return {
            **self.summary.to_dict(),
            "per_class": [asdict(row) for row in self.per_class],
            "macro_avg": self.macro,
            "weighted_avg": self.weighted,
            "confusion_matrix": {"classes": self.class_names, "counts": self.confusion.tolist()},
            "most_confused": [asdict(pair) for pair in self.most_confused(confused)],
            "calibration": asdict(self.calibration),
            "highest_loss": [
                {
                    "index": int(i),
                    "true": self.class_names[self.labels[i]],
                    "predicted": self.class_names[predictions[i]],
                    "probability": float(self.probabilities[i, predictions[i]]),
                    "loss": float(self.losses[i]),
                }
                for i in self.worst(worst)
            ],
        }


def calibration(probabilities: np.ndarray, labels: np.ndarray, bins: int = 15) -> Calibration:
    """Expected calibration error of the top-1 confidence over ``bins`` equal-width bins of (0, 1].

    ``ECE = sum_b |B_b| / N * |accuracy(B_b) - confidence(B_b)|``; bin ``b`` holds
    confidences in ``(b/bins, (b+1)/bins]``.
    """
    confidence = probabilities.max(axis=1)  # (N,)
    correct = probabilities.argmax(axis=1) == labels  # (N,)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.ceil(confidence * bins).astype(int) - 1, 0, bins - 1)  # right-closed bins
    count = np.bincount(which, minlength=bins)
    conf_sum = np.bincount(which, weights=confidence, minlength=bins)
    acc_sum = np.bincount(which, weights=correct.astype(float), minlength=bins)
    filled = count > 0
    gaps = np.abs(acc_sum[filled] - conf_sum[filled])  # |sum correct - sum confidence| per bin
    return Calibration(
        ece=float(gaps.sum() / max(1, len(labels))),
        edges=edges.tolist(),
        confidence=[float(s / c) if c else None for s, c in zip(conf_sum, count)],
        accuracy=[float(s / c) if c else None for s, c in zip(acc_sum, count)],
        count=count.tolist(),
    )


def _averages(per_class: list[ClassMetrics]) -> tuple[dict[str, float], dict[str, float]]:
    support = np.array([row.support for row in per_class], dtype=float)
    macro, weighted = {}, {}
    for key in ("precision", "recall", "f1"):
        values = np.array([getattr(row, key) for row in per_class])
        macro[key] = float(values.mean())
        weighted[key] = float((values * support).sum() / support.sum()) if support.sum() else 0.0
    return macro, weighted


def _confusion_matrix(labels: np.ndarray, predicted: np.ndarray, classes: int) -> np.ndarray:
    """``(classes, classes)`` counts: row = true class, column = predicted (scikit-learn's layout)."""
    return np.bincount(labels * classes + predicted, minlength=classes * classes).reshape(classes, classes)


def _per_class_scores(confusion: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """Precision, recall, F1 and support per class from a confusion matrix, 0 where a ratio has
    nothing to divide by (scikit-learn's ``precision_recall_fscore_support(zero_division=0)``;
    computed here because importing scikit-learn costs 1.5 s at the end of every run)."""
    true_positives = np.diag(confusion).astype(float)
    support, predicted = confusion.sum(axis=1), confusion.sum(axis=0)

    def ratio(top: np.ndarray, bottom: np.ndarray) -> np.ndarray:
        return np.divide(top, bottom, out=np.zeros_like(top), where=bottom > 0)

    f1 = ratio(2 * true_positives, (support + predicted).astype(float))  # 2TP / (2TP + FP + FN)
    return ratio(true_positives, predicted.astype(float)), ratio(true_positives, support.astype(float)), f1, support


def classification_metrics(
    logits: np.ndarray | torch.Tensor,
    labels: np.ndarray | torch.Tensor,
    class_names: Sequence[str] | None = None,
    *,
    top_k: int = 5,
    bins: int = 15,
) -> Evaluation:
    """The full :class:`Evaluation` of ``(N, classes)`` logits against ``(N,)`` integer labels."""
    logits_t = torch.as_tensor(np.asarray(logits), dtype=torch.float32)  # (N, classes)
    labels_t = torch.as_tensor(np.asarray(labels)).long()  # (N,)
    if logits_t.ndim != 2 or labels_t.ndim != 1 or len(logits_t) != len(labels_t) or len(labels_t) == 0:
        raise ShapeError(
            f"need (N, classes) logits and (N,) labels, got {tuple(logits_t.shape)} and {tuple(labels_t.shape)}"
        )
    classes = logits_t.shape[1]
    names = list(class_names) if class_names else [str(i) for i in range(classes)]
    if len(names) != classes:
        raise DataError(f"{len(names)} class names for {classes} model outputs")
    if int(labels_t.min()) < 0 or int(labels_t.max()) >= classes:
        raise DataError(f"labels must be in 0..{classes - 1}, got {int(labels_t.min())}..{int(labels_t.max())}")

    losses = F.cross_entropy(logits_t, labels_t, reduction="none")  # (N,)
    summary = EvalResult.from_logits(logits_t, labels_t, top_k)
    probabilities = torch.softmax(logits_t, dim=1).numpy()
    y, predicted = labels_t.numpy(), probabilities.argmax(axis=1)
    confusion = _confusion_matrix(y, predicted, classes)
    precision, recall, f1, support = _per_class_scores(confusion)
    per_class = [
        ClassMetrics(name, float(p), float(r), float(f), int(s))
        for name, p, r, f, s in zip(names, precision, recall, f1, support)
    ]
    macro, weighted = _averages(per_class)
    return Evaluation(
        summary=summary,
        class_names=names,
        per_class=per_class,
        macro=macro,
        weighted=weighted,
        confusion=confusion,
        calibration=calibration(probabilities, y, bins),
        labels=y,
        probabilities=probabilities,
        losses=losses.numpy(),
    )
