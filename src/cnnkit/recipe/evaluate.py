"""What ``cnnkit evaluate`` runs: saved models (files or run folders) on the images they should be judged on.

:func:`evaluate_saved` loads each model, picks the images (a data set's test split, a folder
or CSV, or the run's own test split from its ``split.json``, checked against the recorded
hashes: see :func:`cnnkit.data.saved_split.evaluation_data`), computes the full
:class:`~cnnkit.evaluate.Evaluation`, and with two models compares them on the same images.
It sits above the models (it loads them), which themselves use :mod:`cnnkit.evaluate`.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import dataclass, field
from pathlib import Path

from cnnkit.data.catalog import ImageArrays
from cnnkit.data.saved_split import evaluation_data
from cnnkit.errors import ConfigError
from cnnkit.evaluate import Comparison, Evaluation, compare_models, evaluate_model
from cnnkit.models import load_model
from cnnkit.runs import resolve_model

__all__ = ["SavedEvaluation", "evaluate_saved"]


@dataclass(frozen=True)
class SavedEvaluation:
    """Each model's evaluation, on which images, and (for two models) their comparison."""

    models: list[str]  # as given: model files or run folders
    where: str  # the images, e.g. "digits test split" or "the run's test split of photos/"
    evaluations: list[Evaluation]
    comparison: Comparison | None = None  # model A against model B
    plots: list[Path] = field(default_factory=list)  # confusion.png, reliability.png, mistakes.png


def evaluate_saved(
    models: Sequence[str | os.PathLike],
    *,
    data: str | None = None,
    data_dir: str | None = None,
    top_k: int = 5,
    batch_size: int = 256,
    plots_dir: str | os.PathLike | None = None,
) -> SavedEvaluation:
    """Evaluate one saved model, or compare two on the same images.

    ``data`` is a registered name, a folder or a CSV; None means the run's own test split
    (the first model's run, for both models of a comparison). ``plots_dir``: write the
    evaluation's plots there (one model only).
    """
    if len(models) not in (1, 2):
        raise ConfigError(f"evaluate one model, or two to compare them; got {len(models)}")
    first_run = None  # with two models, "the run's own test split" is model A's, for both models
    evaluations, where, images = [], "", None
    for path in models:
        model_path = resolve_model(path).model_file("evaluate the .safetensors model file it came from")
        model = load_model(model_path)
        own_run = model_path.parent if (model_path.parent / "split.json").exists() else None
        arrays, where = evaluation_data(data, class_names=list(model.class_names or []) or None,
                                        input_shape=model.image_shape, run_dir=first_run or own_run,
                                        data_dir=data_dir)  # fmt: skip
        first_run = first_run or own_run
        evaluations.append(evaluate_model(model, arrays.images, arrays.labels, batch_size=batch_size, top_k=top_k))
        images = arrays
    names = [str(m) for m in models]
    if len(evaluations) == 2:
        return SavedEvaluation(names, where, evaluations, compare_models(*evaluations))
    plots = _plots(evaluations[0], images, plots_dir) if plots_dir is not None and images is not None else []
    return SavedEvaluation(names, where, evaluations, plots=plots)


def _plots(evaluation: Evaluation, arrays: ImageArrays, out: str | os.PathLike) -> list[Path]:
    from cnnkit.report.plots import write_evaluation_plots  # matplotlib: only when plots are asked for

    return [Path(p) for p in write_evaluation_plots(evaluation, arrays.images, out)]
