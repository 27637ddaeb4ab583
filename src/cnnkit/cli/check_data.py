"""``cnnkit check-data PATH``: the health report of a folder or CSV of images, before any training."""

from __future__ import annotations

import argparse
import json
from pathlib import Path

from rich.table import Table

from cnnkit.cli._common import console


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "check-data",
        help="check a folder or CSV of images: unreadable files, duplicates, leakage, class balance",
        description="Read every image once and report what would hurt training. Nothing in PATH is modified.",
    )
    p.add_argument("path", metavar="PATH", help="a folder of class sub-folders (optionally train/ val/ test/) or a CSV")
    p.add_argument("--out", default=".", help="where data_report.json and data_report.html go (default: here)")
    p.add_argument("--near-threshold", type=int, default=None, metavar="BITS",
                   help="near duplicates: difference hashes at most this many bits apart (default 4)")  # fmt: skip
    p.add_argument("--workers", type=int, help="decoding threads (default: one per core)")
    p.add_argument("--json", action="store_true", help="print the report as JSON instead of tables")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit._io import atomic_write_json, atomic_write_text
    from cnnkit.data.check import NEAR_THRESHOLD, build_report
    from cnnkit.data.check_html import render_html
    from cnnkit.data.folders import index_path
    from cnnkit.data.scan import scan_files
    from cnnkit.errors import ConfigError

    threshold = NEAR_THRESHOLD if args.near_threshold is None else args.near_threshold
    if not 0 <= threshold <= 32:
        raise ConfigError("--near-threshold must be between 0 and 32 bits")
    index = index_path(args.path)
    scan = scan_files(index.paths, workers=args.workers, progress=not args.json)
    report = build_report(args.path, index, scan, near_threshold=threshold)
    summary = report.to_dict()
    out = Path(args.out)
    atomic_write_json(out / "data_report.json", summary)
    atomic_write_text(out / "data_report.html", render_html(report))
    if args.json:
        print(json.dumps(summary))
        return 0
    _print(summary)
    console.print(f"report: {out / 'data_report.html'} and {out / 'data_report.json'}")
    return 0


def _print(d: dict) -> None:
    counts = d["class_counts"]
    console.print(f"{d['source']}: {d['readable']:,} of {d['files']:,} files readable, {len(d['classes'])} classes")
    table = Table("class", *counts)
    for name in d["classes"]:
        table.add_row(name, *(f"{counts[role][name]:,}" for role in counts))
    console.print(table)
    ratio = "n/a (a class has no readable images)" if d["imbalance_ratio"] is None else f"{d['imbalance_ratio']:.2f}x"
    problems = Table("check", "result", show_header=False)
    problems.add_row("imbalance (largest / smallest class)", ratio)
    problems.add_row("unreadable, truncated or non-image files", str(len(d["bad_files"])))
    problems.add_row("exact duplicate groups", str(len(d["exact_duplicates"])))
    problems.add_row(f"near duplicate groups (<= {d['near_threshold_bits']} bits)", str(len(d["near_duplicates"])))
    problems.add_row("same picture in two splits (leakage)", str(len(d["leakage"])))
    problems.add_row("identical files under different classes", str(len(d["label_conflicts"])))
    problems.add_row("files skipped: not images by name", str(len(d["skipped_not_images"])))
    sizes = d["sizes"]
    problems.add_row("sizes (w x h): min / median / max", f"{sizes['min']} / {sizes['median']} / {sizes['max']}")
    problems.add_row("modes", ", ".join(f"{m} {n}" for m, n in d["modes"].items()))
    console.print(problems)
    if d["bad_files"]:
        bad = Table("file", "problem", "detail", title="files training will skip")
        for entry in d["bad_files"][:30]:
            bad.add_row(entry["path"], entry["kind"], entry["error"])
        console.print(bad)
        if len(d["bad_files"]) > 30:
            console.print(f"... and {len(d['bad_files']) - 30} more (all in data_report.json)")
    # Name the files, so a user can open them: the first ten groups of each kind, all in data_report.json.
    named = (("leak ({kind})", d["leakage"]), ("different classes", d["label_conflicts"]),
             ("exact duplicates", d["exact_duplicates"]), ("near duplicates", d["near_duplicates"]))  # fmt: skip
    for label, groups in named:
        for group in groups[:10]:
            files = group["files"] if isinstance(group, dict) else group
            title = label.format(kind=group.get("kind", "")) if isinstance(group, dict) else label
            console.print(f"{title}: " + ", ".join(f"{f['path']} [{f['class']}, {f['split']}]" for f in files))
        if len(groups) > 10:
            console.print(f"... and {len(groups) - 10} more {label.split(' (')[0]} groups (all in data_report.json)")
