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

from cnnkit.recipe.config import TrainConfig
from cnnkit.recipe.evaluate import SavedEvaluation, evaluate_saved
from cnnkit.recipe.run import TrainResult, train

__all__ = ["SavedEvaluation", "TrainConfig", "TrainResult", "evaluate_saved", "train"]
