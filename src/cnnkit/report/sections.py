"""The sections of ``report.html``, one renderer each: ``(context, page) -> HTML``.

A section that cannot be drawn (no test data, a model without convolutions) says why
in one sentence instead of disappearing, so every report has the same outline.
"""

from __future__ import annotations

import html
import json
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from functools import cached_property
from itertools import islice
from pathlib import Path
from typing import Any

import numpy as np
import torch

from cnnkit.errors import CnnkitError
from cnnkit.evaluate.metrics import Evaluation

__all__ = ["RENDERERS", "Context", "header"]


@dataclass
class Context:
    """What the sections draw from: the run folder's files, the model and its data set."""

    run_dir: Path
    config: dict[str, Any]
    history: dict[str, list[float]]
    model: torch.nn.Module
    data: Any  # cnnkit.data.prepare.TrainingData, a cnnkit.data.Dataset, or None
    samples: int
    method: str | None = None  # the heat-map section's explain method; None: the registry's default

    def __post_init__(self) -> None:
        from cnnkit.explain import DEFAULT_METHOD, get_method

        self.method = get_method(self.method or DEFAULT_METHOD, "heatmap").name  # unknown: fails before any section

    @property
    def dataset(self) -> Any:
        """The :class:`~cnnkit.data.Dataset` (train, val, test, class names), or None."""
        return getattr(self.data, "dataset", self.data)

    @property
    def train_labels(self) -> np.ndarray:
        stream = getattr(self.data, "stream", None)  # training images streamed from disk: only their labels here
        return np.asarray(stream.dataset.labels) if stream is not None else self.dataset.train.labels

    @cached_property
    def evaluation(self) -> Evaluation | None:
        """The model on the test split (None without test images)."""
        from cnnkit.evaluate import evaluate_model

        if self.dataset is None or len(self.dataset.test) == 0:
            return None
        test = self.dataset.test
        tta = bool(self.config.get("tta", False))  # the same test numbers the run printed
        return evaluate_model(self.model, test.images, test.labels, self.class_names, tta=tta)

    @property
    def class_names(self) -> list[str]:
        names = getattr(self.model, "class_names", None) or (self.dataset.class_names if self.dataset else None)
        return list(names) if names else []

    @cached_property
    def model_images(self) -> torch.Tensor:
        """The test images as the model sees them: ``(N, C, H, W)`` at its input shape."""
        from cnnkit.data.transforms import conform, images_to_tensor

        return conform(images_to_tensor(self.dataset.test.images), self.model.image_shape)

    @cached_property
    def sample_indices(self) -> list[int]:
        """A few test images to explain: the first of each class, then the next ones."""
        labels = self.dataset.test.labels
        firsts = [int(np.flatnonzero(labels == c)[0]) for c in np.unique(labels)]
        chosen = set(firsts)
        rest = (i for i in range(len(labels)) if i not in chosen)
        return (firsts + list(islice(rest, max(0, self.samples - len(firsts)))))[: self.samples]

    def caption(self, i: int) -> str:
        ev, names = self.evaluation, self.class_names
        predicted = int(ev.predictions[i])
        return f"true {names[ev.labels[i]]}\npred {names[predicted]} ({ev.probabilities[i, predicted]:.0%})"


def _e(value: Any) -> str:
    return html.escape(str(value))


def _cell(value: Any) -> str:
    if isinstance(value, bool) or value is None:
        return f"<td>{_e(value)}</td>"
    if isinstance(value, int):
        return f'<td class="num">{value:,}</td>'
    if isinstance(value, float):
        return f'<td class="num">{value:.4g}</td>'
    if isinstance(value, list | dict):
        return f"<td>{_e(json.dumps(value))}</td>"
    return f"<td>{_e(value)}</td>"


def table(headers: Sequence[str], rows: Sequence[Sequence[Any]]) -> str:
    head = "".join(f"<th>{_e(h)}</th>" for h in headers)
    body = "".join("<tr>" + "".join(_cell(v) for v in row) + "</tr>" for row in rows)
    return f"<table><thead><tr>{head}</tr></thead><tbody>{body}</tbody></table>"


def _note(text: str) -> str:
    return f'<p class="note">{_e(text)}</p>'


def header(ctx: Context) -> str:
    model, ev = ctx.model, ctx.evaluation
    facts = [f"model <b>{_e(ctx.config.get('model', getattr(model, 'name', 'model')))}</b>"]
    if ctx.config.get("data"):
        facts.append(f"data <b>{_e(ctx.config['data'])}</b>")
    if ev is not None:
        s = ev.summary
        facts.append(f"test accuracy <b>{s.accuracy:.2%}</b>")
        if s.has_top_k:  # with k >= classes it is always 0
            facts.append(f"top-{s.top_k} error <b>{s.top_k_error:.2%}</b>")
    if ctx.history.get("loss"):
        facts.append(f"{len(ctx.history['loss'])} epochs")
    warnings = (getattr(model, "training_summary", {}) or {}).get("warnings") or []
    notes = "".join(_note(f"warning: {w}") for w in warnings)  # what the run warned about, first
    return f'<h1>Run {_e(ctx.run_dir.name)}</h1>\n<p class="headline">{", ".join(facts)}</p>{notes}'


def _percent(value: float | None) -> str:
    """An accuracy or error rate as the report shows it: ``99.31%`` (``1.0`` would read as ``1``)."""
    return "" if value is None else f"{value:.2%}"


def _setting(value: Any) -> str:
    """An option's value as a user writes it on the command line: on/off, none, 0.001, a,b."""
    if isinstance(value, bool):
        return "on" if value else "off"
    if value is None:
        return "none"
    if isinstance(value, list | tuple):
        return ",".join(map(str, value))
    if isinstance(value, dict):
        return json.dumps(value)
    return str(value)


def _config(ctx: Context, page: Any) -> str:
    if not ctx.config:
        return _note("the run folder has no config.json")
    rows = [[f"--{key.replace('_', '-')}", _setting(value)] for key, value in ctx.config.items()]
    # Folded: a reader comes for the results; the settings are there to repeat or compare a run.
    return (f"<details><summary>all {len(rows)} settings of this run (config.json)</summary>"
            + table(["option", "value"], rows) + "</details>")  # fmt: skip


def _data_checks(run_dir: Path) -> str:
    """What the data check wrote into the run (a folder or CSV): a link to its page, the bad and conflicting files."""
    parts = []
    if (run_dir / "data_report.html").exists():
        parts.append('<p>The data check: <a href="data_report.html">data_report.html</a> (duplicates, leakage, '
                     "class balance, every file that could not be used).</p>")  # fmt: skip
    bad_file = run_dir / "bad_files.txt"
    bad = [line.split("\t") for line in bad_file.read_text().splitlines() if line] if bad_file.exists() else []
    if bad:
        rows = [(fields + ["", "", ""])[:3] for fields in bad[:50]]
        parts.append(f"<p>{len(bad)} file(s) could not be used and were skipped (<code>bad_files.txt</code>):</p>"
                     + table(["file", "problem", "detail"], rows))  # fmt: skip
    try:
        checked = json.loads((run_dir / "data_report.json").read_text())
    except (OSError, ValueError):
        checked = {}
    conflicts = [("identical files under different classes", g["files"]) for g in checked.get("label_conflicts", [])]
    conflicts += [(f"the same picture in {' and '.join(g['splits'])} ({g['kind']} copies)", g["files"])
                  for g in checked.get("leakage", [])]  # fmt: skip
    if conflicts:
        rows = [[what, ", ".join(f"{f['path']} ({f['class']}, {f['split']})" for f in files)]
                for what, files in conflicts[:50]]  # fmt: skip
        parts.append("<p>Conflicting files:</p>" + table(["problem", "files"], rows))
    return "\n".join(parts)


def _data(ctx: Context, page: Any) -> str:
    if ctx.dataset is None:
        return _note("no data loaded") + _data_checks(ctx.run_dir)
    ds, names = ctx.dataset, ctx.class_names
    val = ds.val.labels if ds.val is not None else np.zeros(0, np.int64)
    splits = (ctx.train_labels, val, ds.test.labels)
    counts = [np.bincount(labels, minlength=len(names)) for labels in splits]
    rows = [[name, int(a), int(b), int(c)] for name, a, b, c in zip(names, *counts)]
    rows.append(["total", *(len(labels) for labels in splits)])
    h, w, c = ds.image_shape
    intro = (f"<p>{_e(ds.name)}: {len(names)} classes, images {h}x{w} with {c} channel(s); the model sees "
             f"{_e(tuple(ctx.model.image_shape))} (height, width, channels).</p>")  # fmt: skip
    return intro + table(["class", "train", "validation", "test"], rows) + _data_checks(ctx.run_dir)


def _batch(ctx: Context, page: Any) -> str:
    picture = page.picture("train_batch.png", "a batch of augmented training images with their labels")
    if picture is None:
        return _note("the run folder has no train_batch.png (runs of cnnkit before 0.2 did not write it)")
    policy = ctx.config.get("augment", "none")
    return (f"<p>Training images at the model's input, through <code>--augment {_e(policy)}</code> as training "
            f"applies it; mixed labels show their two largest shares. Preview another policy with "
            f"<code>cnnkit show-batch --data {_e(ctx.config.get('data', 'DATA'))} --augment POLICY</code>.</p>"
            + picture)  # fmt: skip


def _model(ctx: Context, page: Any) -> str:
    model = ctx.model
    params = model.count_params() if hasattr(model, "count_params") else sum(p.numel() for p in model.parameters())
    text = f"<p>{_e(getattr(model, 'name', type(model).__name__))}: {params:,} parameters.</p>"
    try:
        rows = model.summary_rows()
    except (CnnkitError, AttributeError, RuntimeError):
        return text
    return text + table(["layer", "type", "output shape", "parameters"], rows)


def _training(ctx: Context, page: Any) -> str:
    from cnnkit.report.plots import curves_figure

    if not ctx.history.get("loss"):
        return _note("the run folder has no metrics.csv with per-epoch losses")
    summary = getattr(ctx.model, "training_summary", {}) or {}
    labels = {"epochs": "epochs", "best_epoch": "best epoch (lowest val_loss)", "val_accuracy": "val_accuracy",
              "seconds": "seconds to prepare the data and train"}  # fmt: skip
    facts = [(label, _percent(summary[key]) if key == "val_accuracy" else summary[key])
             for key, label in labels.items() if key in summary]  # fmt: skip
    if summary.get("losses"):
        facts.append(("losses", summary["losses"]))
    figure = page.figure(curves_figure(ctx.history), "training and validation loss and accuracy per epoch")
    return figure + (table(["", "value"], facts) if facts else "")


def _evaluation(ctx: Context, page: Any) -> str:
    from cnnkit.report.plots import confusion_figure

    ev = ctx.evaluation
    if ev is None:
        return _note("no test images, no evaluation")
    s = ev.summary
    top_k = [f"top-{s.top_k} error"] if s.has_top_k else []  # with k >= classes it is always 0
    summary = table(["images", "loss", "accuracy", *top_k, "ECE"],
                    [[s.n, s.loss, _percent(s.accuracy), *([_percent(s.top_k_error)] if top_k else []),
                      ev.calibration.ece]])  # fmt: skip
    rows = [[r.name, r.precision, r.recall, r.f1, r.support] for r in ev.per_class]
    rows += [[f"{label} average", avg["precision"], avg["recall"], avg["f1"], s.n]
             for label, avg in (("macro", ev.macro), ("weighted", ev.weighted))]  # fmt: skip
    per_class = table(["class", "precision", "recall", "F1", "support"], rows)
    pairs = ev.most_confused(10)
    confused = (
        table(
            ["true class", "predicted as", "images", "share of the class"],
            [[p.true, p.predicted, p.count, f"{p.rate:.1%}"] for p in pairs],
        )  # fmt: skip
        if pairs
        else "<p>No confusions: every test image was classified correctly.</p>"
    )
    matrix = page.figure(confusion_figure(ev), "confusion matrix, counts and row-normalized", "confusion.png")
    return (f"{summary}<h3>Per class</h3>{per_class}<h3>Confusion matrix</h3>{matrix}"
            f"<h3>Most confused pairs</h3>{confused}")  # fmt: skip


def _calibration(ctx: Context, page: Any) -> str:
    from cnnkit.report.plots import reliability_figure

    ev = ctx.evaluation
    if ev is None:
        return _note("no test images, no calibration")
    text = (f"<p>Expected calibration error {ev.calibration.ece:.4f}: on average the top-1 probability differs "
            f"from the accuracy of predictions that confident by {ev.calibration.ece:.1%}.</p>")  # fmt: skip
    return text + page.figure(reliability_figure(ev.calibration), "reliability diagram", "reliability.png")


def _filters(ctx: Context, page: Any) -> str:
    from cnnkit.explain import conv_kernels, first_conv
    from cnnkit.report.inside import filters_figure

    try:
        name, _ = first_conv(ctx.model)
        kernels = conv_kernels(ctx.model)
    except CnnkitError as e:
        return _note(str(e))
    text = f"<p>The {kernels.shape[0]} kernels of <code>{_e(name)}</code>, each scaled to its own range.</p>"
    return text + page.figure(filters_figure(kernels, name), f"kernels of {name}")


def _feature_maps(ctx: Context, page: Any) -> str:
    from cnnkit.explain import feature_maps
    from cnnkit.report.inside import feature_maps_figure

    if ctx.evaluation is None:
        return _note("no test images to show feature maps for")
    i = ctx.sample_indices[0]
    maps = feature_maps(ctx.model, ctx.model_images[i])
    if not maps:
        return _note("the model has no convolution")
    caption = ctx.caption(i).replace("\n", ", ")
    shapes = ", ".join(f"<code>{_e(name)}</code> {_e(tuple(m.shape))}" for name, m in maps.items())
    text = (f"<p>Every convolution's output for test image {i} ({_e(caption)}), as (channels, height, width): "
            f"{shapes}.</p>")  # fmt: skip
    return text + page.figure(feature_maps_figure(maps), f"feature maps of test image {i}")


def _heatmaps(ctx: Context, page: Any) -> str:
    """A registered heat-map method (the registry's default unless named) on a few test images, for the
    predicted class; then every method measured against the trivial orders (deletion, insertion)."""
    from cnnkit.explain import get_method, heatmap
    from cnnkit.report.inside import heatmaps_figure

    entry = get_method(ctx.method, "heatmap")
    if ctx.evaluation is None:
        return _note("no test images to explain")
    images, heats, captions, layer = [], [], [], None
    for i in ctx.sample_indices:
        x = ctx.model_images[i]  # (C, H, W)
        try:
            drawn = heatmap(ctx.model, x, method=entry.name)
        except CnnkitError as e:
            return _note(str(e))
        images.append(x.permute(1, 2, 0).numpy())
        heats.append(drawn.heat)
        captions.append(ctx.caption(i))
        layer = drawn.layer
    title = f"{entry.title} of the predicted class" + (f" at {layer}" if layer else "")
    text = f"<p>{_e(entry.title)}: {_e(entry.description)}. Red is where it is highest.</p>"
    figure = page.figure(heatmaps_figure(images, heats, captions, title), title)
    return text + figure + _heatmap_quality(ctx, entry.name, layer)


# Enough test images to rank the methods, few enough to keep the report a few seconds: every method's
# maps take 2 x 21 forward passes per image, so large inputs (photos at 224x224) get fewer.
_QUALITY_IMAGES, _QUALITY_IMAGES_LARGE, _LARGE_INPUT = 12, 4, 64 * 64


def _heatmap_quality(ctx: Context, drawn: str, drawn_layer: str | None) -> str:
    """Deletion and insertion of every heat-map method and of the trivial orders, and the verdict in words."""
    from cnnkit.explain import conv_layer_names, resolve_layer
    from cnnkit.explain.quality import measure_heatmaps

    convs = conv_layer_names(ctx.model)  # the CAM methods at the last three convolutions and the default one
    layers = list(dict.fromkeys([*convs[-3:], resolve_layer(ctx.model, None)[0]])) if convs else None
    images = ctx.model_images
    count = _QUALITY_IMAGES if images.shape[-2] * images.shape[-1] <= _LARGE_INPUT else _QUALITY_IMAGES_LARGE
    try:
        quality = measure_heatmaps(ctx.model, images[:count], layers=layers)
    except CnnkitError as e:
        return _note(f"the heat maps could not be measured: {e}")
    rows = [[s.name, s.deletion, s.insertion, "beats every trivial order" if quality.beats_baselines(s) else ""]
            for s in quality.methods]  # fmt: skip
    rows += [[s.name, s.deletion, s.insertion, "trivial order"] for s in quality.baselines]
    intro = (f"<h3>Do the heat maps tell more than trivial orders?</h3><p>Deletion: the test image's pixels set to 0 "
             f"in the heat map's order, most relevant first, in {quality.steps} steps; the area under the predicted "
             f"class's probability (lower is better). Insertion: the pixels put back into a blurred copy in that "
             f"order (higher is better). Petsiuk et al. (RISE, 2018), on the first {quality.images} test "
             f"images.</p>")  # fmt: skip
    words = [quality.verdict()]
    shown = next((s for s in quality.methods if (s.method, s.layer) == (drawn, drawn_layer)), None)
    if shown is not None and not quality.beats_baselines(shown):
        words.append(f"The heat maps above ({shown.name}) do not beat them.")
    best = quality.best
    if best is not None and best is not shown:
        layer = f" --layer {best.layer}" if best.layer else ""
        words.append(f"To draw {best.name}: cnnkit explain MODEL IMAGE --method {best.method}{layer}.")
    verdict = f"<p><b>{_e(' '.join(words))}</b></p>"  # a finding, not a section that fell back to a note
    return intro + table(["heat map", "deletion", "insertion", ""], rows) + verdict


def _mistakes(ctx: Context, page: Any) -> str:
    from cnnkit.report.plots import mistakes_figure

    ev = ctx.evaluation
    if ev is None:
        return _note("no test images, no mistakes to show")
    figure = mistakes_figure(ev, ctx.dataset.test.images)
    if not figure:
        return "<p>The model got every test image right.</p>"
    predicted = ev.predictions
    rows = [[int(i), ev.class_names[ev.labels[i]], ev.class_names[predicted[i]],
             float(ev.probabilities[i, predicted[i]]), float(ev.losses[i])]
            for i in ev.worst(len(ev.losses)) if not ev.correct[i]][:10]  # fmt: skip
    return page.figure(figure, "highest-loss mistakes", "mistakes.png") + table(
        ["test image", "true class", "predicted", "probability", "loss"], rows
    )


RENDERERS: dict[str, Callable[[Context, Any], str]] = {
    "config": _config,
    "data": _data,
    "batch": _batch,
    "model": _model,
    "training": _training,
    "evaluation": _evaluation,
    "calibration": _calibration,
    "filters": _filters,
    "feature-maps": _feature_maps,
    "gradcam": _heatmaps,  # the section keeps its id whichever method draws it
    "mistakes": _mistakes,
}
