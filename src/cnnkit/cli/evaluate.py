"""``cnnkit evaluate``: a model on a data set's test split, a folder, a CSV, or its run's own test split."""

from __future__ import annotations

import argparse
import json

from cnnkit.cli._common import console


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="loss, accuracy and top-k error of a model on a data set's test split")
    p.add_argument("model", help="model file or run folder")
    p.add_argument("--data", help="data set name, folder or CSV (default: the run's own test split)")
    p.add_argument(
        "--data-dir", help="the data cache for standard data sets (default: $CNNKIT_DATA, else ~/.cache/cnnkit)"
    )
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.data.saved_split import evaluation_data
    from cnnkit.evaluate import evaluate_arrays
    from cnnkit.models import load_model
    from cnnkit.runs import resolve_model_path

    model_path = resolve_model_path(args.model)
    model = load_model(model_path)
    run_dir = model_path.parent if (model_path.parent / "split.json").exists() else None
    arrays, where = evaluation_data(args.data, class_names=list(model.class_names or []) or None,
                                    input_shape=model.image_shape, run_dir=run_dir, data_dir=args.data_dir)  # fmt: skip
    result = evaluate_arrays(model, arrays.images, arrays.labels, batch_size=args.batch_size)
    if args.json:
        print(json.dumps({"model": args.model, "data": args.data or where, **result.to_dict()}))
    else:
        console.print(f"{where}, {result.n} images")
        console.print(f"loss          {result.loss:.4f}")
        console.print(f"accuracy      {result.accuracy:.2%}")
        console.print(f"top-{result.top_k} error   {result.top_k_error:.2%}")
    return 0
