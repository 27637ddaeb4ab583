"""Pixel attributions: how much each input pixel moves the class score.

- ``saliency`` (Simonyan et al., 2014): the gradient of the class score with respect to the
  pixels; the heat map is its largest absolute value over the channels.
- ``integrated_gradients`` (Sundararajan et al., 2017): the gradient averaged along the
  straight path from a baseline (a black image) to the image, times ``image - baseline``.
  Its attributions add up to ``score(image) - score(baseline)`` (completeness), which the
  tests check.
"""

from __future__ import annotations

import numpy as np
import torch
from torch import nn

from cnnkit.errors import ConfigError
from cnnkit.explain._layers import HOOK_LOCK, class_scores, eval_mode, prepare_image, resolve_target
from cnnkit.explain.cam import to_heatmap
from cnnkit.explain.registry import register_method

__all__ = ["integrated_gradients", "integrated_gradients_attributions", "saliency", "saliency_attributions"]


def _class_and_gradients(model: nn.Module, x: torch.Tensor, target: int | str | None) -> tuple[int, torch.Tensor]:
    """The class explained and d score / d pixels ``(1, C, H, W)``."""
    with HOOK_LOCK, eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        x = x.clone().requires_grad_(True)
        logits = class_scores(model, x)  # (1, classes)
        cls = resolve_target(model, target, logits)
        (grads,) = torch.autograd.grad(logits[0, cls], x)
    return cls, grads


def saliency_attributions(
    model: nn.Module, image: torch.Tensor | np.ndarray, target: int | str | None = None
) -> tuple[np.ndarray, int]:
    """``(d score / d pixels (C, H, W), class index)``."""
    x = prepare_image(model, image)  # (1, C, H, W)
    cls, grads = _class_and_gradients(model, x, target)
    return grads[0].cpu().numpy(), cls


def saliency(model: nn.Module, image: torch.Tensor | np.ndarray, target: int | str | None = None) -> np.ndarray:
    """Gradient saliency heat map ``(H, W)`` float32 in [0, 1]; arguments as :func:`gradcam`."""
    grads, _ = saliency_attributions(model, image, target)
    return to_heatmap(torch.from_numpy(np.abs(grads).max(axis=0)), grads.shape[-2:])


def integrated_gradients_attributions(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    target: int | str | None = None,
    *,
    baseline: torch.Tensor | None = None,
    steps: int = 32,
    batch_size: int = 32,
) -> tuple[np.ndarray, int]:
    """``(attributions (C, H, W), class index)``; they sum to ``score(image) - score(baseline)``.

    The path integral is a midpoint Riemann sum over ``steps`` points, run ``batch_size``
    points per forward pass. ``baseline`` defaults to a black image.
    """
    if steps < 1:
        raise ConfigError(f"integrated gradients needs at least 1 step, got {steps}")
    x = prepare_image(model, image)  # (1, C, H, W)
    base = torch.zeros_like(x) if baseline is None else baseline.to(x).reshape(x.shape)
    with torch.no_grad(), eval_mode(model):
        cls = resolve_target(model, target, class_scores(model, x))
    alphas = (torch.arange(steps, device=x.device, dtype=x.dtype) + 0.5) / steps  # (S,) midpoints
    total = torch.zeros_like(x)
    with HOOK_LOCK, eval_mode(model), torch.inference_mode(False), torch.enable_grad():
        for start in range(0, steps, batch_size):
            a = alphas[start : start + batch_size].view(-1, 1, 1, 1)  # (s, 1, 1, 1)
            path = (base + a * (x - base)).requires_grad_(True)  # (s, C, H, W)
            scores = class_scores(model, path)[:, cls]  # (s,): the points are independent, so one backward serves all
            (grads,) = torch.autograd.grad(scores.sum(), path)
            total += grads.sum(dim=0, keepdim=True)
    attributions = (x - base) * total / steps  # (1, C, H, W)
    return attributions[0].detach().cpu().numpy(), cls


def integrated_gradients(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    target: int | str | None = None,
    *,
    baseline: torch.Tensor | None = None,
    steps: int = 32,
) -> np.ndarray:
    """Integrated-gradients heat map ``(H, W)`` float32 in [0, 1]: absolute attribution summed over channels."""
    attributions, _ = integrated_gradients_attributions(model, image, target, baseline=baseline, steps=steps)
    return to_heatmap(torch.from_numpy(np.abs(attributions).sum(axis=0)), attributions.shape[-2:])


register_method(
    "saliency",
    saliency,
    produces="heatmap",
    title="saliency",
    description="the gradient, how much each pixel moves the class's score (Simonyan et al., 2014)",
)
register_method(
    "integrated-gradients",
    integrated_gradients,
    produces="heatmap",
    title="integrated gradients",
    description="gradients averaged from a black image to this one, times their difference (Sundararajan et al., 2017)",
)
