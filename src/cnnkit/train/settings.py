"""How the engine runs each training step, as one typed, frozen object.

:class:`TrainSettings` is built once by whoever knows the answers (``cnnkit train``'s recipe
from its config, ``Model.fit`` from its defaults) and handed to :func:`cnnkit.train.loop.fit`
or a :class:`~cnnkit.train.loop.Stepper`. Nothing in it says ``"auto"`` except
``channels_last=None``, which ``fit`` resolves from the model it trains.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import TYPE_CHECKING

from cnnkit.data.augment import Augment  # (images, targets) -> the same, augmented on the device
from cnnkit.errors import TrainingError

if TYPE_CHECKING:
    import torch

__all__ = ["PRECISIONS", "Augment", "TrainSettings"]

# name -> the torch dtype autocast runs in, by name: `cnnkit train --help` lists these without importing torch.
PRECISIONS = {"fp32": None, "bf16": "bfloat16", "fp16": "float16"}


@dataclass(frozen=True)
class TrainSettings:
    """The resolved "how" of a training step; the defaults are ``Model.fit``'s.

    Attributes:
        precision: ``fp32``, ``bf16`` (autocast) or ``fp16`` (autocast and a gradient scaler).
        channels_last: store images and convolution weights channels-last, the layout oneDNN
            and cuDNN run fastest; None: whenever the model has 2-D convolutions.
        augment: applied to each training batch and its targets on the device, by the loop before
            each step (see :mod:`cnnkit.data.augment`).
        clip_norm: clip the gradients' global norm to this; None: no clipping.
        compile: run the forward pass through ``torch.compile``.
        accumulate: micro-batches whose gradients are summed before each optimizer step (the
            step then trains on ``accumulate`` times the batch; see :class:`~cnnkit.train.loop.Stepper`).
    """

    precision: str = "fp32"
    channels_last: bool | None = None
    augment: Augment | None = None
    clip_norm: float | None = None
    compile: bool = False
    accumulate: int = 1

    def __post_init__(self) -> None:
        if self.accumulate < 1:
            raise TrainingError(f"accumulate must be at least 1 micro-batch per step, got {self.accumulate}")
        if self.precision not in PRECISIONS:
            raise TrainingError(f"precision must be one of {', '.join(PRECISIONS)}, got {self.precision!r}")

    @property
    def autocast_dtype(self) -> torch.dtype | None:
        """The dtype the forward pass runs in under autocast; None for plain fp32."""
        import torch

        dtype = PRECISIONS[self.precision]
        return None if dtype is None else getattr(torch, dtype)
