"""The ``cnnkit`` command: each subcommand parses its flags, calls one library function, prints.

User mistakes (:class:`~cnnkit.errors.CnnkitError`) print one line and exit 1; anything
else is a bug and keeps its traceback.
"""

from __future__ import annotations

import argparse
import csv
import json
import sys
from collections.abc import Callable, Sequence

from rich.console import Console
from rich.table import Table

from cnnkit import __version__
from cnnkit.errors import CnnkitError

__all__ = ["main"]

console = Console(highlight=False)


# -- train ------------------------------------------------------------------------------------
def _add_train(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("train", help="train a model (default: the article's CNN on the built-in digits)",
                       description="Train a model. Flags override --config, which overrides the defaults.")  # fmt: skip
    p.add_argument("--config", metavar="FILE", help="JSON file of training options")
    p.add_argument("--model", help="registered model (see `cnnkit models`) or an architecture .json (default: seed)")
    p.add_argument("--data", help="data set name (see `cnnkit datasets`; default: digits)")
    p.add_argument("--epochs", type=int)
    p.add_argument("--batch-size", type=int)
    p.add_argument("--optimizer", choices=["adam", "adamw", "sgd", "rmsprop"])
    p.add_argument("--lr", type=float, help="peak learning rate")
    p.add_argument("--weight-decay", type=float)
    p.add_argument("--schedule", choices=["onecycle", "cosine", "constant"])
    p.add_argument("--label-smoothing", type=float)
    p.add_argument("--augment", choices=["auto", "none", "crop", "flip-crop"])
    p.add_argument("--image-size", type=int, help="resize images to SIZE x SIZE")
    p.add_argument("--val-split", type=float, help="fraction of the training images held out for validation")
    p.add_argument("--seed", type=int)
    p.add_argument("--deterministic", action="store_true", default=None, help="deterministic kernels (slower)")
    p.add_argument("--device", help="auto, cpu, cuda, cuda:N")
    p.add_argument("--runs-dir", help="where new run folders go (default: runs)")
    p.add_argument("--out", help="the run folder to write (default: runs/<model>-<data>-<time>)")
    p.add_argument("-q", "--quiet", action="store_true", help="no progress output, only the result")
    p.set_defaults(run=_train)


def _train(args: argparse.Namespace) -> int:
    from cnnkit.train import TrainConfig, train

    config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
    config = config.replace(
        model=args.model, data=args.data, epochs=args.epochs, batch_size=args.batch_size, optimizer=args.optimizer,
        lr=args.lr, weight_decay=args.weight_decay, schedule=args.schedule, label_smoothing=args.label_smoothing,
        augment=args.augment, image_size=args.image_size, val_split=args.val_split, seed=args.seed,
        deterministic=args.deterministic, device=args.device, runs_dir=args.runs_dir, out=args.out,
        verbose=0 if args.quiet else None,
    )  # fmt: skip
    if config.verbose:
        console.print(f"training [bold]{config.model}[/] on [bold]{config.data}[/] for {config.epochs} epochs")
    result = train(config)
    t = result.test
    console.print(
        f"test accuracy {t.accuracy:.2%}  loss {t.loss:.4f}  top-{t.top_k} error {t.top_k_error:.2%}  "
        f"({t.n} images, {result.seconds:.1f}s)"
    )
    console.print(f"model saved to {result.model_path}")
    return 0


# -- evaluate -----------------------------------------------------------------------------------
def _add_evaluate(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("evaluate", help="loss, accuracy and top-k error of a model on a data set's test split")
    p.add_argument("model", help="model file or run folder")
    p.add_argument("--data", required=True, help="data set name")
    p.add_argument("--batch-size", type=int, default=256)
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_evaluate)


def _evaluate(args: argparse.Namespace) -> int:
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


# -- predict ------------------------------------------------------------------------------------
def _add_predict(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("predict", help="top-k classes for image files, folders or globs")
    p.add_argument("model", help="model file or run folder")
    p.add_argument("paths", nargs="+", metavar="PATH", help="image files, folders (searched recursively) or globs")
    p.add_argument("-k", "--top-k", type=int, default=3)
    p.add_argument("--format", choices=["table", "csv", "json"], default="table", help="json: one object per line")
    p.add_argument("--batch-size", type=int, default=64)
    p.set_defaults(run=_predict)


def _predict(args: argparse.Namespace) -> int:
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


# -- listings -----------------------------------------------------------------------------------
def _add_listings(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.set_defaults(run=_models)
    p = sub.add_parser("datasets", help="list the data sets")
    p.set_defaults(run=_datasets)


def _models(args: argparse.Namespace) -> int:
    from cnnkit.models import create_model, get_model_entry, list_models

    table = Table("name", "params", "input", "description", "paper")
    for name in list_models(args.pattern):
        entry = get_model_entry(name)
        params = create_model(name, num_classes=10).count_params()
        size = entry.input_size
        table.add_row(name, f"{params:,}", f"{size}x{size}x{entry.in_channels}", entry.description, entry.paper)
    console.print(table)
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from cnnkit.data import list_datasets

    table = Table("name", "classes", "image", "train", "test", "source", "description")
    for info in list_datasets():
        h, w, c = info.image_shape
        table.add_row(info.name, str(info.num_classes), f"{h}x{w}x{c}", f"{info.sizes.get('train', '?'):,}",
                      f"{info.sizes.get('test', '?'):,}", info.source, info.description)  # fmt: skip
    console.print(table)
    return 0


# -- entry point --------------------------------------------------------------------------------
COMMANDS: Sequence[Callable[[argparse._SubParsersAction], None]] = (
    _add_train, _add_evaluate, _add_predict, _add_listings,
)  # fmt: skip


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="cnnkit", description="Image recognition with convolutional neural networks.")
    parser.add_argument("--version", action="version", version=f"cnnkit {__version__}")
    sub = parser.add_subparsers(dest="command", metavar="COMMAND")
    for add in COMMANDS:
        add(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run the ``cnnkit`` command line; return the exit status."""
    parser = build_parser()
    args = parser.parse_args(argv)
    if args.command is None:
        parser.print_help()
        return 2
    try:
        return args.run(args)
    except CnnkitError as e:
        print(f"cnnkit: error: {e}", file=sys.stderr)
        return 1
    except KeyboardInterrupt:
        print("cnnkit: interrupted", file=sys.stderr)
        return 130
    except BrokenPipeError:  # e.g. `cnnkit predict ... | head`
        return 0
