"""``cnnkit predict``: top-k classes for image files, folders and globs, streamed."""

from __future__ import annotations

import argparse
import csv
import json
import sys
import warnings

from rich.table import Table

from cnnkit.cli._common import console
from cnnkit.errors import CnnkitError, DataError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "predict",
        help="top-k classes for image files, folders or globs",
        description="Top-k classes for image files, folders (searched recursively) and globs. Streams: memory "
        "stays flat for any number of files with csv or json output.",
    )
    p.add_argument(
        "model",
        help="model file, run folder, `latest` (the newest run under runs/), a prefix of one "
        "run's name under runs/, or an ONNX or TorchScript file from `cnnkit export`",
    )
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    p.add_argument("-k", "--top-k", type=int, default=3)
    p.add_argument(
        "--format",
        choices=["table", "csv", "json"],
        default="table",
        help="table: shown when all files are done; csv and json (one object per line): streamed as computed",
    )
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default="auto",
        help="auto (default): ONNX Runtime on a CPU (exported, checked and cached next to the model on first "
        "use), PyTorch on a GPU; torch: PyTorch eager; onnx: ONNX Runtime",
    )
    p.add_argument("--device", default="auto", help="for the torch backend: auto, cpu, cuda, cuda:N")
    p.add_argument("--tta", action="store_true", help="average with the mirror image (not for digits or text)")
    p.add_argument("--workers", type=int, default=None, help="image-decoding processes (default: cores, up to 4)")
    p.set_defaults(run=run)


def _load(args: argparse.Namespace):
    from cnnkit.predict import open_predictor

    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        predictor = open_predictor(args.model, args.backend, device=args.device)
    for warning in caught:
        print(f"cnnkit: warning: {warning.message}", file=sys.stderr)
    return predictor


def run(args: argparse.Namespace) -> int:
    from cnnkit.predict import predict_files

    if args.top_k < 1:
        raise CnnkitError("--top-k must be at least 1")
    if args.workers is not None and args.workers < 0:
        raise CnnkitError("--workers must be 0 or more")
    from cnnkit.runs import refuse_runs_as_inputs

    refuse_runs_as_inputs(args.paths, args.model)  # before loading anything: a glob that matched several runs
    predictor = _load(args)
    predictions = predict_files(
        predictor, args.paths, top_k=args.top_k, batch_size=args.batch_size, tta=args.tta, workers=args.workers
    )
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
            ranked = enumerate(zip(pred.labels, pred.probabilities), 1)
            writer.writerows((pred.path, rank, label, f"{p:.6f}") for rank, (label, p) in ranked)
        else:
            print(json.dumps(pred.to_dict()), flush=True)
    if table is not None and ok:
        console.print(table)
    if failed:
        print(f"cnnkit: {failed} file(s) could not be read", file=sys.stderr)
    if ok + failed == 0:
        raise DataError(f"no image files in {' '.join(args.paths)}")
    return 0 if ok else 1
