"""A model as cnnkit's pipeline reads it: pixels in [0, 1] in, one logit per class out.

cnnkit decodes every image it reads (files, uploads, its data sets) to pixels in [0, 1]. Keras
code meets two other conventions, and this module is the one place that knows them:

**Pixels.** A model trained through Keras' API on 0..255 pixels (``image_dataset_from_directory``
into a ``Rescaling(1/255)`` layer, as Keras' image tutorials do), or imported from such a Keras
file, takes 0..255: its ``pixel_max`` is 255 (the value of a white pixel, saved with the model).
:func:`model_pixels` scales cnnkit's [0, 1] pixels to it. Keras' own ``Model.fit``/``predict``
take arrays as they are, as Keras does.

**Classes.** Keras' binary classifier ends in ``Dense(1, activation="sigmoid")`` (or ``Dense(1)``
trained with ``from_logits=True``): its one output ``z`` is the logit of class 1, and class 0 has
probability ``1 - sigmoid(z)``. :func:`class_logits` turns it into two classes whose softmax is
exactly ``[1 - sigmoid(z), sigmoid(z)]``, so the predictors behind ``predict`` and ``serve``,
the exported graphs, ``evaluate``, ``explain``, the inside view and the report read every model
alike. Only Keras' ``Model.predict`` keeps Keras' ``(N, 1)`` answer. The two logits are
``[-z/2, z/2]`` rather than ``[0, z]``: both have the same softmax, but here each class's score
moves with ``z`` (one up, the other down), so a gradient of either class (Grad-CAM, saliency)
means something. A softmax of a single output is always 1, so a one-column output can only be
a binary classifier; a model with several outputs is returned as it is.
"""

from __future__ import annotations

import torch
from torch import nn

__all__ = [
    "class_count",
    "class_logits",
    "classify",
    "default_class_names",
    "model_pixels",
    "pixel_max",
    "pixel_range",
]


def pixel_max(model: nn.Module) -> float:
    """The value of a white pixel in the model's inputs: 1.0 (cnnkit's [0, 1]) or 255.0 (Keras' 0..255)."""
    return float(getattr(model, "pixel_max", 1.0) or 1.0)


def pixel_range(images: torch.Tensor, current: float = 1.0) -> float:
    """The ``pixel_max`` that training images show: 255.0 for 0..255 pixels, 1.0 for [0, 1], else ``current``.

    Keras code feeds either (``x / 255`` or ``image_dataset_from_directory``'s 0..255); data that is
    neither (standardized, negative values) says nothing, so the model keeps what it had.
    """
    low, high = float(images.min()), float(images.max())
    if low < 0 or high > 255:
        return current
    return 255.0 if high > 1.5 else 1.0


def model_pixels(model: nn.Module, x: torch.Tensor) -> torch.Tensor:
    """Images with pixels in [0, 1] -> the model's input range (the same tensor when that is [0, 1])."""
    scale = pixel_max(model)
    return x if scale == 1.0 else x * scale


def class_logits(outputs: torch.Tensor) -> torch.Tensor:
    """``(B, units)`` model outputs -> ``(B, classes)`` logits whose softmax is the class probabilities."""
    if outputs.ndim == 2 and outputs.shape[1] == 1:
        half = outputs / 2  # (B, 1): the logit of class 1, halved
        return torch.cat([-half, half], dim=1)  # (B, 2)
    return outputs


def classify(model: nn.Module, x: torch.Tensor, forward: nn.Module | None = None) -> torch.Tensor:
    """``(B, C, H, W)`` images in [0, 1] -> ``(B, classes)`` logits of ``model`` (run by ``forward``, e.g.
    its fused form, when given)."""
    return class_logits((forward or model)(model_pixels(model, x)))


def class_count(units: int) -> int:
    """How many classes a model with ``units`` outputs tells apart (a one-unit model: two)."""
    return 2 if units == 1 else units


def default_class_names(units: int) -> list[str]:
    """Names for a model's classes when it has none: ``"0"``, ``"1"``, ...."""
    return [str(i) for i in range(class_count(units))]
