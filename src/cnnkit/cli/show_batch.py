"""``cnnkit show-batch``: flags -> TrainConfig -> :func:`cnnkit.recipe.show_batch.show_batch`."""

from __future__ import annotations

import argparse

from cnnkit.cli._common import console
from cnnkit.cli._options import add_options, given_options

__all__ = ["add_parser", "run"]

# The training options that decide what a batch looks like.
_OPTIONS = ("data", "data_dir", "model", "image_size", "augment", "val_split", "seed", "max_bad_files", "workers")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "show-batch",
        help="draw a batch of augmented training images with their labels, to preview --augment",
        description="Draw training images as the model is fed them (at its input size, through the augmentation "
        "policy, mixed labels as their two largest shares) into a PNG. cnnkit train writes the same picture into "
        "each run folder as train_batch.png.",
        arguments=_arguments,
    )
    p.set_defaults(run=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    from cnnkit.recipe.config import TrainConfig

    add_options(p, TrainConfig, _OPTIONS)
    p.add_argument("--out", metavar="FILE", help="the PNG to write (default: <data>-batch.png)")
    p.add_argument("--images", type=int, default=32, metavar="N", help="how many images (default: 32)")


def run(args: argparse.Namespace) -> int:
    from cnnkit.errors import ConfigError
    from cnnkit.recipe.config import TrainConfig
    from cnnkit.recipe.show_batch import show_batch

    if args.images < 1:
        raise ConfigError("--images must be at least 1")
    config = TrainConfig(verbose=0).replace(**given_options(args, TrainConfig, _OPTIONS))
    path = show_batch(config, args.out, args.images)
    console.print(f"wrote {path}")
    return 0
