"""``cnnkit models`` and ``cnnkit datasets``: what exists."""

from __future__ import annotations

import argparse

from rich.table import Table

from cnnkit.cli._common import console


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("models", help="list the registered models")
    p.add_argument("pattern", nargs="?", default="*", help="shell-style filter, e.g. 'resnet*'")
    p.set_defaults(run=_models)
    p = sub.add_parser("datasets", help="list the data sets, and whether each is in the data cache")
    p.add_argument("--data-dir", help="the data cache (default: $CNNKIT_DATA, else ~/.cache/cnnkit)")
    p.add_argument("--download", nargs="+", metavar="NAME", help="download these data sets into the cache now")
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
    from cnnkit.data import data_root, get_dataset_info, list_datasets, load_dataset

    root = data_root(args.data_dir)
    for name in args.download or ():
        dataset = load_dataset(get_dataset_info(name).name, data_dir=root)
        console.print(f"{dataset.name}: {len(dataset.train):,} train and {len(dataset.test):,} test images in {root}")
    if args.download:
        return 0
    table = Table("name", "classes", "image", "train", "test", "cached", "download", "description")
    for info in list_datasets():
        h, w, c = info.image_shape
        cached = "built in" if info.builtin else ("yes" if info.is_cached(root) else "no")
        size = f"{info.download_bytes / 1e6:,.0f} MB" if info.download_bytes else ("-" if info.builtin else "?")
        table.add_row(info.name, str(info.num_classes), f"{h}x{w}x{c}", f"{info.sizes.get('train', '?'):,}",
                      f"{info.sizes.get('test', '?'):,}", cached, size, info.description)  # fmt: skip
    console.print(table)
    console.print(f"data cache: {root} (--data-dir, else $CNNKIT_DATA, else ~/.cache/cnnkit)")
    return 0
