"""``cnnkit models`` and ``cnnkit datasets``: what exists."""

from __future__ import annotations

import argparse
import json

from rich import box
from rich.table import Table
from rich.text import Text

from cnnkit.cli._common import console

# Parameter counts of the registered models, at each model's default class count and
# channels: what count_parameters returns, written down because computing them costs seconds
# (the torchvision-built models import torchvision; initializing weights even on the meta
# device imports torch._dynamo), longer than the whole listing should take. A model missing
# here (one registered by a user's package) is counted. tests/test_cli_usability.py checks every
# entry against count_parameters, so a stale number fails there.
KNOWN_PARAMETERS = {
    "alexnet": 61_100_840,
    "alexnet_small": 7_706_442,
    "convnext_tiny": 28_589_128,
    "efficientnet_b0": 5_288_548,
    "lenet5": 61_706,
    "mobilenet_v3_large": 5_483_032,
    "mobilenet_v3_small": 2_542_856,
    "resnet18": 11_689_512,
    "resnet18_small": 11_173_962,
    "resnet50": 25_557_032,
    "resnet9": 6_573_120,
    "seed": 93_322,
    "seed_bn": 93_482,
    "seed_deep": 205_034,
    "seed_small": 23_626,
    "seed_wide": 370_954,
    "vgg11": 9_228_362,
    "vgg16": 14_724_042,
}


def _print_json(rows: list[dict]) -> None:
    print(json.dumps(rows, indent=2))


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(run=_models)
    p = sub.add_parser("datasets", help="list the data sets, and whether each is in the data cache")
    p.add_argument("--data-dir", help="the data cache (default: $CNNKIT_DATA, else ~/.cache/cnnkit)")
    p.add_argument("--download", nargs="+", metavar="NAME", help="download these data sets into the cache now")
    p.add_argument("--json", action="store_true", help="print the list as JSON")
    p.set_defaults(run=_datasets)


def _models(args: argparse.Namespace) -> int:
    from cnnkit.errors import ConfigError
    from cnnkit.models import count_parameters, get_model_entry, list_models

    names = list_models(args.pattern)
    if not names:
        raise ConfigError(f"no registered model matches {args.pattern!r}; `cnnkit models` lists them all")
    rows = []
    for name in names:
        entry = get_model_entry(name)
        rows.append({
            "name": name, "params": KNOWN_PARAMETERS.get(name) or count_parameters(name),
            "num_classes": entry.num_classes,
            "input": [entry.input_size, entry.input_size, entry.in_channels], "min_input_size": entry.min_input_size,
            "weights": "imagenet" if entry.imagenet else None, "description": entry.description, "paper": entry.paper,
        })  # fmt: skip
    if args.json:
        _print_json(rows)
        return 0
    table = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, caption_justify="left",
        caption="params: learnable parameters for 1000 classes (models with ImageNet weights) or 10 (the others);\n"
                "every model takes any class count, 1 or 3 channels, and other input sizes.",
    )  # fmt: skip
    for column in ("name", "params", "input", "weights"):  # short facts never wrap; the prose does
        table.add_column(column, no_wrap=True, justify="right" if column == "params" else "left")
    table.add_column("description (paper)")
    # On a terminal the paper goes under the description; in a pipe one model is one line.
    between = "\n" if console.is_terminal else "; "
    for row in rows:
        h, w, c = row["input"]
        table.add_row(row["name"], f"{row['params']:,}", f"{h}x{w}x{c}", row["weights"] or "",
                      Text.assemble(row["description"], between, (row["paper"], "dim")))  # fmt: skip
    console.print(table)
    return 0


def _datasets(args: argparse.Namespace) -> int:
    from cnnkit.data import data_root, get_dataset_info, list_datasets, load_dataset

    root = data_root(args.data_dir)
    for name in args.download or ():
        dataset = load_dataset(get_dataset_info(name).name, data_dir=root)
        console.print(f"{dataset.name}: {len(dataset.train):,} train and {len(dataset.test):,} test images in {root}")
    if args.download:
        return 0
    rows = []
    for info in list_datasets():
        rows.append({
            "name": info.name, "classes": info.num_classes, "image": list(info.image_shape),
            "train": info.sizes.get("train"), "test": info.sizes.get("test"), "builtin": info.builtin,
            "cached": info.is_cached(root), "download_bytes": info.download_bytes or None,
            "description": info.description,
        })  # fmt: skip
    if args.json:
        _print_json(rows)
        return 0
    table = Table("name", "classes", "image", "train", "test", "cached", "download", "description")
    for row in rows:
        h, w, c = row["image"]
        cached = "built in" if row["builtin"] else ("yes" if row["cached"] else "no")
        size = f"{row['download_bytes'] / 1e6:,.0f} MB" if row["download_bytes"] else ("-" if row["builtin"] else "?")
        table.add_row(row["name"], str(row["classes"]), f"{h}x{w}x{c}", _count(row["train"]), _count(row["test"]),
                      cached, size, row["description"])  # fmt: skip
    console.print(table)
    console.print(f"data cache: {root} (--data-dir, else $CNNKIT_DATA, else ~/.cache/cnnkit)")
    return 0


def _count(n: int | None) -> str:
    return "?" if n is None else f"{n:,}"
