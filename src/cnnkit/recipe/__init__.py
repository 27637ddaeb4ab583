"""The recipe: what ``cnnkit train`` runs, above the models and the engine.

``train(TrainConfig(...))`` opens the data, builds the model (:mod:`~cnnkit.recipe.build`),
trains it with the engine (:mod:`cnnkit.train`), fine-tunes pretrained weights the fastai way
(:mod:`~cnnkit.recipe.finetune`), and writes the run folder (:mod:`~cnnkit.recipe.run`);
:mod:`~cnnkit.recipe.config` declares the training options (:class:`TrainConfig`, from which the
command line is generated); :mod:`~cnnkit.recipe.lr_find` is ``cnnkit lr-find``;
``evaluate_saved(...)`` is what ``cnnkit evaluate`` runs on saved models (:mod:`~cnnkit.recipe.evaluate`).
Layers point down: the recipe imports the models and the engine; neither imports the recipe.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnkit._lazy import lazy_names

if TYPE_CHECKING:
    from cnnkit.recipe.config import TrainConfig
    from cnnkit.recipe.evaluate import SavedEvaluation, evaluate_saved
    from cnnkit.recipe.run import TrainResult, train

# Public name -> the module that has it, loaded on first use: importing any of this package's modules
# runs this file, and `run` brings the report and matplotlib (0.6 s), which `cnnkit evaluate` and
# `cnnkit train --help` (`config` alone) never use.
_LAZY = {
    "TrainConfig": "cnnkit.recipe.config",
    "SavedEvaluation": "cnnkit.recipe.evaluate",
    "evaluate_saved": "cnnkit.recipe.evaluate",
    "TrainResult": "cnnkit.recipe.run",
    "train": "cnnkit.recipe.run",
}

__all__ = ["SavedEvaluation", "TrainConfig", "TrainResult", "evaluate_saved", "train"]


__getattr__ = lazy_names(__name__, _LAZY)
