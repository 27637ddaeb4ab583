"""``cnnkit lr-find``: the learning-rate range test on a configured model and data, and its plot.

:func:`find_learning_rate` builds the model and the training data as ``cnnkit train`` would
(from a :class:`~cnnkit.recipe.config.TrainConfig`), sweeps the rate with the engine's
:func:`~cnnkit.train.lr_find.lr_find`, and plots the loss against the rate.
"""

from __future__ import annotations

import os
import re
from dataclasses import dataclass
from datetime import datetime
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from cnnkit.data.prepare import training_data
from cnnkit.recipe.build import build_model, make_optimizer, training_tensors
from cnnkit.recipe.config import TrainConfig
from cnnkit.report.plots import save_figure
from cnnkit.runtime import resolve_device, seed_everything
from cnnkit.train import losses
from cnnkit.train.lr_find import LRFindResult, lr_find

__all__ = ["LRFinding", "find_learning_rate", "plot_lr_find"]


@dataclass(frozen=True)
class LRFinding:
    """The sweep, the rate at its lowest loss, and where its plot went."""

    sweep: LRFindResult
    lowest: float
    plot: Path

    @property
    def suggestion(self) -> float:
        """The suggested peak learning rate (fastai's "valley")."""
        return self.sweep.suggestion


def find_learning_rate(config: TrainConfig, *, steps: int = 100,
                       plot: str | os.PathLike | None = None) -> LRFinding:  # fmt: skip
    """Sweep the learning rate over at most ``steps`` batches of ``config``'s model and data; plot it.

    Every training image takes part (no validation split); the model starts as ``cnnkit train``'s
    would. The plot goes to ``plot``, by default ``<runs_dir>/lr-find-<model>-<data>-<time>.png``
    (next to the runs it is for, never into the working directory).
    """
    config = config.replace(val_split=0.0)
    generator = seed_everything(config.seed)
    prepared = training_data(config)
    model = build_model(config, prepared.dataset).to(resolve_device(config.device))
    train_set, _ = training_tensors(prepared, model)
    loss = losses.SparseCategoricalCrossentropy()
    sweep = lr_find(model, train_set, loss, make_optimizer(config, model), steps=steps,
                    batch_size=config.batch_size, generator=generator)  # fmt: skip
    lowest = sweep.lrs[int(np.argmin(sweep.losses))]
    if plot is None:
        stem = f"lr-find-{Path(config.model).stem}-{prepared.dataset.name}-{datetime.now():%Y%m%d-%H%M%S}"
        plot = Path(config.runs_dir) / (re.sub(r"[^\w.-]", "_", stem) + ".png")
        Path(plot).parent.mkdir(parents=True, exist_ok=True)
    return LRFinding(sweep, lowest, plot_lr_find(sweep, plot))


def plot_lr_find(result: LRFindResult, path: str | os.PathLike) -> Path:
    """Loss against learning rate (log scale), the suggestion marked."""
    fig = Figure(figsize=(6, 4))
    ax = fig.subplots()
    ax.plot(result.lrs, result.losses)
    ax.axvline(result.suggestion, color="tab:red", linestyle="--", label=f"suggested lr {result.suggestion:.2g}")
    ax.set_xscale("log")
    ax.set_xlabel("learning rate")
    ax.set_ylabel("loss (smoothed)")
    ax.set_title("learning-rate finder")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    return save_figure(fig, path)
