"""Every heat-map method measured against the trivial baselines, on the same images.

:func:`measure_heatmaps` runs each registered heat-map method (the CAM family at each layer
asked for) and each baseline of :data:`~cnnkit.explain.metrics.BASELINES` over the same
images, scores them with the deletion and insertion metrics, and says which method, if any,
beats every baseline on both. ``benchmarks/explain_quality.py`` and the report's heat-map
section print its table.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from cnnkit.errors import CnnkitError
from cnnkit.explain._layers import conv_layer_names, resolve_layer
from cnnkit.explain.metrics import BASELINES, deletion, insertion, predicted_classes
from cnnkit.explain.registry import heatmap, list_methods

__all__ = ["Quality", "Score", "measure_heatmaps"]


@dataclass(frozen=True)
class Score:
    """One heat-map order's mean deletion (lower is better) and insertion (higher is better) areas."""

    name: str  # what a table shows: "gradcam at conv2d_1", "saliency", "random"
    method: str | None  # None for a baseline
    layer: str | None
    deletion: float
    insertion: float
    seconds: float  # computing the heat maps, per image

    @property
    def baseline(self) -> bool:
        return self.method is None

    def row(self) -> list[object]:
        return [self.name, round(self.deletion, 3), round(self.insertion, 3), f"{self.seconds * 1000:.1f}"]


@dataclass(frozen=True)
class Quality:
    """The scores of every method and baseline on ``images`` images, and the verdict."""

    scores: list[Score]
    images: int
    steps: int

    HEADERS = ("heat map", "deletion (lower is better)", "insertion (higher is better)", "ms per image")

    @property
    def baselines(self) -> list[Score]:
        return [s for s in self.scores if s.baseline]

    @property
    def methods(self) -> list[Score]:
        return [s for s in self.scores if not s.baseline]

    def beats_baselines(self, score: Score) -> bool:
        """Lower deletion *and* higher insertion than every baseline."""
        return all(score.deletion < b.deletion and score.insertion > b.insertion for b in self.baselines)

    @property
    def best(self) -> Score | None:
        """The method that beats every baseline with the largest insertion - deletion; None if none does."""
        winners = [s for s in self.methods if self.beats_baselines(s)]
        return max(winners, key=lambda s: s.insertion - s.deletion) if winners else None

    def verdict(self) -> str:
        """One sentence: which method is best, or plainly that none beats the trivial orders."""
        best = self.best
        if best is None:
            return (f"No heat-map method beats all of the trivial orders ({', '.join(b.name for b in self.baselines)}) "
                    f"on both deletion and insertion over these {self.images} images: read the heat maps "
                    f"as no more telling than those.")  # fmt: skip
        return (f"{best.name} tells the most over these {self.images} images: it beats every trivial order "
                f"on deletion and insertion.")  # fmt: skip

    def table(self) -> str:
        """The scores as a plain-text table, methods first, then the baselines."""
        rows = [[*s.row(), "beats the baselines" if self.beats_baselines(s) else ""] for s in self.methods]
        rows += [[*s.row(), "baseline"] for s in self.baselines]
        cells = [[*self.HEADERS, ""], *[[str(v) for v in row] for row in rows]]
        widths = [max(len(row[i]) for row in cells) for i in range(len(cells[0]))]
        return "\n".join("  ".join(v.ljust(widths[i]) for i, v in enumerate(row)).rstrip() for row in cells)


def _heats(model: nn.Module, images: torch.Tensor, targets: np.ndarray, method: str,
           layer: str | None) -> tuple[np.ndarray, float]:  # fmt: skip
    started = time.perf_counter()
    heats = np.stack([heatmap(model, x, int(t), method=method, layer=layer).heat for x, t in zip(images, targets)])
    return heats, (time.perf_counter() - started) / len(images)


def measure_heatmaps(
    model: nn.Module,
    images: torch.Tensor,
    *,
    methods: Sequence[str] | None = None,
    layers: Sequence[str] | str | None = None,
    steps: int = 20,
    seed: int = 0,
) -> Quality:
    """Score every heat-map method and every baseline on ``images`` ``(N, C, H, W)`` for their predicted class.

    Args:
        model: the classifier (its input shape: ``images``'s).
        images: the images, in [0, 1] at the model's input shape.
        methods: registered heat-map method names; ``None``: all of them.
        layers: the layers a CAM method is measured at: names, ``"all"`` (every convolution) or
            ``None`` (the default layer only).
        steps: deletion and insertion steps.
        seed: the random baseline's and the tie-breaks' seed.
    """
    images = images.detach().float().cpu()
    targets = predicted_classes(model, images)
    chosen = [m for m in list_methods("heatmap") if methods is None or m.name in methods]
    default_layer = resolve_layer(model, None)[0] if conv_layer_names(model) else None
    cam_layers = conv_layer_names(model) if layers == "all" else [default_layer] if layers is None else list(layers)

    def score(name: str, heats: np.ndarray, seconds: float, method: str | None = None,
              layer: str | None = None) -> Score:  # fmt: skip
        options = {"steps": steps, "seed": seed}
        down = float(deletion(model, images, heats, targets, **options).mean())
        up = float(insertion(model, images, heats, targets, **options).mean())
        return Score(name, method, layer, down, up, seconds)

    scores = []
    for entry in chosen:
        for layer in cam_layers if entry.layer else [None]:
            if entry.layer and layer is None:
                continue  # a model without convolutions: no CAM
            try:
                heats, seconds = _heats(model, images, targets, entry.name, layer)
            except CnnkitError:
                continue  # a layer without feature maps (C, h, w)
            scores.append(score(entry.name + (f" at {layer}" if layer else ""), heats, seconds, entry.name, layer))
    for name, baseline in BASELINES.items():
        started = time.perf_counter()
        heats = baseline(images, seed) if name == "random" else baseline(images)
        scores.append(score(name, heats, (time.perf_counter() - started) / len(images)))
    return Quality(scores, len(images), steps)
