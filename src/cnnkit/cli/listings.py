"""``cnnkit models`` and ``cnnkit datasets``: what exists."""

from __future__ import annotations

import argparse

from rich import box
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
    from cnnkit.errors import ConfigError
    from cnnkit.models import count_parameters, get_model_entry, list_models

    names = list_models(args.pattern)
    if not names:
        raise ConfigError(f"no registered model matches {args.pattern!r}; `cnnkit models` lists them all")
    table = Table(
        box=box.SIMPLE_HEAD, pad_edge=False, caption_justify="left",
        caption="params: learnable parameters for 1000 classes (models with ImageNet weights) or 10 (the others);\n"
                "every model takes any class count, 1 or 3 channels, and other input sizes.",
    )  # fmt: skip
    for column in ("name", "params", "input", "weights"):  # short facts never wrap; the prose does
        table.add_column(column, no_wrap=True, justify="right" if column == "params" else "left")
    table.add_column("description (paper)")
    for name in names:
        entry = get_model_entry(name)
        size = entry.input_size
        table.add_row(
            name, f"{count_parameters(name):,}", f"{size}x{size}x{entry.in_channels}",
            "imagenet" if entry.imagenet else "", f"{entry.description}\n[dim]{entry.paper}[/]",
        )  # fmt: skip
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
