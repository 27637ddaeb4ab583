"""Look inside a CNN: its kernels, its feature maps, and where it looks when it decides.

.. code-block:: python

    from cnnkit import explain
    heat = explain.layercam(model, image)         # (H, W) in [0, 1]; image (C, H, W) in [0, 1]
    explain.overlay(image, heat).save("cam.png")  # the heat map over the image
    maps = explain.feature_maps(model, image)     # {"conv2d": (32, 26, 26), ...}
    kernels = explain.conv_kernels(model)         # the first convolution's (32, 1, 3, 3)
    view = explain.inside(model, image)           # every layer: shape, maps, the first conv at work
    explain.heatmap(model, image, method="saliency").heat  # any registered heat-map method by name

Every method works on a ``Sequential`` model, any registered model and any ``nn.Module``
that maps ``(B, C, H, W)`` images to logits; the CAM methods' default layer, the last convolution
whose map is at least 7x7, is found by running the model once, and a ``layer`` name
(:func:`conv_layer_names`) overrides it. How much each method's heat maps tell, against trivial
orders, is measured by :mod:`cnnkit.explain.metrics` (deletion, insertion) and
:mod:`cnnkit.explain.quality`; the default method (``layercam``) is the one that measured best.

The methods are registered by name (:mod:`cnnkit.explain.registry`): ``cnnkit explain --method``,
the server's ``/v1/explain?method=``, the report and the page all read that one table, so
``register_method("mine", fn, produces="heatmap", description=...)`` reaches each of them.
"""

from __future__ import annotations

from cnnkit.explain._layers import conv_layer_names, named_layers, resolve_layer
from cnnkit.explain.cam import class_activation_map, gradcam, gradcam_plus_plus, layercam
from cnnkit.explain.features import conv_kernels, feature_maps, first_conv
from cnnkit.explain.inside import ConvAtWork, FeatureMaps, Inside, LayerInside, inside
from cnnkit.explain.registry import (
    DEFAULT_METHOD,
    ExplainMethod,
    HeatMap,
    get_method,
    heatmap,
    list_methods,
    register_method,
)
from cnnkit.explain.render import HEATMAP_COLORMAP, colorize, overlay, tile, to_pil
from cnnkit.explain.saliency import (
    integrated_gradients,
    integrated_gradients_attributions,
    saliency,
    saliency_attributions,
)

__all__ = [
    "DEFAULT_METHOD",
    "HEATMAP_COLORMAP",
    "ConvAtWork",
    "ExplainMethod",
    "FeatureMaps",
    "HeatMap",
    "Inside",
    "LayerInside",
    "class_activation_map",
    "colorize",
    "conv_kernels",
    "conv_layer_names",
    "feature_maps",
    "first_conv",
    "gradcam",
    "get_method",
    "gradcam_plus_plus",
    "heatmap",
    "inside",
    "integrated_gradients",
    "integrated_gradients_attributions",
    "layercam",
    "list_methods",
    "named_layers",
    "overlay",
    "register_method",
    "resolve_layer",
    "saliency",
    "saliency_attributions",
    "tile",
    "to_pil",
]
