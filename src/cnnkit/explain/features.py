"""What the layers compute: feature maps for one image, and the learned kernels.

The article's claim, made visible: the first convolution's kernels look like edge and
colour detectors, and deeper feature maps respond to larger, more specific patterns.
"""

from __future__ import annotations

from collections.abc import Sequence

import numpy as np
import torch
from torch import nn

from cnnkit.classifier import model_pixels
from cnnkit.errors import ConfigError
from cnnkit.explain._layers import HOOK_LOCK, capture, eval_mode, named_layers, prepare_image, resolve_layer
from cnnkit.explain.registry import register_method

__all__ = ["conv_kernels", "feature_maps", "first_conv"]


def feature_maps(
    model: nn.Module, image: torch.Tensor | np.ndarray, layers: Sequence[str] | str | None = None
) -> dict[str, np.ndarray]:
    """Layer name -> its activations ``(C, H, W)`` float32 for one image, in the order the layers run.

    Args:
        model: a classifier (any cnnkit model or ``nn.Module``).
        image: one image, as for :func:`gradcam`.
        layers: ``None`` for every convolution (after its activation for Keras layers);
            ``"all"`` for every layer (or leaf module) whose output is a feature map;
            or a list of layer names.
    """
    if layers is None or layers == "all":
        modules = named_layers(model, "conv" if layers is None else "all")
    else:
        modules = dict(resolve_layer(model, name) for name in ([layers] if isinstance(layers, str) else layers))
    x = prepare_image(model, image)  # (1, C, H, W)
    with HOOK_LOCK, eval_mode(model), torch.no_grad(), capture(modules) as outputs:
        model(model_pixels(model, x))
    maps = {name: out[0].float().cpu().numpy() for name, out in outputs.items() if out.ndim == 4}  # (C, h, w)
    if layers not in (None, "all"):
        flat = sorted(set(modules) - set(maps))
        if flat:
            raise ConfigError(f"layer(s) {', '.join(flat)} do not output feature maps (C, H, W) for this model")
    return maps


def first_conv(model: nn.Module) -> tuple[str, nn.Module]:
    """``(name, module)`` of the model's first convolution, the one that sees pixels."""
    convs = named_layers(model, "conv")
    if not convs:
        raise ConfigError(f"{type(model).__name__} has no convolution")
    return next(iter(convs.items()))


def conv_kernels(model: nn.Module, layer: str | None = None) -> np.ndarray:
    """A convolution's weights ``(filters, in_channels, kh, kw)`` float32; the first one by default."""
    name, module = first_conv(model) if layer is None else resolve_layer(model, layer)
    conv = getattr(module, "conv", module)  # a Keras Conv2D keeps its nn.Conv2d as .conv
    weight = getattr(conv, "weight", None)
    if not isinstance(weight, torch.Tensor) or weight.ndim != 4:
        raise ConfigError(f"layer {name!r} is not a convolution with kernels")
    return weight.detach().float().cpu().numpy()


register_method(
    "filters",
    conv_kernels,
    produces="filters",
    title="filters",
    description="the first convolution's kernels (or a chosen layer's), the patterns it looks for",
)
register_method(
    "feature-maps",
    feature_maps,
    produces="layer-maps",
    title="feature maps",
    description="every convolution's output for the image (or a chosen layer's)",
)
