"""``data_report.html``: the health report as one self-contained page, thumbnails inlined as base64 PNGs.

Every file name and message is HTML-escaped (a file may be called ``<script>.png``).
Thumbnails are decoded through the one decoding path; a file that fails shows a grey box.
"""

from __future__ import annotations

import base64
import html
import io
from pathlib import Path
from typing import Any

import numpy as np
from PIL import Image

from cnnkit.data.check import DataReport
from cnnkit.data.decode import open_image, to_array
from cnnkit.errors import DataError

__all__ = ["render_html", "thumbnail_uri"]

THUMB = 96
_MAX_GROUPS = 40  # per section: a report of 10,000 duplicate groups helps nobody
_SAMPLES_PER_CLASS = 6
_STYLE = """
body{font:14px/1.45 system-ui,sans-serif;margin:2em auto;max-width:1100px;color:#222;padding:0 1em}
h1{font-size:1.5em}h2{margin-top:2em;border-bottom:1px solid #ddd;padding-bottom:.2em}
table{border-collapse:collapse}td,th{padding:.25em .7em;border-bottom:1px solid #eee;text-align:left;vertical-align:top}
.num{text-align:right;font-variant-numeric:tabular-nums}.bar{background:#4a7fd4;height:.8em;display:inline-block}
.group{display:flex;gap:.6em;flex-wrap:wrap;margin:.6em 0;padding:.5em;background:#f7f7f7;border-radius:6px}
figure{margin:0;width:110px;font-size:11px;overflow-wrap:anywhere}figure img{width:96px;height:96px;object-fit:contain;
background:#ddd;display:block}.warn{color:#a40}.ok{color:#070}code{font-size:12px}
"""


def thumbnail_uri(path: Path) -> str | None:
    """A ``data:image/png;base64,...`` thumbnail of an image file, or None if it cannot be decoded."""
    try:
        decoded = open_image(path, draft=(2 * THUMB, 2 * THUMB))
    except DataError:
        return None
    rgb = (to_array(decoded.image, 3) * 255).round().astype(np.uint8)  # (H, W, 3)
    img = Image.fromarray(rgb)
    img.thumbnail((THUMB, THUMB))
    buffer = io.BytesIO()
    img.save(buffer, format="PNG", optimize=True)
    return "data:image/png;base64," + base64.b64encode(buffer.getvalue()).decode("ascii")


def _figure(report: DataReport, path: str, caption: str) -> str:
    uri = thumbnail_uri(report.index.root / path if not Path(path).is_absolute() else Path(path))
    img = f'<img src="{uri}" alt="">' if uri else '<img alt="unreadable">'
    return f"<figure>{img}<figcaption>{html.escape(caption)}</figcaption></figure>"


def _groups(report: DataReport, groups: list[list[dict[str, str]]], empty: str) -> str:
    if not groups:
        return f'<p class="ok">{html.escape(empty)}</p>'
    parts = []
    for files in groups[:_MAX_GROUPS]:
        figures = "".join(_figure(report, f["path"], f"{f['path']} ({f['class']}, {f['split']})") for f in files[:8])
        more = f"<p>and {len(files) - 8} more</p>" if len(files) > 8 else ""
        parts.append(f'<div class="group">{figures}{more}</div>')
    if len(groups) > _MAX_GROUPS:
        parts.append(f"<p>and {len(groups) - _MAX_GROUPS} more groups (all in data_report.json)</p>")
    return "".join(parts)


def _class_table(counts: dict[str, dict[str, int]]) -> str:
    roles = list(counts)
    top = max(max(counts["all"].values()), 1)
    head = "".join(f'<th class="num">{html.escape(r)}</th>' for r in roles)
    rows = []
    for name, n in counts["all"].items():
        cells = "".join(f'<td class="num">{counts[r][name]:,}</td>' for r in roles)
        bar = f'<span class="bar" style="width:{200 * n / top:.0f}px"></span>'
        rows.append(f"<tr><td>{html.escape(name)}</td>{cells}<td>{bar}</td></tr>")
    return f"<table><tr><th>class</th>{head}<th></th></tr>{''.join(rows)}</table>"


def _samples(report: DataReport) -> str:
    parts = []
    for label, name in enumerate(report.index.class_names[:30]):
        chosen = [i for i, r in enumerate(report.records) if r.ok and report.index.labels[i] == label]
        paths = [report.index.relative(report.index.paths[i]) for i in chosen[:_SAMPLES_PER_CLASS]]
        figures = "".join(_figure(report, path, path) for path in paths)
        parts.append(f"<h3>{html.escape(name)}</h3><div class='group'>{figures}</div>")
    return "".join(parts)


def _table(rows: list[list[Any]], head: list[str]) -> str:
    cells = "".join("<tr>" + "".join(f"<td>{html.escape(str(c))}</td>" for c in row) + "</tr>" for row in rows)
    return f"<table><tr>{''.join(f'<th>{html.escape(h)}</th>' for h in head)}</tr>{cells}</table>"


def render_html(report: DataReport) -> str:
    """The whole page."""
    d = report.to_dict()
    ratio = "n/a" if d["imbalance_ratio"] is None else f"{d['imbalance_ratio']:.2f}x"
    bad = (_table([[b["path"], b["kind"], b["error"]] for b in d["bad_files"]], ["file", "problem", "detail"])
           if d["bad_files"] else '<p class="ok">Every file could be read.</p>')  # fmt: skip
    leaks = [g["files"] for g in d["leakage"]]
    conflicts = [g["files"] for g in d["label_conflicts"]]
    sizes = d["sizes"]
    skipped = "".join(f"<li><code>{html.escape(p)}</code></li>" for p in d["skipped_not_images"][:200])
    body = f"""
<h1>Data report: {html.escape(d["source"])}</h1>
<p>{d["files"]:,} files, {d["readable"]:,} readable, {len(d["classes"])} classes, imbalance ratio {ratio}
(largest class / smallest). Near duplicates: difference hashes at most {d["near_threshold_bits"]} bits apart.</p>
<h2>Class counts</h2>{_class_table(d["class_counts"])}
<h2>Files that cannot be used ({len(d["bad_files"])})</h2>
<p>Training skips these and lists them in <code>bad_files.txt</code>; they are never modified.</p>{bad}
<h2 class="{"warn" if leaks else ""}">Leakage: the same picture in two splits ({len(leaks)})</h2>
{_groups(report, leaks, "No picture appears in more than one split.")}
<h2 class="{"warn" if conflicts else ""}">Identical files under different classes ({len(conflicts)})</h2>
{_groups(report, conflicts, "No identical files carry different labels.")}
<h2>Exact duplicates ({len(d["exact_duplicates"])} groups)</h2>
{_groups(report, d["exact_duplicates"], "No two files have the same content.")}
<h2>Near duplicates ({len(d["near_duplicates"])} groups)</h2>
{_groups(report, d["near_duplicates"], "No near duplicates found.")}
<h2>Sizes, modes and formats</h2>
<p>Width x height: smallest {sizes["min"]}, median {sizes["median"]}, largest {sizes["max"]}.</p>
{_table(sizes["most_common"], ["most common size", "files"])}
{_table(list(d["modes"].items()), ["mode", "files"])} {_table(list(d["formats"].items()), ["format", "files"])}
<h2>Not images by name, skipped ({len(d["skipped_not_images"])})</h2><ul>{skipped}</ul>
<h2>Samples per class</h2>{_samples(report)}
"""
    return (f'<!doctype html><html lang="en"><head><meta charset="utf-8"><title>cnnkit data report</title>'
            f"<style>{_STYLE}</style></head><body>{body}</body></html>\n")  # fmt: skip
