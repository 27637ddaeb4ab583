"""Bring images to a model's input: channels, size, and the (N, C, H, W) tensor layout."""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
import torch.nn.functional as F

from cnnkit.errors import DataError, ShapeError

__all__ = ["conform", "images_to_tensor"]

# ITU-R 601 luma, the weights PIL uses for its "L" mode.
_LUMA = torch.tensor([0.299, 0.587, 0.114])


def images_to_tensor(images: np.ndarray | torch.Tensor) -> torch.Tensor:
    """Keras-style images ``(N, H, W, C)`` or ``(N, H, W)`` -> float32 ``(N, C, H, W)``.

    For a C-contiguous NumPy array this is a view: the result is stored channels-last,
    which is the layout the engine computes in.
    """
    x = torch.as_tensor(images)
    if x.ndim == 3:  # (N, H, W) grayscale
        x = x[..., None]
    if x.ndim != 4:
        raise ShapeError(f"images must be (N, H, W, C) or (N, H, W), got shape {tuple(x.shape)}")
    if not x.is_floating_point():
        x = x.float()
    elif x.dtype != torch.float32:
        x = x.to(torch.float32)
    return x.permute(0, 3, 1, 2)  # (N, C, H, W), channels-last memory


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
