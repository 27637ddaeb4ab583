"""``cnnkit evaluate``: a model on a data set's test split."""

from __future__ import annotations

import argparse
import json

from cnnkit.cli._common import console
from cnnkit.errors import CnnkitError


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="loss, accuracy and top-k error of a model on a data set's test split")
    p.add_argument("model", help="model file or run folder")
    p.add_argument("--data", required=True, help="data set name")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit import data
    from cnnkit.evaluate import evaluate_arrays
    from cnnkit.models import load_model
    from cnnkit.runs import resolve_model_path

    model = load_model(resolve_model_path(args.model))
    dataset = data.load_dataset(args.data)
    _check_classes(model, dataset)
    result = evaluate_arrays(model, dataset.test.images, dataset.test.labels, batch_size=args.batch_size)
    if args.json:
        print(json.dumps({"model": args.model, "data": args.data, **result.to_dict()}))
    else:
        console.print(f"{args.data} test split, {result.n} images")
        console.print(f"loss          {result.loss:.4f}")
        console.print(f"accuracy      {result.accuracy:.2%}")
        console.print(f"top-{result.top_k} error   {result.top_k_error:.2%}")
    return 0


def _check_classes(model, dataset) -> None:  # noqa: ANN001
    if model.class_names and len(model.class_names) != len(dataset.class_names):
        raise CnnkitError(
            f"the model knows {len(model.class_names)} classes but {dataset.name} has "
            f"{len(dataset.class_names)}: evaluate it on the data it was trained for"
        )
