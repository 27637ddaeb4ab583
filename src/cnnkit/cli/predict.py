"""``cnnkit predict``: top-k classes for image files, folders and globs."""

from __future__ import annotations

import argparse
import csv
import json
import sys

from rich.table import Table

from cnnkit.cli._common import console
from cnnkit.errors import CnnkitError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-k classes for image files, folders or globs")
    p.add_argument("model", help="model file or run folder")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    p.add_argument("-k", "--top-k", type=int, default=3)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="json: one object per line")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.models import load_model
    from cnnkit.predict import predict_files
    from cnnkit.runs import resolve_model_path

    if args.top_k < 1:
        raise CnnkitError("--top-k must be at least 1")
    model = load_model(resolve_model_path(args.model))
    predictions = predict_files(model, args.paths, top_k=args.top_k, batch_size=args.batch_size)
    ok = failed = 0
    table = Table("file", "prediction", "probability", "top-k") if args.format == "table" else None
    writer = csv.writer(sys.stdout) if args.format == "csv" else None
    if writer:
        writer.writerow(["path", "rank", "label", "probability"])
    for pred in predictions:
        if pred.error is not None:
            failed += 1
            print(f"cnnkit: skipped {pred.path}: {pred.error}", file=sys.stderr)
            continue
        ok += 1
        if table is not None:
            rest = ", ".join(f"{label} {p:.1%}" for label, p in zip(pred.labels[1:], pred.probabilities[1:]))
            table.add_row(pred.path, pred.labels[0], f"{pred.probabilities[0]:.1%}", rest)
        elif writer is not None:
            for rank, (label, p) in enumerate(zip(pred.labels, pred.probabilities), 1):
                writer.writerow([pred.path, rank, label, f"{p:.6f}"])
        else:
            print(json.dumps(pred.to_dict()), flush=True)
    if table is not None and ok:
        console.print(table)
    if failed:
        print(f"cnnkit: {failed} file(s) could not be read", file=sys.stderr)
    return 0 if ok else 1
