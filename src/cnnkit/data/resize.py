"""Bring ``(N, C, H, W)`` image tensors to a model's channels and size: the one resize cnnkit does.

Its own module (the only one of the decoding path that needs torch), so that
:mod:`cnnkit.data.inputs` can decode files to a model's input without importing torch when
the images are already the model's size.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch
import torch.nn.functional as F

from cnnkit.errors import DataError

__all__ = ["conform"]

# ITU-R 601 luma, the weights PIL uses for its "L" mode.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def conform(x: torch.Tensor, input_shape: Sequence[int | None]) -> torch.Tensor:
    """Convert ``(N, C, H, W)`` images to the model's ``input_shape`` ``(H, W, C)``.

    Grey becomes RGB by repetition and RGB becomes grey by luma; the size changes by
    antialiased bilinear resizing. Images already in shape pass through untouched.
    """
    height, width, channels = input_shape
    if x.shape[1] != channels:
        if x.shape[1] == 3 and channels == 1:
            x = torch.einsum("nchw,c->nhw", x, _LUMA.to(x))[:, None]
        elif x.shape[1] == 1 and channels == 3:
            x = x.expand(-1, 3, -1, -1)
        else:
            raise DataError(f"cannot convert {x.shape[1]}-channel images to the model's {channels} channels")
    size = (height or x.shape[2], width or x.shape[3])
    if tuple(x.shape[2:]) != size:
        x = F.interpolate(x, size=size, mode="bilinear", align_corners=False, antialias=True)
    return x
