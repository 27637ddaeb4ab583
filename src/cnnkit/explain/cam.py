"""Class activation maps: where in the image a convolution's features voted for a class.

Grad-CAM (Selvaraju et al., 2017) weighs each feature map ``A_k`` of a convolution by the
mean gradient of the class score over it and keeps the positive part of the sum:

    cam = ReLU(sum_k mean_ij(dy/dA_k) * A_k)

Grad-CAM++ (Chattopadhay et al., 2018) weighs each location by higher-order terms, which
separates several objects of one class better; Layer-CAM (Jiang et al., 2021) weighs each
location by its own positive gradient, which keeps detail at early layers. All three share
one forward and one backward pass; the map is upsampled to the input size and scaled to [0, 1].
"""

from __future__ import annotations

from collections.abc import Callable

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.errors import ConfigError
from cnnkit.explain._layers import (
    HOOK_LOCK,
    capture,
    class_scores,
    eval_mode,
    prepare_image,
    resolve_layer,
    resolve_target,
)
from cnnkit.explain.registry import register_method

__all__ = ["class_activation_map", "gradcam", "gradcam_plus_plus", "layercam", "to_heatmap"]

Weigh = Callable[[torch.Tensor, torch.Tensor], torch.Tensor]


def _gradcam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    weights = grads.mean(dim=(2, 3), keepdim=True)  # (1, K, 1, 1): one weight per feature map
    return (weights * acts).sum(dim=1)  # (1, h, w)


def _gradcam_plus_plus(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    # The closed form of the paper's alpha with exp(score) as the output (their eq. 19).
    g2, g3 = grads.pow(2), grads.pow(3)
    total = acts.sum(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)
    denominator = 2 * g2 + total * g3
    alpha = g2 / torch.where(denominator != 0, denominator, torch.ones_like(denominator))  # 0 where grads are
    weights = (alpha * grads.clamp(min=0)).sum(dim=(2, 3), keepdim=True)  # (1, K, 1, 1)
    return (weights * acts).sum(dim=1)  # (1, h, w)


def _layercam(acts: torch.Tensor, grads: torch.Tensor) -> torch.Tensor:
    return (grads.clamp(min=0) * acts).sum(dim=1)  # (1, h, w): a weight per location


# How each variant weighs the feature maps; class_activation_map(method=...) picks one.
_WEIGHTS: dict[str, Weigh] = {"gradcam": _gradcam, "gradcam++": _gradcam_plus_plus, "layercam": _layercam}


def to_heatmap(saliency: torch.Tensor, size: tuple[int, int]) -> np.ndarray:
    """A non-negative ``(h, w)`` map -> ``(H, W)`` float32 in [0, 1] (all zeros if nothing is positive)."""
    heat = saliency.detach().float().clamp(min=0).reshape(1, 1, *saliency.shape[-2:])  # (1, 1, h, w)
    if tuple(heat.shape[-2:]) != tuple(size):
        heat = F.interpolate(heat, size=size, mode="bilinear", align_corners=False).clamp(min=0)
    heat = heat[0, 0]
    peak = heat.max()
    if peak > 0:
        heat = heat / peak  # 0 keeps meaning "no evidence for the class"
    return heat.cpu().numpy().astype(np.float32)


def class_activation_map(
    model: nn.Module,
    image: torch.Tensor | np.ndarray,
    target: int | str | None = None,
    layer: str | None = None,
    method: str = "gradcam",
) -> tuple[np.ndarray, int, str]:
    """``(heat map (H, W) in [0, 1], class index, layer name)`` for one image; see :func:`gradcam`."""
    if method not in _WEIGHTS:
        raise ConfigError(f"unknown CAM method {method!r}; choose from {', '.join(_WEIGHTS)}")
    x = prepare_image(model, image)  # (1, C, H, W)
    with HOOK_LOCK:
        name, module = resolve_layer(model, layer)
        with eval_mode(model), torch.inference_mode(False), torch.enable_grad():
            # Asking for the input's gradient builds the graph even when every weight is frozen.
            x = x.clone().requires_grad_(True)
            with capture({name: module}, for_gradients=True) as outputs:
                logits = class_scores(model, x)  # (1, classes)
            if name not in outputs or outputs[name].ndim != 4:
                raise ConfigError(f"layer {name!r} does not output feature maps (C, h, w); choose a convolution")
            cls = resolve_target(model, target, logits)
            acts = outputs[name]  # (1, K, h, w)
            (grads,) = torch.autograd.grad(logits[0, cls], acts)  # (1, K, h, w)
            cam = _WEIGHTS[method](acts.detach(), grads).clamp(min=0)  # (1, h, w)
    return to_heatmap(cam, tuple(x.shape[-2:])), cls, name


def gradcam(
    model: nn.Module, image: torch.Tensor | np.ndarray, target: int | str | None = None, layer: str | None = None
) -> np.ndarray:
    """Grad-CAM heat map ``(H, W)`` float32 in [0, 1] at the model's input size.

    Args:
        model: a classifier returning logits (any cnnkit model or ``nn.Module``).
        image: one image: a ``(C, H, W)`` or ``(1, C, H, W)`` tensor in [0, 1], a NumPy array
            ``(H, W, C)``, a PIL image or an image file (see :func:`~cnnkit.data.transforms.to_batch`),
            brought to the model's input shape.
        target: a class index (or class name); ``None`` explains the predicted class.
        layer: a layer name (see :func:`conv_layer_names`); ``None`` takes the last convolution.
    """
    return class_activation_map(model, image, target, layer, "gradcam")[0]


def gradcam_plus_plus(
    model: nn.Module, image: torch.Tensor | np.ndarray, target: int | str | None = None, layer: str | None = None
) -> np.ndarray:
    """Grad-CAM++ heat map ``(H, W)`` in [0, 1]; arguments as :func:`gradcam`."""
    return class_activation_map(model, image, target, layer, "gradcam++")[0]


def layercam(
    model: nn.Module, image: torch.Tensor | np.ndarray, target: int | str | None = None, layer: str | None = None
) -> np.ndarray:
    """Layer-CAM heat map ``(H, W)`` in [0, 1]; arguments as :func:`gradcam`."""
    return class_activation_map(model, image, target, layer, "layercam")[0]


register_method(
    "gradcam",
    gradcam,
    produces="heatmap",
    title="Grad-CAM",
    description="where the last convolution's features raised the class's score (Selvaraju et al., 2017)",
    layer=True,
)
register_method(
    "gradcam++",
    gradcam_plus_plus,
    produces="heatmap",
    title="Grad-CAM++",
    description="Grad-CAM weighted per location, better for several objects of one class (Chattopadhay et al., 2018)",
    layer=True,
)
register_method(
    "layercam",
    layercam,
    produces="heatmap",
    title="Layer-CAM",
    description="each location weighted by its own positive gradient, finer at early layers (Jiang et al., 2021)",
    layer=True,
)
