"""Augmentation on the device, a whole batch at a time (no per-image Python).

Policies by name: ``none``, ``crop`` (pad by 2 px and crop back: small shifts, for digits
where a flip would change the class), ``flip-crop`` (also mirror half the batch, for
faces and natural images).
"""

from __future__ import annotations

from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError

__all__ = ["AUGMENTATIONS", "make_augment", "random_crop", "random_flip"]

Augment = Callable[[torch.Tensor], torch.Tensor]


def random_crop(x: torch.Tensor, pad: int) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels in each direction, filling with zeros."""
    b, c, h, w = x.shape
    padded = F.pad(x, (pad, pad, pad, pad))  # (B, C, H + 2p, W + 2p)
    dy = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    dx = torch.randint(0, 2 * pad + 1, (b,), device=x.device)
    rows = dy[:, None] + torch.arange(h, device=x.device)  # (B, H)
    cols = dx[:, None] + torch.arange(w, device=x.device)  # (B, W)
    batch = torch.arange(b, device=x.device)[:, None, None, None]
    channel = torch.arange(c, device=x.device)[None, :, None, None]
    return padded[batch, channel, rows[:, None, :, None], cols[:, None, None, :]]  # (B, C, H, W)


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


AUGMENTATIONS: dict[str, Augment | None] = {
    "none": None,
    "crop": lambda x: random_crop(x, 2),
    "flip-crop": lambda x: random_crop(random_flip(x), 2),
}


def make_augment(name: str) -> Augment | None:
    """The augmentation called ``name`` (``None`` for ``none``)."""
    if name not in AUGMENTATIONS:
        raise ConfigError(f"unknown augmentation {name!r}; choose one of: {', '.join(AUGMENTATIONS)}")
    return AUGMENTATIONS[name]
