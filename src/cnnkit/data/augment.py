"""Augmentation on the device, a whole batch at a time: the one registry of augmentations.

A policy is a ``+``-joined list of registered operations (:data:`AUGMENTATIONS`), applied in
the registry's order whatever order the policy names them in:

- ``flip``, ``crop``, ``affine``: geometry, one random draw per image (vectorized, cnnkit's);
- ``randaugment``, ``trivialaugment``, ``jitter``: torchvision's ``transforms.v2`` policies and
  colour jitter;
- ``cutout``, ``erase``: a hole per image (cnnkit's square; torchvision's random erasing);
- ``mixup``, ``cutmix``: torchvision's label mixing; the targets become soft ``(B, classes)``
  (with both, each batch takes one of the two at random);
- ``none``: nothing.

Every operation maps ``(images, targets) -> (images, targets)``: images ``(B, C, H, W)`` in
[0, 1] on the device, targets class indices ``(B,)`` or probabilities ``(B, classes)``. Image
operations pass the targets through; mixing operations return soft targets, which the loss
takes as they are (``F.cross_entropy`` with label smoothing on top) and the training accuracy
counts by their dominant class (see :func:`cnnkit.evaluate.count_correct`).

torchvision's transforms draw one set of random parameters per call, so calling one on a
whole batch would give every image the same operation; cnnkit calls it on :data:`GROUPS` slices
of the batch instead (``GROUPS`` draws per batch, at about the cost of one call: per-image
calls cost 10-50x more, see ``benchmarks/augment_bench.py``). Colour operations follow
torchvision's rule for 1-channel (grey) images: saturation and hue leave them unchanged;
brightness, contrast and RandAugment's other operations apply as usual.

E.g. ``"crop+affine"`` for digits, ``"flip+crop+randaugment+mixup"`` for photos.
:func:`apply_policy` applies a policy to one batch (what ``show-batch`` previews).

The operations import torch when they first run, not with this module: ``cnnkit train --help``
lists the registry's names (``--augment``) without paying for torch's import.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable
from dataclasses import dataclass
from types import ModuleType
from typing import TYPE_CHECKING

from cnnkit.errors import ConfigError

if TYPE_CHECKING:
    import torch
    from torchvision.transforms import v2

__all__ = [
    "AUGMENTATIONS",
    "GROUPS",
    "Augment",
    "Augmentation",
    "apply_policy",
    "in_groups",
    "make_augment",
    "parse_policy",
    "random_affine",
    "random_crop",
    "random_cutout",
    "random_flip",
    "register_augmentation",
]

Augment = Callable[["torch.Tensor", "torch.Tensor"], tuple["torch.Tensor", "torch.Tensor"]]  # (images, targets) -> same
GROUPS = 8  # slices of a batch that each get their own draw of a torchvision transform's parameters


def random_flip(x: torch.Tensor) -> torch.Tensor:
    """Mirror a random half of the batch left-right."""
    import torch

    flip = torch.rand(x.shape[0], device=x.device) < 0.5
    return torch.where(flip[:, None, None, None], x.flip(3), x)


def random_crop(x: torch.Tensor, pad: int = 2) -> torch.Tensor:
    """Shift each image by up to ``pad`` pixels in each direction, filling with zeros."""
    import torch
    import torch.nn.functional as F

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
    import torch
    import torch.nn.functional as F

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
    import torch

    b, _, h, w = x.shape
    size = max(1, round(fraction * min(h, w)))
    top = torch.randint(0, h - size + 1, (b, 1, 1), device=x.device)
    left = torch.randint(0, w - size + 1, (b, 1, 1), device=x.device)
    rows = torch.arange(h, device=x.device)[None, :, None]
    cols = torch.arange(w, device=x.device)[None, None, :]
    hole = (rows >= top) & (rows < top + size) & (cols >= left) & (cols < left + size)  # (B, H, W)
    return x.masked_fill(hole[:, None], 0.0)


def _v2() -> ModuleType:
    """``torchvision.transforms.v2``, imported when an augmentation first runs: importing
    torchvision takes ~1.7 s (it loads ``torch._dynamo``), which every command that reads the
    augmentations' names (``evaluate``, ``explain``, ``export``) would otherwise pay."""
    from torchvision.transforms import v2

    return v2


def _torchvision(name: str, *args: float) -> Callable[[torch.Tensor], torch.Tensor]:
    """``v2.<name>(*args)``, made on its first call."""
    made = functools.cache(lambda: getattr(_v2(), name)(*args))
    return lambda x: made()(x)


def in_groups(transform: Callable[[torch.Tensor], torch.Tensor], groups: int = GROUPS
              ) -> Callable[[torch.Tensor], torch.Tensor]:  # fmt: skip
    """Apply a torchvision transform to ``groups`` slices of a batch, each with its own random draw."""

    def apply(x: torch.Tensor) -> torch.Tensor:
        import torch

        return torch.cat([transform(part) for part in x.tensor_split(min(groups, len(x)))]) if len(x) else x

    return apply


def _float_images(transform: Callable[[torch.Tensor], torch.Tensor]) -> Callable[[torch.Tensor], torch.Tensor]:
    # torchvision's float-image ops expect [0, 1]; bilinear steps and mixing can leave a hair outside.
    return lambda x: transform(x.clamp(0.0, 1.0))


@dataclass(frozen=True)
class Augmentation:
    """One registered operation: an image operation, or a label mixer.

    Attributes:
        name: the policy's word for it (``--augment crop+NAME``).
        help: what it does, in a few words.
        images: the operation on a batch of images ``(B, C, H, W)`` (the targets pass through).
        mixer: ``mixer(num_classes)`` -> a torchvision transform of ``(images, targets)`` that
            returns soft targets ``(B, classes)``; mixers run after every image operation.
    """

    name: str
    help: str
    images: Callable[[torch.Tensor], torch.Tensor] | None = None
    mixer: Callable[[int | None], v2.Transform] | None = None


AUGMENTATIONS: dict[str, Augmentation] = {}


def register_augmentation(augmentation: Augmentation) -> Augmentation:
    """Add an operation to the registry (its position is its place in every policy's order)."""
    if augmentation.name in AUGMENTATIONS or augmentation.name in ("none", "auto"):
        raise ValueError(f"augmentation {augmentation.name!r} is already registered")
    if (augmentation.images is None) == (augmentation.mixer is None):
        raise ValueError(f"augmentation {augmentation.name!r} needs exactly one of images= and mixer=")
    AUGMENTATIONS[augmentation.name] = augmentation
    return augmentation


for _augmentation in (
    Augmentation("flip", "mirror a random half of the batch (never for digits or text)", random_flip),
    Augmentation("crop", "pad by 2 px and crop back at a random offset", random_crop),
    Augmentation("affine", "small rotation (±10°), scale (±10%) and shear per image", random_affine),
    Augmentation("randaugment", "torchvision's RandAugment (2 random operations, magnitude 9)",
                 in_groups(_float_images(_torchvision("RandAugment")))),
    Augmentation("trivialaugment", "torchvision's TrivialAugmentWide (1 operation, random magnitude)",
                 in_groups(_float_images(_torchvision("TrivialAugmentWide")))),
    Augmentation("jitter", "torchvision's ColorJitter: brightness, contrast, saturation ±40% (grey: the first two)",
                 in_groups(_float_images(_torchvision("ColorJitter", 0.4, 0.4, 0.4)))),
    Augmentation("cutout", "zero one square a quarter of the side in each image", random_cutout),
    Augmentation("erase", "torchvision's RandomErasing: half the images lose a random rectangle",
                 in_groups(_torchvision("RandomErasing"))),
    Augmentation("mixup", "torchvision's MixUp (alpha 0.2): blend pairs of images and their labels",
                 mixer=lambda n: _v2().MixUp(alpha=0.2, num_classes=n)),
    Augmentation("cutmix", "torchvision's CutMix (alpha 1): paste a box of another image, labels by area",
                 mixer=lambda n: _v2().CutMix(alpha=1.0, num_classes=n)),
):  # fmt: skip
    register_augmentation(_augmentation)

_ALIASES = {"flip-crop": "flip+crop"}


def parse_policy(policy: str) -> list[str]:
    """The registered operations of a policy, in the order they run (``[]`` for ``"none"``)."""
    policy = _ALIASES.get(policy, policy)
    if policy == "none":
        return []
    names = policy.split("+")
    unknown = [name for name in names if name not in AUGMENTATIONS]
    if unknown:
        raise ConfigError(f"unknown augmentation {policy!r}; combine {', '.join(AUGMENTATIONS)} with '+', or 'none'")
    return [name for name in AUGMENTATIONS if name in names]  # the registry's order


def make_augment(policy: str, num_classes: int | None = None) -> Augment | None:
    """The operation ``(images, targets) -> (images, targets)`` for a policy (``None`` for ``"none"``).

    ``num_classes`` is needed by ``mixup`` and ``cutmix`` on class-index targets. With both,
    each batch takes one of the two at random (as torchvision's reference recipes do).
    """
    chosen = [AUGMENTATIONS[name] for name in parse_policy(policy)]
    if not chosen:
        return None
    image_ops = [a.images for a in chosen if a.images is not None]
    mixers = [a.mixer(num_classes) for a in chosen if a.mixer is not None]
    mix = None if not mixers else mixers[0] if len(mixers) == 1 else _v2().RandomChoice(mixers)

    def augment(x: torch.Tensor, y: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        for op in image_ops:
            x = op(x)
        if mix is not None:
            if y.ndim == 1 and num_classes is None:
                raise ConfigError("mixup and cutmix need the number of classes to mix class labels")
            x, y = mix(x, y)
        return x, y

    return augment


def apply_policy(policy: str, images: torch.Tensor, labels: torch.Tensor, num_classes: int | None = None
                 ) -> tuple[torch.Tensor, torch.Tensor]:  # fmt: skip
    """Augment one batch as training would: images ``(B, C, H, W)`` in [0, 1], labels ``(B,)``.

    Returns the images and their targets: the labels as given, or soft ``(B, classes)`` targets
    when the policy mixes labels (``num_classes`` is then needed for index labels).
    """
    augment = make_augment(policy, num_classes)
    return (images, labels) if augment is None else augment(images, labels)
