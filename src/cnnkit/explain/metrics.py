"""How much a heat map tells: the deletion and insertion metrics, and three trivial baselines.

Deletion (Petsiuk et al., RISE, 2018): set the pixels to 0 in the heat map's order, most
relevant first, in ``steps`` equal steps, and record the explained class's probability after
each; the area under that curve (x from 0 to 1, the share of pixels removed) is low when the
map found what the model needs. Insertion runs the other way: start from a blurred copy of the
image, put the original pixels back most relevant first; the area is high when the map is good.

A heat map only means something if it beats orders that know nothing about the model:
:func:`random_order`, :func:`centre_out` (objects sit in the middle) and
:func:`brightest_first` (on digits, the ink). They are heat maps like any other, so every
method and every baseline goes through the same two functions.

Every step of every image runs in a few large forward passes (``batch_size`` perturbed
images each), never one pass per step.

.. code-block:: python

    heats = np.stack([explain.gradcam(model, x) for x in images])  # (N, H, W)
    deletion(model, images, heats)                                  # (N,) areas, lower is better
    insertion(model, images, brightest_first(images))               # (N,) areas, higher is better
"""

from __future__ import annotations

from typing import Literal

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import ShapeError
from cnnkit.explain._layers import class_scores, eval_mode, model_device

__all__ = [
    "BASELINES",
    "area_under_curve",
    "brightest_first",
    "centre_out",
    "deletion",
    "insertion",
    "perturbation_curves",
    "predicted_classes",
    "random_order",
]

Mode = Literal["deletion", "insertion"]


# -- the trivial baselines, as heat maps -----------------------------------------------------------
def random_order(images: torch.Tensor, seed: int = 0) -> np.ndarray:
    """A random heat map per image ``(N, H, W)`` in [0, 1]: the order that knows nothing."""
    n, _, h, w = images.shape
    return np.random.default_rng(seed).random((n, h, w), dtype=np.float32)


def centre_out(images: torch.Tensor) -> np.ndarray:
    """``(N, H, W)``: 1 at the centre, falling with the distance from it (the object is usually in the middle)."""
    n, _, h, w = images.shape
    rows, cols = np.mgrid[0:h, 0:w].astype(np.float32)
    distance = np.hypot(rows - (h - 1) / 2, cols - (w - 1) / 2)
    heat = 1.0 - distance / max(float(distance.max()), 1e-12)
    return np.broadcast_to(heat, (n, h, w)).astype(np.float32)


def brightest_first(images: torch.Tensor) -> np.ndarray:
    """``(N, H, W)``: each pixel's brightness (the mean over channels), the ink of a digit."""
    return images.detach().float().mean(dim=1).cpu().numpy().astype(np.float32)


# name -> (images (N, C, H, W)) -> heat maps (N, H, W); what a quality table compares every method with
BASELINES = {"random": random_order, "centre-out": centre_out, "brightest-first": brightest_first}


# -- the metrics ----------------------------------------------------------------------------------
def _order_positions(heats: np.ndarray, seed: int) -> torch.Tensor:
    """``(N, H*W)``: each pixel's place in its map's order (0 = most relevant); ties in a random order.

    Ties matter: a Grad-CAM map is 0 over much of the image, and breaking them in raster order
    would delete the top rows first, which is itself an order (and not a neutral one).
    """
    n = heats.shape[0]
    flat = heats.reshape(n, -1)
    shuffle = np.random.default_rng(seed).permutation(flat.shape[1])  # the same tie-break for every map
    order = shuffle[np.argsort(-flat[:, shuffle], axis=1, kind="stable")]  # (N, HW) pixel indices, best first
    positions = np.empty_like(order)
    np.put_along_axis(positions, order, np.arange(flat.shape[1])[None, :].repeat(n, 0), axis=1)
    return torch.from_numpy(positions)


def _blur(images: torch.Tensor, sigma: float) -> torch.Tensor:
    """A Gaussian blur ``(N, C, H, W)``, separable, reflecting at the edges."""
    radius = max(1, int(round(3 * sigma)))
    radius = min(radius, images.shape[-1] - 1, images.shape[-2] - 1)
    t = torch.arange(-radius, radius + 1, dtype=images.dtype, device=images.device)
    kernel = torch.exp(-(t**2) / (2 * sigma**2))
    kernel = kernel / kernel.sum()
    c = images.shape[1]
    x = F.pad(images, (radius, radius, 0, 0), mode="reflect")
    x = F.conv2d(x, kernel.view(1, 1, 1, -1).repeat(c, 1, 1, 1), groups=c)
    x = F.pad(x, (0, 0, radius, radius), mode="reflect")
    return F.conv2d(x, kernel.view(1, 1, -1, 1).repeat(c, 1, 1, 1), groups=c)


def predicted_classes(model: nn.Module, images: torch.Tensor, batch_size: int = 256) -> np.ndarray:
    """The model's predicted class for each image ``(N,)``."""
    device = model_device(model)
    with torch.no_grad(), eval_mode(model):
        batches = (images[i : i + batch_size].to(device) for i in range(0, len(images), batch_size))
        logits = [class_scores(model, batch).float() for batch in batches]
    return torch.cat(logits).argmax(dim=1).cpu().numpy()


def perturbation_curves(
    model: nn.Module,
    images: torch.Tensor,
    heats: np.ndarray,
    targets: np.ndarray | None = None,
    *,
    mode: Mode = "deletion",
    steps: int = 20,
    batch_size: int = 512,
    blur_sigma: float | None = None,
    seed: int = 0,
) -> np.ndarray:
    """The explained class's probability after each step ``(N, steps + 1)``; column 0 is before any change.

    Args:
        model: a classifier returning logits for ``(B, C, H, W)`` images in [0, 1].
        images: ``(N, C, H, W)`` at the model's input shape.
        heats: ``(N, H, W)`` heat maps, higher = more relevant (any scale).
        targets: the class each map explains; ``None``: the predicted class of each image.
        mode: ``"deletion"`` (pixels to 0) or ``"insertion"`` (pixels back into a blurred image).
        steps: how many equal steps from none to all of the pixels.
        batch_size: perturbed images per forward pass.
        blur_sigma: insertion's start, in pixels; ``None``: an eighth of the shorter side, enough to
            wipe out a digit's strokes (RISE's 5 pixels at 224 would leave a 28-pixel digit readable).
        seed: breaks ties in a map's order.
    """
    if images.ndim != 4 or heats.shape != (images.shape[0], *images.shape[-2:]):
        raise ShapeError(f"heat maps {heats.shape} do not match images {tuple(images.shape)}: need (N, H, W)")
    if mode not in ("deletion", "insertion"):
        raise ValueError(f"mode must be 'deletion' or 'insertion', got {mode!r}")
    device = model_device(model)
    images = images.detach().float().to(device)
    n, _, h, w = images.shape
    targets = predicted_classes(model, images) if targets is None else np.asarray(targets)
    positions = _order_positions(np.asarray(heats, dtype=np.float32), seed).to(device)  # (N, HW)
    counts = torch.round(torch.linspace(0, h * w, steps + 1, device=device)).long()  # pixels changed at each step
    if mode == "deletion":
        start, end = images, torch.zeros_like(images)  # the curve leaves the image
    else:
        start, end = _blur(images, blur_sigma or max(1.0, min(h, w) / 8)), images  # and here, reaches it
    per_pass = max(1, batch_size // (steps + 1))  # images whose every step fits in one forward pass
    curves = []
    with torch.no_grad(), eval_mode(model):
        for i in range(0, n, per_pass):
            j = min(n, i + per_pass)
            changed = (positions[i:j, None, :] < counts[None, :, None]).view(j - i, steps + 1, 1, h, w)
            x = torch.where(changed, end[i:j, None], start[i:j, None])  # (b, S+1, C, H, W)
            probs = torch.softmax(class_scores(model, x.flatten(0, 1)).float(), dim=1).view(j - i, steps + 1, -1)
            index = torch.as_tensor(targets[i:j], device=device).view(-1, 1, 1).expand(-1, steps + 1, 1)
            curves.append(probs.gather(2, index)[..., 0].cpu())
    return torch.cat(curves).numpy()


def area_under_curve(curves: np.ndarray) -> np.ndarray:
    """The trapezoid area under each curve ``(N, S + 1)`` over x in [0, 1] -> ``(N,)``."""
    curves = np.asarray(curves, dtype=np.float64)
    return ((curves[:, :-1] + curves[:, 1:]) / 2).mean(axis=1)


def deletion(model: nn.Module, images: torch.Tensor, heats: np.ndarray, targets: np.ndarray | None = None,
             **options: object) -> np.ndarray:  # fmt: skip
    """Deletion areas ``(N,)`` (lower is better); options as :func:`perturbation_curves`."""
    return area_under_curve(perturbation_curves(model, images, heats, targets, mode="deletion", **options))


def insertion(model: nn.Module, images: torch.Tensor, heats: np.ndarray, targets: np.ndarray | None = None,
              **options: object) -> np.ndarray:  # fmt: skip
    """Insertion areas ``(N,)`` (higher is better); options as :func:`perturbation_curves`."""
    return area_under_curve(perturbation_curves(model, images, heats, targets, mode="insertion", **options))
