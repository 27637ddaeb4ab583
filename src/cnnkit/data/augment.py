"""Augmentation on the device, a whole batch at a time (no per-image Python).

A policy is a ``+``-joined list of operations, applied in this order:

- ``flip``: mirror a random half of the batch left-right (never for digits or text);
- ``affine``: small random rotation (±10°), scale (±10%) and shear, one matrix per image;
- ``crop``: pad by 2 px and crop back at a random offset (shifts of up to 2 px);
- ``cutout``: zero one random 8x8-ish square per image (a quarter of the side);
- ``none``: nothing.

E.g. ``"crop+affine"`` for digits, ``"flip+crop+cutout"`` for CIFAR-like photos.
"""

from __future__ import annotations

import math
from collections.abc import Callable

import torch
import torch.nn.functional as F

from cnnkit.errors import ConfigError

__all__ = ["OPERATIONS", "make_augment", "random_affine", "random_crop", "random_cutout", "random_flip"]

Augment = Callable[[torch.Tensor], torch.Tensor]


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_crop(x: torch.Tensor, pad: int = 2) -> torch.Tensor:
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


def random_affine(x: torch.Tensor, degrees: float = 10.0, scale: float = 0.1, shear: float = 0.1) -> torch.Tensor:
    """Rotate, scale and shear each image a little about its centre (bilinear, zero fill)."""
    b = x.shape[0]
    angle = (torch.rand(b, device=x.device) * 2 - 1) * math.radians(degrees)
    zoom = 1 + (torch.rand(b, device=x.device) * 2 - 1) * scale
    skew = (torch.rand(b, device=x.device) * 2 - 1) * shear
    cos, sin = torch.cos(angle) / zoom, torch.sin(angle) / zoom
    zero = torch.zeros_like(cos)
    # Rows of the (B, 2, 3) sampling matrices that affine_grid maps output -> input coordinates.
    theta = torch.stack([torch.stack([cos, -sin + skew, zero], 1), torch.stack([sin, cos, zero], 1)], 1)
    grid = F.affine_grid(theta, list(x.shape), align_corners=False)
    return F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)


def random_cutout(x: torch.Tensor, fraction: float = 0.25) -> torch.Tensor:
    """Zero one square of side ``fraction`` x the image side at a random place in each image."""
    b, _, h, w = x.shape
    size = max(1, round(fraction * min(h, w)))
    top = torch.randint(0, h - size + 1, (b, 1, 1), device=x.device)
    left = torch.randint(0, w - size + 1, (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    hole = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)  # (B, H, W)
    return x.masked_fill(hole[:, None], 0.0)


OPERATIONS: dict[str, Augment] = {
    "flip": random_flip,
    "affine": random_affine,
    "crop": random_crop,
    "cutout": random_cutout,
}
_ALIASES = {"flip-crop": "flip+crop"}


def make_augment(policy: str) -> Augment | None:
    """The augmentation for a policy such as ``"flip+crop"`` (``None`` for ``"none"``)."""
    policy = _ALIASES.get(policy, policy)
    if policy == "none":
        return None
    names = policy.split("+")
    unknown = [name for name in names if name not in OPERATIONS]
    if unknown or not names:
        raise ConfigError(f"unknown augmentation {policy!r}; combine {', '.join(OPERATIONS)} with '+', or 'none'")
    ordered = [OPERATIONS[name] for name in OPERATIONS if name in names]  # a fixed, sensible order

    def augment(x: torch.Tensor) -> torch.Tensor:
        for operation in ordered:
            x = operation(x)
        return x

    return augment
