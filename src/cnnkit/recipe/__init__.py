"""The recipe: what ``cnnkit train`` runs, above the models and the engine.

:mod:`cnnkit.recipe.config` declares the training options (:class:`TrainConfig`, from which
the command line is generated); :mod:`cnnkit.recipe.lr_find` is ``cnnkit lr-find``.
"""

from __future__ import annotations

__all__: list[str] = []
