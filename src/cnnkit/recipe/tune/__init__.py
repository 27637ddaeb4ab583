"""``cnnkit tune``: Optuna's search over the training options, each trial a ``cnnkit train`` run.

:func:`tune` runs the study (:mod:`~cnnkit.recipe.tune.study`) over a search space
(:mod:`~cnnkit.recipe.tune.space`); :class:`TuneConfig` declares the search's own options.
"""

from __future__ import annotations

from cnnkit.recipe.tune.space import Space, default_space, load_space
from cnnkit.recipe.tune.study import PRUNERS, Pruning, TuneConfig, TuneResult, tune

__all__ = ["PRUNERS", "Pruning", "Space", "TuneConfig", "TuneResult", "default_space", "load_space", "tune"]
