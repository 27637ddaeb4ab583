"""Plots written as PNG files (matplotlib, no display needed)."""

from __future__ import annotations

import os
from pathlib import Path

import matplotlib

matplotlib.use("Agg")  # files only: never open a window, never need a display
import matplotlib.pyplot as plt  # noqa: E402

from cnnkit._io import atomic_write  # noqa: E402

__all__ = ["plot_curves"]


def plot_curves(history: dict[str, list[float]], path: str | os.PathLike) -> Path:
    """Training curves: loss and each metric per epoch, training beside validation."""
    metrics = [key for key in history if not key.startswith("val_") and key != "lr"]
    fig, axes = plt.subplots(1, len(metrics), figsize=(5 * len(metrics), 3.6), squeeze=False)
    for ax, key in zip(axes[0], metrics):
        epochs = range(1, len(history[key]) + 1)
        ax.plot(epochs, history[key], marker="o", ms=3, label="train")
        if f"val_{key}" in history:
            ax.plot(epochs, history[f"val_{key}"], marker="o", ms=3, label="validation")
        ax.set_xlabel("epoch")
        ax.set_title(key)
        ax.grid(alpha=0.3)
        ax.legend()
    fig.tight_layout()
    try:
        return atomic_write(path, lambda tmp: fig.savefig(tmp, format="png", dpi=110))
    finally:
        plt.close(fig)
