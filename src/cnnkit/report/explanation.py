"""``cnnkit explain``: one image file, one explain method, one PNG.

The method is any of the explain registry's (:func:`cnnkit.explain.list_methods`); what it
produces decides the picture: a heat map over the photo, or a labelled figure of the kernels
or the feature maps (:mod:`cnnkit.report.inside`). It lives with the report's figures, above
:mod:`cnnkit.explain`, so explain never imports the report that draws it.

The file goes through the same decoder and the same conversion to the model's input as
``predict`` (:func:`~cnnkit.data.transforms.to_batch`), so the explanation is of the prediction
a user gets; the picture is drawn over the image at its own size, with a title (the method,
its layer and the class) above it and a colour bar (0 to 1, the one colour map of every heat map,
:data:`~cnnkit.explain.HEATMAP_COLORMAP`) beside it. :func:`photo_box` says where the photo lies.
"""

from __future__ import annotations

import os
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
from PIL import Image, ImageDraw, ImageFont

from cnnkit._io import atomic_write
from cnnkit.classifier import class_logits, model_pixels
from cnnkit.data.decode import load_image
from cnnkit.data.transforms import to_batch
from cnnkit.errors import ConfigError
from cnnkit.evaluate.core import predict_logits
from cnnkit.explain import DEFAULT_METHOD, colorize, first_conv, get_method, heatmap, overlay, to_pil
from cnnkit.report.inside import feature_maps_figure, filters_figure
from cnnkit.report.plots import save_figure

__all__ = ["Explanation", "explain_file", "heatmap_picture", "photo_box"]

_MIN_SIDE = 224  # small images (28x28 digits) are enlarged so the overlay is visible
# The heat-map picture's layout, in pixels: a margin, two title lines, then the photo and the colour bar.
_PAD, _TITLE, _GAP, _BAR, _LABELS, _FONT = 8, 40, 10, 14, 34, 13


@dataclass(frozen=True)
class Explanation:
    """What ``cnnkit explain`` did: the PNG it wrote, and the prediction it explained."""

    path: str
    method: str
    predicted: str
    probability: float
    target: str | None = None  # the class a heat map is for
    layer: str | None = None
    box: tuple[int, int, int, int] | None = None  # a heat-map picture: the photo's (left, top, right, bottom)

    def to_dict(self) -> dict[str, object]:
        return asdict(self)


def _name(model: torch.nn.Module, index: int) -> str:
    names = getattr(model, "class_names", None)
    return names[index] if names else str(index)


def _display(image: np.ndarray) -> Image.Image:
    """The decoded image, enlarged (nearest neighbour: keep pixels crisp) if it is small."""
    pil = to_pil(image)
    scale = int(np.ceil(_MIN_SIDE / min(pil.size)))
    return pil.resize((pil.width * scale, pil.height * scale), Image.Resampling.NEAREST) if scale > 1 else pil


def photo_box(width: int, height: int) -> tuple[int, int, int, int]:
    """Where a ``width`` x ``height`` photo lies in its heat-map picture: ``(left, top, right, bottom)``."""
    return _PAD, _PAD + _TITLE, _PAD + width, _PAD + _TITLE + height


def heatmap_picture(photo: Image.Image, heat: np.ndarray, title: Sequence[str]) -> Image.Image:
    """The heat map over ``photo``, ``title`` (up to two lines) above it and a labelled colour bar to the right.

    The photo's pixels are exactly :func:`~cnnkit.explain.overlay`'s, at :func:`photo_box`.
    """
    shown = overlay(photo, heat)
    left, top, right, bottom = photo_box(*shown.size)
    font = ImageFont.load_default(size=_FONT)
    title_width = max((int(font.getlength(line)) for line in title), default=0)
    width = max(right + _GAP + _BAR + _LABELS, _PAD + title_width + _PAD)
    picture = Image.new("RGB", (width, bottom + _PAD), "white")
    picture.paste(shown, (left, top))
    draw = ImageDraw.Draw(picture)
    for i, line in enumerate(title[:2]):
        draw.text((_PAD, _PAD + i * (_TITLE // 2)), line, fill="black", font=font)
    # The colour bar: 1 (most relevant) at the top, 0 at the bottom, in the heat map's own colours.
    bar = colorize(np.linspace(1.0, 0.0, bottom - top, dtype=np.float32)[:, None].repeat(_BAR, axis=1))
    bar_left = right + _GAP
    picture.paste(Image.fromarray((bar * 255).round().astype(np.uint8), "RGB"), (bar_left, top))
    draw.rectangle((bar_left - 1, top - 1, bar_left + _BAR, bottom), outline="black")
    for value, y in ((1.0, top), (0.5, (top + bottom) / 2), (0.0, bottom)):
        draw.line((bar_left + _BAR, y, bar_left + _BAR + 3, y), fill="black")
        draw.text((bar_left + _BAR + 5, y), f"{value:g}", fill="black", font=font, anchor="lm")
    return picture


def explain_file(
    model: torch.nn.Module,
    image_path: str | os.PathLike,
    method: str = DEFAULT_METHOD,
    *,
    layer: str | None = None,
    target: int | str | None = None,
    out: str | os.PathLike | None = None,
) -> Explanation:
    """Explain the model's prediction for one image file with a registered method; write the picture to ``out`` (PNG).

    ``method`` is any name of :func:`~cnnkit.explain.list_methods`; ``out`` defaults
    to ``<image stem>-<method>.png`` in the current folder.
    """
    entry = get_method(method)
    out = Path(out) if out is not None else Path(f"{Path(image_path).stem}-{method}.png")
    height, width, channels = model.image_shape
    image = load_image(image_path, channels)  # (h, w, C) at the file's own size, to draw on
    x = to_batch(image_path, (height, width, channels))  # (1, C, H, W): exactly what `cnnkit predict` feeds the model
    probs = torch.softmax(class_logits(predict_logits(model, model_pixels(model, x)).float()), dim=1)[0].cpu()
    predicted = int(probs.argmax())
    result = {"method": method, "predicted": _name(model, predicted), "probability": float(probs[predicted])}

    if entry.produces == "filters":
        name, _ = first_conv(model) if layer is None else (layer, None)
        save_figure(filters_figure(entry.fn(model, layer), name), out)
        return Explanation(str(out), layer=name, **result)
    if entry.produces == "layer-maps":
        maps = entry.fn(model, x, None if layer is None else [layer])
        if not maps:
            raise ConfigError("the model has no convolution: there are no feature maps to show")
        save_figure(feature_maps_figure(maps), out)
        return Explanation(str(out), layer=layer, **result)
    drawn = heatmap(model, x, target, method=method, layer=layer)  # target None: the predicted class
    photo = _display(image)
    chance = f"predicted {result['predicted']}, {result['probability']:.0%}"
    at = f" at {drawn.layer}" if drawn.layer else ""
    title = [entry.title + at, f"for class {_name(model, drawn.target)} ({chance})"]
    picture = heatmap_picture(photo, drawn.heat, title)
    atomic_write(out, lambda tmp: picture.save(tmp, format="PNG"))
    box = photo_box(*photo.size)
    return Explanation(str(out), target=_name(model, drawn.target), layer=drawn.layer, box=box, **result)
