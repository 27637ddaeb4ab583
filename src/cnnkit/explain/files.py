"""``cnnkit explain``: one image file, one method, one PNG.

The file goes through the same decoder and the same conversion to the model's input as
``predict`` (:func:`~cnnkit.data.transforms.to_batch`), so the explanation is of the prediction
a user gets; the picture is drawn over the image at its own size.
"""

from __future__ import annotations

import os
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnkit._io import atomic_write
from cnnkit.data.decode import load_image
from cnnkit.data.transforms import to_batch
from cnnkit.errors import ConfigError
from cnnkit.evaluate.core import predict_logits
from cnnkit.explain.cam import CAM_METHODS, class_activation_map
from cnnkit.explain.features import conv_kernels, feature_maps, first_conv
from cnnkit.explain.render import overlay
from cnnkit.explain.saliency import integrated_gradients, saliency

__all__ = ["METHODS", "Explanation", "explain_file"]

METHODS = ("filters", "feature-maps", *CAM_METHODS, "saliency", "integrated-gradients")
_MIN_SIDE = 224  # small images (28x28 digits) are enlarged so the overlay is visible


@dataclass(frozen=True)
class Explanation:
    """What ``cnnkit explain`` did: the PNG it wrote, and the prediction it explained."""

    path: str
    method: str
    predicted: str
    probability: float
    target: str | None = None  # the class a heat map is for
    layer: str | None = None

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _name(model: torch.nn.Module, index: int) -> str:
    names = getattr(model, "class_names", None)
    return names[index] if names else str(index)


def _display(image: np.ndarray) -> Image.Image:
    """The decoded image, enlarged (nearest neighbour: keep pixels crisp) if it is small."""
    from cnnkit.explain.render import to_pil

    pil = to_pil(image)
    scale = int(np.ceil(_MIN_SIDE / min(pil.size)))
    return pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST) if scale > 1 else pil


def explain_file(
    model: torch.nn.Module,
    image_path: str | os.PathLike,
    method: str = "gradcam",
    *,
    layer: str | None = None,
    target: int | str | None = None,
    out: str | os.PathLike | None = None,
) -> Explanation:
    """Explain the model's prediction for one image file and write the picture to ``out`` (PNG).

    ``out`` defaults to ``<image stem>-<method>.png`` in the current folder.
    """
    from cnnkit.report.inside import feature_maps_figure, filters_figure
    from cnnkit.report.plots import save_figure

    if method not in METHODS:
        raise ConfigError(f"unknown method {method!r}; choose from {', '.join(METHODS)}")
    out = Path(out) if out is not None else Path(f"{Path(image_path).stem}-{method}.png")
    height, width, channels = model.image_shape
    image = load_image(image_path, channels)  # (h, w, C) at the file's own size, to draw on
    x = to_batch(image_path, (height, width, channels))  # (1, C, H, W): exactly what `cnnkit predict` feeds the model
    probs = torch.softmax(predict_logits(model, x).float(), dim=1)[0].cpu()
    predicted = int(probs.argmax())
    result = {"method": method, "predicted": _name(model, predicted), "probability": float(probs[predicted])}

    if method == "filters":
        name, _ = first_conv(model) if layer is None else (layer, None)
        save_figure(filters_figure(conv_kernels(model, layer), name), out)
        return Explanation(str(out), layer=name, **result)
    if method == "feature-maps":
        maps = feature_maps(model, x, None if layer is None else [layer])
        if not maps:
            raise ConfigError("the model has no convolution: there are no feature maps to show")
        save_figure(feature_maps_figure(maps), out)
        return Explanation(str(out), layer=layer, **result)
    if method in CAM_METHODS:
        heat, cls, layer = class_activation_map(model, x, target, layer, method)
    else:
        if layer is not None:
            raise ConfigError(f"{method} explains pixels, not a layer: drop --layer")
        cls = _resolve(model, target, probs)
        heat = (saliency if method == "saliency" else integrated_gradients)(model, x, cls)
    picture = overlay(_display(image), heat)
    atomic_write(out, lambda tmp: picture.save(tmp, format="PNG"))
    return Explanation(str(out), target=_name(model, cls), layer=layer, **result)


def _resolve(model: torch.nn.Module, target: int | str | None, probs: torch.Tensor) -> int:
    from cnnkit.explain._layers import resolve_target

    return resolve_target(model, target, probs[None])
