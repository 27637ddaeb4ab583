"""``report.html``: one self-contained page about a training run, every image inlined.

:func:`write_report` reads the run folder (``config.json``, ``metrics.csv``, ``split.json``,
``model.safetensors``), evaluates the model on the run's test split (reopened from
``split.json``, as resuming does), looks inside it, and writes ``report.html`` (plus ``confusion.png``,
``reliability.png`` and ``mistakes.png``) into the folder. ``cnnkit report RUN_DIR`` and the
end of every training run call it.
"""

from __future__ import annotations

import base64
import csv
import html
import json
import os
from datetime import datetime
from pathlib import Path
from typing import Any

import torch
from matplotlib.figure import Figure

from cnnkit import __version__
from cnnkit._io import atomic_write_bytes, atomic_write_text
from cnnkit.errors import CnnkitError, ConfigError
from cnnkit.report import sections
from cnnkit.report.plots import figure_png
from cnnkit.runs import MODEL_FILE

__all__ = ["REPORT_FILE", "SECTIONS", "read_history", "write_report"]

REPORT_FILE = "report.html"
# (id, heading) in page order; every report has each of these sections, even if only to say why it is empty.
# Results first (the header's summary, then what the run learned and how well), then how the model
# works inside, then what it was trained on and with; the settings last, folded.
SECTIONS = (
    ("training", "Training curves"),
    ("evaluation", "Evaluation on the test split"),
    ("calibration", "Calibration"),
    ("gradcam", "Where the model looks"),  # Grad-CAM unless write_report(method=...) names another
    ("mistakes", "Worst mistakes"),
    ("filters", "First-layer filters"),
    ("feature-maps", "Feature maps"),
    ("data", "Data"),
    ("batch", "What the model is fed"),
    ("model", "Model"),
    ("config", "Settings"),
)

_CSS = """
body { font: 15px/1.45 system-ui, -apple-system, "Segoe UI", sans-serif; margin: 0 auto; max-width: 1100px;
       padding: 1rem 2rem 4rem; color: #1d1d1f; }
h1 { margin-bottom: .2rem; } h2 { border-bottom: 1px solid #ddd; padding-bottom: .2rem; margin-top: 2.2rem; }
nav { display: flex; flex-wrap: wrap; gap: .3rem 1rem; } .muted { color: #666; }
table { border-collapse: collapse; margin: .6rem 0; font-size: 14px; }
th, td { border: 1px solid #ddd; padding: .25rem .6rem; text-align: left; } td.num { text-align: right; }
th { background: #f5f5f7; } img { max-width: 100%; height: auto; display: block; margin: .6rem 0; }
.headline { font-size: 1.15rem; } .note { background: #fff8e1; padding: .5rem .8rem; border-radius: 4px; }
details > summary { cursor: pointer; color: #0a58ca; margin: .4rem 0; } code { font-size: 13px; }
"""


def read_history(path: str | os.PathLike) -> dict[str, list[float]]:
    """``metrics.csv`` -> column -> values per epoch (numeric columns only; ``{}`` if there is no file)."""
    path = Path(path)
    if not path.exists():
        return {}
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    history: dict[str, list[float]] = {}
    for key in rows[0] if rows else []:
        try:
            history[key] = [float(row[key]) for row in rows]
        except (TypeError, ValueError):
            continue  # a non-numeric or incomplete column is not a curve
    history.pop("epoch", None)
    return history


def _img(png: bytes, alt: str) -> str:
    data = base64.b64encode(png).decode("ascii")
    return f'<img src="data:image/png;base64,{data}" alt="{html.escape(alt)}">'


class _Page:
    """Collects the sections' HTML and the figures, inlined once and optionally saved beside the report."""

    def __init__(self, run_dir: Path) -> None:
        self.run_dir = run_dir
        self.parts: dict[str, str] = {}

    def figure(self, fig: Figure | None, alt: str, save_as: str | None = None) -> str:
        if fig is None:
            return ""
        png = figure_png(fig)
        if save_as:
            atomic_write_bytes(self.run_dir / save_as, png)
        return _img(png, alt)

    def picture(self, name: str, alt: str) -> str | None:
        """A PNG of the run folder inlined (None if the folder has no such file)."""
        path = self.run_dir / name
        return _img(path.read_bytes(), alt) if path.exists() else None


def _read_config(run_dir: Path) -> dict[str, Any]:
    """The run's ``config.json`` (``{}`` if it has none); a folder without a model is not a run."""
    if not run_dir.is_dir():
        raise ConfigError(f"{run_dir}: no such run folder")
    if not (run_dir / MODEL_FILE).exists():
        raise ConfigError(f"{run_dir} has no {MODEL_FILE}: not a finished training run")
    path = run_dir / "config.json"
    if not path.exists():
        return {}
    try:
        return json.loads(path.read_text())
    except json.JSONDecodeError as e:
        raise ConfigError(f"{path}: not valid JSON ({e})") from None


def write_report(
    run_dir: str | os.PathLike,
    *,
    model: torch.nn.Module | None = None,
    data: Any = None,
    samples: int = 6,
    method: str | None = None,
) -> Path:
    """Build ``RUN_DIR/report.html`` and return its path.

    ``model`` and ``data`` (the run's :class:`~cnnkit.data.prepare.TrainingData`, or a
    :class:`~cnnkit.data.Dataset`) may be passed when the caller has them in memory (the end
    of a training run); otherwise the model is loaded from the run folder and the data
    reopened from its ``split.json`` exactly as the run split it. ``samples`` test images
    get heat maps by ``method`` (a registered heat-map method; Grad-CAM by default).
    """
    from cnnkit.models import load_model

    run_dir = Path(run_dir)
    config = _read_config(run_dir)
    model = model if model is not None else load_model(run_dir / MODEL_FILE)
    data_note = None
    if data is None:
        from cnnkit.data.prepare import reopen_data

        try:
            data = reopen_data(run_dir, data_dir=config.get("data_dir"))
        except CnnkitError as e:
            data_note = f"the run's data could not be reopened, so there is no evaluation: {e}"
    page = _Page(run_dir)
    history = read_history(run_dir / "metrics.csv")
    context = sections.Context(run_dir, config, history, model, data, samples, method)
    body = [sections.header(context)]
    if data_note:
        body.append(f'<p class="note">{html.escape(data_note)}</p>')
    body.append("<nav>" + "".join(f'<a href="#{sid}">{html.escape(title)}</a>' for sid, title in SECTIONS) + "</nav>")
    for sid, title in SECTIONS:
        content = sections.RENDERERS[sid](context, page)
        body.append(f'<section id="{sid}"><h2>{html.escape(title)}</h2>\n{content}\n</section>')
    generated = datetime.now().strftime("%Y-%m-%d %H:%M")
    body.append(f'<p class="muted">Generated by cnnkit {__version__} on {generated}.</p>')
    title = f"cnnkit report: {run_dir.name}"
    document = (
        f'<!DOCTYPE html>\n<html lang="en">\n<head>\n<meta charset="utf-8">\n'
        f'<meta name="viewport" content="width=device-width, initial-scale=1">\n'
        f"<title>{html.escape(title)}</title>\n<style>{_CSS}</style>\n</head>\n<body>\n"
        + "\n".join(body)
        + "\n</body>\n</html>\n"
    )
    return atomic_write_text(run_dir / REPORT_FILE, document)
