"""``cnnkit report``: (re)build a training run's self-contained report.html."""

from __future__ import annotations

import argparse

from cnnkit.cli._common import console


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "report",
        help="rebuild a run's report.html (config, data, curves, evaluation, filters, heat maps, mistakes)",
    )
    p.add_argument("run_dir", metavar="RUN_DIR", help="a training run's folder (runs/<name>/)")
    p.add_argument("--samples", type=int, default=6, help="test images to show Grad-CAM for (default 6)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.errors import CnnkitError
    from cnnkit.report import write_report
    from cnnkit.runs import resolve_run

    if args.samples < 1:
        raise CnnkitError("--samples must be at least 1")
    path = write_report(resolve_run(args.run_dir), samples=args.samples)
    console.print(f"report written to {path}")
    return 0
