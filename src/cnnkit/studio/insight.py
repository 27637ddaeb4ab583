"""What a trained run tells about the project's images: its evaluation, image by image, and its heat maps.

:func:`evaluate_run` scores a run's model on its own test split (from ``split.json``; files relabelled
or excluded since are skipped) or on every image of the project now (``scope="all"``: the training
images too, where mislabelled images hide), with :func:`cnnkit.evaluate.evaluate_model`, and keeps
each image's path beside its numbers, so a confusion-matrix cell can list its images. The heat maps
are the explain registry's default method; the filter images are the first convolution's kernels.
"""

from __future__ import annotations

import io
import threading
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit.data.folders import ImageIndex, index_path
from cnnkit.data.saved_split import load_split
from cnnkit.data.scan import scan_files
from cnnkit.errors import CnnkitError
from cnnkit.evaluate import Evaluation, evaluate_model
from cnnkit.explain import DEFAULT_METHOD, conv_kernels, heatmap, overlay, tile, to_pil
from cnnkit.models import Model, load_model
from cnnkit.studio.project import Project, ProjectError

__all__ = ["RunEvaluation", "Runs", "filters_png", "png"]


def png(image: Any) -> bytes:
    out = io.BytesIO()
    image.save(out, format="PNG")
    return out.getvalue()


def filters_png(model: Model, width: int = 320) -> bytes:
    """The first convolution's kernels as one tiled image (colour for RGB input, grey otherwise)."""
    kernels = conv_kernels(model)  # (F, C, kh, kw)
    maps = kernels.transpose(0, 2, 3, 1) if kernels.shape[1] == 3 else kernels.mean(axis=1)  # (F, kh, kw[, 3])
    grid = tile(maps, columns=min(8, len(maps)), pad=1, fill=1.0)
    from PIL import Image

    pixels = (np.clip(grid, 0, 1) * 255).astype(np.uint8)
    image = Image.fromarray(pixels)
    scale = max(1, width // image.width)  # whole pixels: each weight one crisp square
    return png(image.resize((image.width * scale, image.height * scale), Image.Resampling.NEAREST))


@dataclass
class RunEvaluation:
    """An evaluation and the project path of each of its images, in the same order."""

    evaluation: Evaluation
    paths: list[str]
    scope: str
    skipped: int

    def to_dict(self) -> dict[str, Any]:
        e = self.evaluation
        return {
            "scope": self.scope,
            "images": len(self.paths),
            "skipped": self.skipped,
            "accuracy": e.summary.accuracy,
            "loss": e.summary.loss,
            "class_names": e.class_names,
            "per_class": [
                {"name": c.name, "precision": c.precision, "recall": c.recall, "f1": c.f1, "support": c.support}
                for c in e.per_class
            ],  # fmt: skip
            "confusion": e.confusion.astype(int).tolist(),
        }

    def item(self, i: int) -> dict[str, Any]:
        e = self.evaluation
        label, pred = int(e.labels[i]), int(e.predictions[i])
        return {"path": self.paths[i], "label": e.class_names[label], "predicted": e.class_names[pred],
                "confidence": float(e.probabilities[i, pred]), "loss": float(e.losses[i])}  # fmt: skip

    def cell(self, true: int, predicted: int) -> list[dict[str, Any]]:
        e = self.evaluation
        hits = np.nonzero((e.labels == true) & (e.predictions == predicted))[0]
        return [self.item(int(i)) for i in hits[np.argsort(-e.losses[hits])]]

    def worst(self, n: int, hide: set[str]) -> list[dict[str, Any]]:
        e = self.evaluation
        order = np.argsort(-e.losses)
        return [self.item(int(i)) for i in order if not e.correct[i] and self.paths[i] not in hide][:n]


class Runs:
    """The project's runs, their models loaded once and their evaluations kept (until retrained)."""

    def __init__(self, project: Project) -> None:
        self.project = project
        self._models: dict[str, tuple[float, Model]] = {}
        self._evaluations: dict[tuple[str, str], RunEvaluation] = {}
        self._lock = threading.Lock()
        # One computation on the loaded models at a time: the heat-map methods hook into the model's
        # layers, and two requests hooking the same model at once would read each other's activations.
        self._compute = threading.Lock()

    def run_dir(self, name: str) -> Path:
        run = self.project.resolve(f"runs/{name}")
        if run.parent != self.project.runs_dir or not (run / "model.safetensors").is_file():
            raise ProjectError(f"no trained run {name!r} in this project", 404)
        return run

    def list(self) -> list[dict[str, Any]]:
        runs = self.project.runs_dir
        if not runs.is_dir():
            return []
        found = [r for r in runs.iterdir() if (r / "model.safetensors").is_file()]
        return [{"name": r.name, "files": sorted(p.name for p in r.iterdir() if p.is_file())}
                for r in sorted(found, key=lambda r: r.stat().st_mtime, reverse=True)]  # fmt: skip

    def model(self, name: str, file: str = "model.safetensors") -> Model:
        path = self.run_dir(name) / file
        stamp = path.stat().st_mtime
        with self._lock:
            cached = self._models.get(f"{name}/{file}")
            if cached is None or cached[0] != stamp:
                cached = (stamp, load_model(path).eval())
                self._models[f"{name}/{file}"] = cached
            return cached[1]

    def evaluate(self, name: str, scope: str = "test") -> RunEvaluation:
        if scope not in ("test", "all"):
            raise ProjectError("scope is test (the run's test split) or all (every image of the project now)")
        model = self.model(name)
        index = self._index(name, scope)
        names = list(model.class_names or index.class_names)
        known = [i for i, p in enumerate(index.paths) if p.is_file() and index.class_names[index.labels[i]] in names]
        scan = scan_files([index.paths[i] for i in known], model.image_shape, max_pixels=self.project.max_pixels)
        ok = [k for k, good in zip(known, scan.ok) if good]
        if not ok:
            raise ProjectError(f"no readable images to evaluate run {name} on ({scope})", 409)
        labels = np.array([names.index(index.class_names[index.labels[i]]) for i in ok], dtype=np.int64)
        with self._compute:
            evaluation = evaluate_model(model, scan.images[scan.ok], labels, names)
        result = RunEvaluation(evaluation, [self.project.relative(index.paths[i]) for i in ok], scope,
                               len(index.paths) - len(ok))  # fmt: skip
        with self._lock:
            self._evaluations[(name, scope)] = result
        return result

    def evaluation(self, name: str, scope: str = "test") -> RunEvaluation:
        with self._lock:
            cached = self._evaluations.get((name, scope))
        return cached if cached is not None else self.evaluate(name, scope)

    def _index(self, name: str, scope: str) -> ImageIndex:
        if scope == "all":
            return index_path(self.project.root)
        return load_split(self.run_dir(name)).index("test", verify=False)

    def predict(self, name: str, data: bytes, filename: str, top: int = 5) -> dict[str, Any]:
        """The top classes of one uploaded image (cnnkit's decoder and its pixel limit, then ``model.predict``)."""
        from cnnkit.data.decode import open_image

        model = self.model(name)
        image = open_image(data, name=filename, max_pixels=self.project.max_pixels).image
        with self._compute:
            p = model.predict(image, verbose=0)[0]  # to_batch inside: the one input conversion
        order = [int(i) for i in p.argsort()[::-1][:top]]
        names = list(model.class_names or [])
        return {"labels": [names[i] for i in order], "probabilities": [float(p[i]) for i in order]}

    def heatmap_png(self, name: str, relative: str, target: str | None = None) -> bytes:
        """The image as the model sees it, under the default method's heat map for ``target`` (default: top class)."""
        model = self.model(name)
        path = self.project.image_path(relative)
        x = scan_files([path], model.image_shape, max_pixels=self.project.max_pixels)
        if not x.ok[0]:
            raise ProjectError(f"{relative}: {x.records[0].error}", 422)
        import torch

        image = torch.from_numpy(x.images[0].transpose(2, 0, 1).copy())  # (C, H, W)
        try:
            with self._compute:
                heat = heatmap(model, image, target, method=DEFAULT_METHOD)
        except CnnkitError as e:
            raise ProjectError(str(e)) from None
        shown = overlay(to_pil(image), heat.heat)
        return png(shown.resize((max(96, shown.width * 3), max(96, shown.height * 3))))
