"""``cnnkit tune``: Optuna's search over the training options, each trial a ``cnnkit train`` run.

:func:`tune` runs the study (:mod:`~cnnkit.recipe.tune.study`) over a search space
(:mod:`~cnnkit.recipe.tune.space`); :class:`TuneConfig` declares the search's own options
(:mod:`~cnnkit.recipe.tune.config`).
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnkit._lazy import lazy_names
from cnnkit.recipe.tune.config import PRUNERS, TuneConfig

if TYPE_CHECKING:
    from cnnkit.recipe.tune.space import Space, default_space, load_space
    from cnnkit.recipe.tune.study import Pruning, TuneResult, tune

# Public name -> its module, loaded on first use: the space and the study import Optuna, the study the
# whole recipe (torch), which `cnnkit tune --help` (the options above) does not need.
_LAZY = {name: "cnnkit.recipe.tune.space" for name in ("Space", "default_space", "load_space")}
_LAZY.update({name: "cnnkit.recipe.tune.study" for name in ("Pruning", "TuneResult", "tune")})

__all__ = ["PRUNERS", "Pruning", "Space", "TuneConfig", "TuneResult", "default_space", "load_space", "tune"]


__getattr__ = lazy_names(__name__, _LAZY)
