"""``keras.metrics`` for ``compile(metrics=[...])``: the accuracies, by name or as objects.

Each is counted on the device by :func:`cnnkit.evaluate.core.count_correct` (top-``k`` of the
logits, or a one-unit model's sign), the same count ``fit``'s logs, ``evaluate`` and ``cnnkit
evaluate`` print. Keras' other metrics are one clear error naming what to use instead.
"""

from __future__ import annotations

from typing import Any

from cnnkit._keras_names import missing
from cnnkit.errors import ConfigError

__all__ = [
    "Accuracy",
    "BinaryAccuracy",
    "CategoricalAccuracy",
    "Metric",
    "SparseCategoricalAccuracy",
    "SparseTopKCategoricalAccuracy",
    "TopKCategoricalAccuracy",
]


class Metric:
    """A metric ``compile`` takes: its log ``name`` and the ``k`` of the top-k accuracy it counts."""

    default_name = "accuracy"

    def __init__(self, name: str | None = None, dtype: Any = None, k: int = 1) -> None:
        del dtype  # computed in float32
        if not isinstance(k, int) or k < 1:
            raise ConfigError(f"{type(self).__name__}: k must be a positive whole number, got {k!r}")
        self.name, self.k = name or self.default_name, k


class Accuracy(Metric):
    """``accuracy``: the top class (or, for a one-unit sigmoid model, the 0.5 threshold) matches the label."""


class SparseCategoricalAccuracy(Metric):
    default_name = "sparse_categorical_accuracy"


class CategoricalAccuracy(Metric):
    default_name = "categorical_accuracy"


class BinaryAccuracy(Metric):
    """A one-unit sigmoid model's accuracy at ``threshold`` 0.5 (the only one cnnkit counts)."""

    default_name = "binary_accuracy"

    def __init__(self, name: str | None = None, dtype: Any = None, threshold: float = 0.5) -> None:
        if threshold != 0.5:
            raise ConfigError("BinaryAccuracy counts at threshold=0.5 (the logit's sign) only")
        super().__init__(name, dtype)


class TopKCategoricalAccuracy(Metric):
    default_name = "top_k_categorical_accuracy"

    def __init__(self, k: int = 5, name: str | None = None, dtype: Any = None) -> None:
        super().__init__(name, dtype, k)


class SparseTopKCategoricalAccuracy(TopKCategoricalAccuracy):
    default_name = "sparse_top_k_categorical_accuracy"


def __getattr__(name: str) -> Any:
    raise missing(__name__, name)
