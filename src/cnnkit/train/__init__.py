"""The training engine: the loop behind ``Model.fit`` and ``cnnkit train``, and what it runs on.

:func:`fit` (:mod:`~cnnkit.train.loop`) trains any module that returns logits, stepping as its
:class:`TrainSettings` say; Keras-style :mod:`~cnnkit.train.optimizers`,
:mod:`~cnnkit.train.losses` and :mod:`~cnnkit.train.callbacks`; the weight average
(:mod:`~cnnkit.train.ema`), resumable checkpoints (:mod:`~cnnkit.train.checkpoint`) and
torchrun (:mod:`~cnnkit.train.distributed`). The engine knows nothing of the models built on
it nor of the run recipe (:mod:`cnnkit.recipe`) above them.
"""

from __future__ import annotations

from cnnkit.train import callbacks, checkpoint, distributed, ema, loop, losses, optimizers, progress, settings
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
    "optimizers",
    "progress",
    "settings",
]
