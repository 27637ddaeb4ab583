"""Figures of what a CNN computes: kernels, feature maps, heat maps, labelled with layer names and shapes."""

from __future__ import annotations

from collections.abc import Sequence

import matplotlib
import numpy as np
from matplotlib.figure import Figure

from cnnkit.explain.render import overlay, tile, to_pil
from cnnkit.report.plots import gallery_figure

__all__ = ["feature_maps_figure", "filters_figure", "heatmaps_figure"]


def filters_figure(kernels: np.ndarray, layer: str = "first convolution", max_filters: int = 64) -> Figure:
    """A convolution's kernels ``(filters, in, kh, kw)`` as a grid: RGB when they see 3 channels, else grey.

    Each kernel is stretched to its own [0, 1] so its pattern (edge, blob, colour) shows.
    """
    shown = kernels[:max_filters]
    rgb = shown.shape[1] == 3
    # (F, kh, kw, 3) for RGB kernels; else (F, kh, kw): a grey input's kernels, or the first input channel's
    tiles = shown.transpose(0, 2, 3, 1) if rgb else shown[:, 0]
    grid = tile(tiles, columns=min(8, len(tiles)), pad=1, fill=1.0 if rgb else np.nan)
    fig = Figure(figsize=(6, 6 * grid.shape[0] / grid.shape[1] + 0.6))
    ax = fig.subplots()
    grey = matplotlib.colormaps["gray"].with_extremes(bad="#9db4d0")  # gaps apart from white kernel pixels
    ax.imshow(grid, cmap=None if rgb else grey, interpolation="nearest", vmin=0, vmax=1)
    ax.axis("off")
    channel_note = "" if shown.shape[1] in (1, 3) else f", input channel 0 of {shown.shape[1]}"
    more = f"; first {len(shown)} of {len(kernels)}" if len(shown) < len(kernels) else ""
    ax.set_title(f"{layer}: {len(kernels)} kernels {kernels.shape[2]}x{kernels.shape[3]}{channel_note}{more}")
    return fig


def feature_maps_figure(maps: dict[str, np.ndarray], max_channels: int = 32, columns: int = 8) -> Figure:
    """One row of tiles per layer: its first ``max_channels`` feature maps, titled ``name (C, H, W)``."""
    if not maps:
        raise ValueError("no feature maps to draw")
    grids = {name: tile(m[:max_channels], columns=min(columns, len(m)), pad=1, fill=np.nan) for name, m in maps.items()}
    viridis = matplotlib.colormaps["viridis"].with_extremes(bad="white")
    # Each layer's grid at the full width, a title line above it; axes placed by hand (no layout pass).
    width, title_space = 7.6, 0.45  # inches; a tile is at most an inch wide
    widths = [min(width, min(columns, len(m), max_channels) * 1.0) for m in maps.values()]
    heights = [w * g.shape[0] / g.shape[1] for w, g in zip(widths, grids.values())]
    total = sum(heights) + title_space * len(heights) + 0.1
    fig = Figure(figsize=(width + 0.4, total))
    axes, top = [], total
    for w, h in zip(widths, heights):
        top -= title_space + h
        axes.append(fig.add_axes((0.2 / (width + 0.4), top / total, w / (width + 0.4), h / total)))
    for ax, (name, grid) in zip(axes, grids.items()):
        channels = maps[name].shape[0]
        ax.imshow(grid, cmap=viridis, interpolation="nearest", vmin=0, vmax=1)
        ax.axis("off")
        more = f", first {max_channels} shown" if channels > max_channels else ""
        ax.set_title(f"{name}  {tuple(maps[name].shape)} (channels, height, width){more}", fontsize=10)
    return fig


def heatmaps_figure(
    images: Sequence[np.ndarray], heatmaps: Sequence[np.ndarray], captions: Sequence[str], title: str
) -> Figure:
    """Each image (``(H, W, C)`` in [0, 1]) beside its heat map overlay, captioned above the pair."""
    pairs = []
    for image, heat in zip(images, heatmaps):
        rgb = np.asarray(to_pil(image), dtype=np.float32) / 255  # (H, W, 3)
        gap = np.ones((rgb.shape[0], max(1, rgb.shape[1] // 16), 3), np.float32)
        pairs.append(np.concatenate([rgb, gap, np.asarray(overlay(image, heat), dtype=np.float32) / 255], axis=1))
    return gallery_figure(
        pairs, captions, f"{title}\n(each pair: the image, then the heat map over it)", columns=3, tile_inches=3.2
    )
