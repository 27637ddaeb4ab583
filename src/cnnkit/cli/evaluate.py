"""``cnnkit evaluate``: a model on a data set's test split, a folder, a CSV, or its run's own test split;
or two models compared on the same images."""

from __future__ import annotations

import argparse
import json

from rich.table import Table

from cnnkit.cli._common import console
from cnnkit.errors import CnnkitError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "evaluate",
        help="accuracy, per-class metrics, confusion, calibration of a model on a data set's test split",
        description="Evaluate MODEL on --data (a data set's test split, a folder or a CSV; default: the run's own "
        "test split); with --compare, evaluate MODEL_A and MODEL_B on the same images and test whether their "
        "accuracies differ.",
    )
    p.add_argument("models", nargs="+", metavar="MODEL", help="model file or run folder (two with --compare)")
    p.add_argument("--data", help="data set name, folder or CSV (default: the run's own test split)")
    p.add_argument(
        "--data-dir", help="the data cache for standard data sets (default: $CNNKIT_DATA, else ~/.cache/cnnkit)"
    )
    p.add_argument("--compare", action="store_true", help="compare two models: bootstrap interval and McNemar's test")
    p.add_argument("--top-k", type=int, default=5, help="k of the top-k error (default 5)")
    p.add_argument("--out", metavar="DIR", help="write confusion.png, reliability.png and mistakes.png here")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.recipe.evaluate import evaluate_saved

    expected = 2 if args.compare else 1
    if len(args.models) != expected:
        raise CnnkitError(
            "--compare takes exactly two models: cnnkit evaluate --compare MODEL_A MODEL_B --data NAME"
            if args.compare
            else f"evaluate takes one model (got {len(args.models)}); to compare two, add --compare"
        )
    if args.top_k < 1:
        raise CnnkitError("--top-k must be at least 1")
    result = evaluate_saved(args.models, data=args.data, data_dir=args.data_dir, top_k=args.top_k,
                            batch_size=args.batch_size, plots_dir=None if args.compare else args.out)  # fmt: skip
    if args.compare:
        return _report_comparison(args, result)
    ev = result.evaluations[0]
    plots = [str(p) for p in result.plots]
    if args.json:
        print(json.dumps({"model": args.models[0], "data": args.data or result.where, **ev.to_dict(), "plots": plots}))
        return 0
    _print_evaluation(result.where, ev)
    if plots:
        console.print(f"plots written: {', '.join(plots)}")
    return 0


def _print_evaluation(where: str, ev) -> None:  # noqa: ANN001
    s = ev.summary
    console.print(f"{where}, {s.n} images")
    console.print(f"loss          {s.loss:.4f}")
    console.print(f"accuracy      {s.accuracy:.2%}")
    if s.has_top_k:  # with k >= classes the top-k error is always 0
        console.print(f"top-{s.top_k} error   {s.top_k_error:.2%}")
    console.print(f"ECE           {ev.calibration.ece:.4f}  (expected calibration error, 15 bins)")
    table = Table("class", "precision", "recall", "F1", "support", title="per class")
    for row in ev.per_class:
        table.add_row(row.name, f"{row.precision:.3f}", f"{row.recall:.3f}", f"{row.f1:.3f}", str(row.support))
    for label, avg in (("macro avg", ev.macro), ("weighted avg", ev.weighted)):
        table.add_row(label, f"{avg['precision']:.3f}", f"{avg['recall']:.3f}", f"{avg['f1']:.3f}", str(s.n))
    console.print(table)
    pairs = ev.most_confused(5)
    if pairs:
        console.print("most confused: " + "; ".join(
            f"{p.true} -> {p.predicted} ({p.count}, {p.rate:.0%})" for p in pairs))  # fmt: skip


def _report_comparison(args: argparse.Namespace, result) -> int:  # noqa: ANN001
    a, b = result.evaluations
    c = result.comparison
    if args.json:
        print(json.dumps({
            "data": args.data or result.where,
            "a": {"model": args.models[0], **a.summary.to_dict()},
            "b": {"model": args.models[1], **b.summary.to_dict()},
            "comparison": c.to_dict(),
        }))  # fmt: skip
        return 0
    top_k = a.summary.has_top_k
    console.print(f"{result.where}, {c.n} images")
    for label, path in (("A", args.models[0]), ("B", args.models[1])):  # whole paths: two runs' often share a prefix
        console.print(f"{label}  {path}")
    table = Table("", "accuracy", *([f"top-{a.summary.top_k} error"] if top_k else []), "loss")
    for label, ev in (("A", a), ("B", b)):
        s = ev.summary
        table.add_row(label, f"{s.accuracy:.2%}", *([f"{s.top_k_error:.2%}"] if top_k else []), f"{s.loss:.4f}")
    console.print(table)
    level = f"{c.confidence:.0%}"
    console.print(
        f"A - B accuracy  {c.difference:+.2%}  ({level} bootstrap interval {c.ci_low:+.2%} to {c.ci_high:+.2%})"
    )
    console.print(
        f"only A right on {c.only_a} images, only B right on {c.only_b}; McNemar's exact test p = {c.mcnemar_p:.4g}"
    )
    console.print(f"verdict: {c.verdict()}")
    return 0
