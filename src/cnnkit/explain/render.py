"""Explanations as pictures: a heat map over its image, kernels and feature maps as tiles."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cnnkit.errors import ShapeError

__all__ = ["HEATMAP_COLORMAP", "colorize", "overlay", "tile", "to_pil"]

# The one colour map of every heat map: the CLI's pictures and their colour bar, the report, the
# server's overlays (and so the pages). Red is the most relevant, dark blue the least.
HEATMAP_COLORMAP = "jet"


def to_pil(image: torch.Tensor | np.ndarray | Image.Image) -> Image.Image:
    """An image in [0, 1] as an RGB PIL image: ``(C, H, W)``/``(1, C, H, W)`` tensor or ``(H, W[, C])`` array."""
    if isinstance(image, Image.Image):
        return image.convert("RGB")
    if isinstance(image, torch.Tensor):
        t = image.detach().float().cpu()
        if t.ndim == 4 and t.shape[0] == 1:
            t = t[0]
        if t.ndim != 3:
            raise ShapeError(f"expected a (C, H, W) image tensor, got {tuple(image.shape)}")
        array = t.permute(1, 2, 0).numpy()  # (H, W, C)
    else:
        array = np.asarray(image, dtype=np.float32)
        array = array[..., None] if array.ndim == 2 else array
    if array.ndim != 3 or array.shape[2] not in (1, 3, 4):
        raise ShapeError(f"expected an (H, W, C) image with 1, 3 or 4 channels, got {array.shape}")
    array = array[..., :3] if array.shape[2] == 4 else array
    array = np.repeat(array, 3, axis=2) if array.shape[2] == 1 else array
    return Image.fromarray((np.clip(array, 0.0, 1.0) * 255).round().astype(np.uint8), "RGB")


def colorize(heatmap: np.ndarray, colormap: str = HEATMAP_COLORMAP) -> np.ndarray:
    """A ``(H, W)`` map in [0, 1] -> ``(H, W, 3)`` float32 RGB through a matplotlib colormap."""
    import matplotlib

    heat = np.clip(np.nan_to_num(np.asarray(heatmap, dtype=np.float32)), 0.0, 1.0)
    return matplotlib.colormaps[colormap](heat)[..., :3].astype(np.float32)


def overlay(
    image: torch.Tensor | np.ndarray | Image.Image,
    heatmap: np.ndarray,
    alpha: float = 0.5,
    colormap: str = HEATMAP_COLORMAP,
) -> Image.Image:
    """The heat map, coloured, blended over the image: an RGB PIL image at the image's size.

    The heat map is resized (bilinear) to the image if their sizes differ, so a map at the
    model's input size can be laid over the original photo.
    """
    base = to_pil(image)
    heat = np.asarray(heatmap, dtype=np.float32)
    if heat.ndim != 2:
        raise ShapeError(f"a heat map is (H, W), got {heat.shape}")
    if heat.shape != (base.height, base.width):
        heat = np.asarray(Image.fromarray(heat, "F").resize(base.size, Image.Resampling.BILINEAR))
    pixels = np.asarray(base, dtype=np.float32) / 255.0  # (H, W, 3)
    blended = (1.0 - alpha) * pixels + alpha * colorize(heat, colormap)
    return Image.fromarray((np.clip(blended, 0.0, 1.0) * 255).round().astype(np.uint8), "RGB")


def tile(
    maps: np.ndarray, columns: int | None = None, pad: int = 1, per_tile: bool = True, fill: float = 1.0
) -> np.ndarray:
    """``(N, H, W)`` or ``(N, H, W, 3)`` maps -> one grid image in [0, 1] (grey or RGB), tiles apart by ``pad``.

    With ``per_tile`` each map is stretched to [0, 1] on its own (kernels and feature maps
    have arbitrary scales); otherwise the whole set shares one scale. The gaps hold ``fill``
    (NaN lets a colormap draw them in its "bad" colour).
    """
    maps = np.asarray(maps, dtype=np.float32)
    if maps.ndim not in (3, 4) or len(maps) == 0:
        raise ShapeError(f"tile() takes (N, H, W) or (N, H, W, 3) maps, got {maps.shape}")
    axes = tuple(range(1, maps.ndim))
    low = maps.min(axis=axes, keepdims=True) if per_tile else maps.min()
    high = maps.max(axis=axes, keepdims=True) if per_tile else maps.max()
    maps = (maps - low) / np.maximum(high - low, 1e-12)
    n, h, w = maps.shape[:3]
    columns = columns or int(np.ceil(np.sqrt(n)))
    rows = int(np.ceil(n / columns))
    grid = np.full((rows * (h + pad) - pad, columns * (w + pad) - pad, *maps.shape[3:]), fill, np.float32)
    for i, m in enumerate(maps):
        r, c = divmod(i, columns)
        grid[r * (h + pad) : r * (h + pad) + h, c * (w + pad) : c * (w + pad) + w] = m
    return grid
