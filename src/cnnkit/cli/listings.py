"""``cnnkit models`` and ``cnnkit datasets``: what exists."""

from __future__ import annotations

import argparse

from rich.table import Table

from cnnkit.cli._common import console


def add_parser(sub: argparse._SubParsersAction) -> None:
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
