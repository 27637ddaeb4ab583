"""Plots as PNG files or bytes (matplotlib, no display needed): curves, confusion, calibration, galleries.

Figures are built with ``matplotlib.figure.Figure`` directly, not pyplot, so no global
state is touched and plots can be drawn from any thread (the server, the training run).
Every plot has a title, axis labels and class names.
"""

from __future__ import annotations

import io
import os
from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure
from matplotlib.ticker import MaxNLocator

from cnnkit._io import atomic_write_bytes
from cnnkit.evaluate.metrics import Calibration, Evaluation

__all__ = [
    "batch_captions",
    "confusion_figure",
    "curves_figure",
    "figure_png",
    "gallery_figure",
    "mistakes_figure",
    "plot_curves",
    "reliability_figure",
    "save_figure",
    "write_evaluation_plots",
]

# Figures use no layout engine (constrained layout costs about a second a figure on a busy CPU):
# spacing and margins are set by hand.

# Above this many classes, cell numbers would be unreadable: the colours carry the matrix alone.
_ANNOTATE_MAX_CLASSES = 20


def figure_png(fig: Figure, dpi: int = 100) -> bytes:
    """The figure as PNG bytes; a figure marked ``fig.tight = True`` is cropped to what it draws."""
    buffer = io.BytesIO()
    # Cropping ("tight") draws everything twice: only figures whose size depends on their labels ask for it.
    fig.savefig(buffer, format="png", dpi=dpi, bbox_inches="tight" if getattr(fig, "tight", False) else None)
    return buffer.getvalue()


def save_figure(fig: Figure, path: str | os.PathLike, dpi: int = 110) -> Path:
    """Write the figure to ``path`` as PNG, atomically."""
    return atomic_write_bytes(path, figure_png(fig, dpi))


def curves_figure(history: dict[str, list[float]]) -> Figure:
    """Training curves: loss and each metric per epoch, training beside validation."""
    metrics = [key for key in history if not key.startswith("val_") and key not in ("lr", "epoch")]
    fig = Figure(figsize=(5 * len(metrics), 3.6))
    fig.subplots_adjust(left=0.7 / fig.get_figwidth(), right=0.98, bottom=0.15, top=0.9, wspace=0.25)
    for ax, key in zip(fig.subplots(1, len(metrics), squeeze=False)[0], metrics):
        epochs = range(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], marker="o", ms=3, label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.xaxis.set_major_locator(MaxNLocator(integer=True))
        ax.set_ylabel(key)
        ax.set_title(key.replace("_", " "))
        ax.grid(alpha=0.3)
        ax.legend()
    return fig


def plot_curves(history: dict[str, list[float]], path: str | os.PathLike) -> Path:
    """Write the training curves to ``path`` (``curves.png`` in a run folder)."""
    return save_figure(curves_figure(history), path)


def _matrix(ax, matrix: np.ndarray, names: Sequence[str], title: str, fmt: str) -> None:  # noqa: ANN001
    image = ax.imshow(matrix, cmap="Blues", vmin=0)
    ticks = np.arange(len(names))
    ax.set_xticks(ticks, names, rotation=90 if max(map(len, names)) > 3 else 0)
    ax.set_yticks(ticks, names)
    ax.set_xlabel("predicted class")
    ax.set_ylabel("true class")
    ax.set_title(title)
    if len(names) <= _ANNOTATE_MAX_CLASSES:
        threshold = matrix.max() / 2 if matrix.max() > 0 else 1
        for (i, j), value in np.ndenumerate(matrix):
            if value:
                ax.text(j, i, format(value, fmt), ha="center", va="center", fontsize=7,
                        color="white" if value > threshold else "black")  # fmt: skip
    ax.figure.colorbar(image, ax=ax, shrink=0.8)


def confusion_figure(evaluation: Evaluation) -> Figure:
    """The confusion matrix twice: image counts, and each row divided by its class's count."""
    names = evaluation.class_names
    side = max(4.5, 0.45 * len(names) + 2)
    # Between the panels: the left one's colour bar, then the right one's class names (~0.08 in a letter).
    between = 1.3 + 0.08 * max(map(len, names))
    fig = Figure(figsize=(2 * side + between, side))
    fig.tight = True  # and the outer margins, cropped to the labels
    left, right = fig.subplots(1, 2, gridspec_kw={"wspace": between / side})
    _matrix(left, evaluation.confusion, names, f"confusion matrix (counts, {evaluation.summary.n} images)", "d")
    _matrix(right, evaluation.confusion_normalized, names, "confusion matrix (row-normalized: recall)", ".2f")
    return fig


def reliability_figure(cal: Calibration) -> Figure:
    """Reliability diagram: accuracy per confidence bin against the diagonal, and how many images per bin."""
    edges = np.asarray(cal.edges)
    centers, width = (edges[:-1] + edges[1:]) / 2, np.diff(edges)
    accuracy = np.array([np.nan if a is None else a for a in cal.accuracy])
    confidence = np.array([np.nan if c is None else c for c in cal.confidence])
    fig = Figure(figsize=(9, 4))
    fig.subplots_adjust(left=0.08, right=0.98, bottom=0.13, top=0.91, wspace=0.3)
    ax, hist = fig.subplots(1, 2)
    accuracy, confidence = np.nan_to_num(accuracy), np.nan_to_num(confidence)
    ax.bar(centers, accuracy, width=width, edgecolor="black", color="tab:blue", label="accuracy")
    ax.bar(centers, np.abs(confidence - accuracy), bottom=np.minimum(accuracy, confidence), width=width,
           fill=False, hatch="//", edgecolor="tab:red", label="gap to mean confidence")  # fmt: skip
    ax.plot([0, 1], [0, 1], "--", color="gray", label="perfect calibration")
    ax.set(xlim=(0, 1), ylim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="accuracy")
    ax.set_title(f"reliability diagram (ECE {cal.ece:.3f})")
    ax.legend(loc="upper left")
    hist.bar(centers, cal.count, width=width, edgecolor="black", color="tab:gray")
    hist.set(xlim=(0, 1), xlabel="confidence (top-1 probability)", ylabel="images")
    hist.set_title("images per confidence bin")
    return fig


def _rgb(image: np.ndarray) -> np.ndarray:
    """``(H, W, 1 | 3)`` in [0, 1] -> ``(H, W, 3)``."""
    image = np.clip(np.asarray(image, dtype=np.float32), 0, 1)
    return np.repeat(image, 3, axis=2) if image.shape[-1] == 1 else image[..., :3]


def gallery_figure(
    images: Sequence[np.ndarray], captions: Sequence[str], title: str, columns: int = 8, tile_inches: float = 1.5
) -> Figure:
    """Images (each ``(H, W, C)`` in [0, 1], one size) in a grid, each with its caption above it.

    One axes holds the whole mosaic: a subplot per image would cost matplotlib a layout
    pass per tile, seconds for a gallery of a few dozen.
    """
    tiles = [_rgb(image) for image in images]
    n, (h, w) = len(tiles), tiles[0].shape[:2]
    columns = max(1, min(columns, n))
    rows = -(-n // columns)
    lines = max(caption.count("\n") + 1 for caption in captions) if captions else 0
    gap_x, gap_y = max(2, w // 8), int(h * 0.22 * lines) + 2  # room for the captions above each tile
    canvas = np.ones((rows * (h + gap_y), columns * (w + gap_x) - gap_x, 3), np.float32)
    fig = Figure(figsize=(tile_inches * columns * (w + gap_x) / w, tile_inches * rows * (h + gap_y) / w + 0.5))
    ax = fig.add_axes((0, 0, 1, 0.97 - 0.4 / fig.get_figheight()))
    for i, (tile_, caption) in enumerate(zip(tiles, captions)):
        r, c = divmod(i, columns)
        top, left = r * (h + gap_y) + gap_y, c * (w + gap_x)
        canvas[top : top + h, left : left + w] = tile_
        ax.text(left + w / 2, top - 1, caption, ha="center", va="bottom", fontsize=8)
    ax.imshow(canvas, interpolation="nearest" if h < 64 else "antialiased")
    ax.axis("off")
    fig.suptitle(title)
    return fig


def batch_captions(targets: np.ndarray, class_names: Sequence[str]) -> list[str]:
    """Each image's label: its class (``(B,)`` targets), or for mixed ``(B, classes)`` targets the two
    largest shares, e.g. ``"cat 62%\ndog 38%"`` (MixUp and CutMix mix two images)."""
    targets = np.asarray(targets)
    if targets.ndim == 1:
        return [str(class_names[int(t)]) for t in targets]
    captions = []
    for row in targets:
        first, second = np.argsort(-row, kind="stable")[:2]
        if row[second] < 0.005:  # not mixed (or label smoothing's crumbs)
            captions.append(str(class_names[first]))
        else:
            captions.append(f"{class_names[first]} {row[first]:.0%}\n{class_names[second]} {row[second]:.0%}")
    return captions


def mistakes_figure(evaluation: Evaluation, images: np.ndarray, n: int = 16) -> Figure | None:
    """The ``n`` highest-loss images that the model got wrong, labelled true / predicted (probability)."""
    worst = [i for i in evaluation.worst(len(evaluation.losses)) if not evaluation.correct[i]][:n]
    if not worst:
        return None
    names, predicted, probs = evaluation.class_names, evaluation.predictions, evaluation.probabilities
    captions = [
        f"true {names[evaluation.labels[i]]}\npred {names[predicted[i]]} ({probs[i, predicted[i]]:.0%})" for i in worst
    ]
    return gallery_figure(images[worst], captions, "highest-loss mistakes (true class, predicted class)")


def write_evaluation_plots(evaluation: Evaluation, images: np.ndarray, out_dir: str | os.PathLike) -> list[Path]:
    """``confusion.png``, ``reliability.png`` and (if there are mistakes) ``mistakes.png`` in ``out_dir``."""
    out_dir = Path(out_dir)
    figures = {
        "confusion.png": confusion_figure(evaluation),
        "reliability.png": reliability_figure(evaluation.calibration),
        "mistakes.png": mistakes_figure(evaluation, images),
    }
    return [save_figure(fig, out_dir / name) for name, fig in figures.items() if fig is not None]
