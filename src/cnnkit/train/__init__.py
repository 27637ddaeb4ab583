"""The training engine: the loop behind ``Model.fit`` and ``cnnkit train``, and what it runs on.

:func:`fit` (:mod:`~cnnkit.train.loop`) trains any module that returns logits, stepping as its
:class:`TrainSettings` say; Keras-style :mod:`~cnnkit.train.optimizers`,
:mod:`~cnnkit.train.losses` and :mod:`~cnnkit.train.callbacks`; the weight average
(:mod:`~cnnkit.train.ema`), resumable checkpoints (:mod:`~cnnkit.train.checkpoint`) and
torchrun (:mod:`~cnnkit.train.distributed`). The engine knows nothing of the models built on
it nor of the run recipe (:mod:`cnnkit.recipe`) above them.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from cnnkit._lazy import lazy_names

# Every name below is loaded on first use: importing any module of the engine runs this file, and the
# loop brings torch (1.5 s), which the names `cnnkit train --help` lists (optimizers, schedules,
# precisions) never need. They are imported here for the type checkers and for the import graph that
# tests/test_architecture.py checks for cycles: a lazy name is still a dependency.
if TYPE_CHECKING:
    from cnnkit.train import (
        callbacks,
        checkpoint,
        distributed,
        ema,
        loop,
        losses,
        lr_schedule,
        optimizers,
        progress,
        settings,
    )
    from cnnkit.train.loop import fit
    from cnnkit.train.settings import TrainSettings


__all__ = [
    "TrainSettings",
    "callbacks",
    "checkpoint",
    "distributed",
    "ema",
    "fit",
    "loop",
    "losses",
    "lr_schedule",
    "optimizers",
    "progress",
    "settings",
]


# name -> its module (a submodule: itself)
_LAZY = {"fit": "cnnkit.train.loop", "TrainSettings": "cnnkit.train.settings"}
_LAZY.update({name: f"{__name__}.{name}" for name in __all__ if name not in _LAZY})
__getattr__ = lazy_names(__name__, _LAZY)
