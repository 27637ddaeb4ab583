"""``cnnkit lr-find``: sweep the learning rate on the training data and suggest a peak rate."""

from __future__ import annotations

import argparse

from cnnkit.cli._common import console
from cnnkit.cli._options import add_options, command_line, given_options

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("lr-find", help="find a good learning rate (plot + suggestion)",
                       description="Sweep the learning rate over a few batches of the training data, "
                       "with the model and optimizer `cnnkit train` would use, and suggest a peak rate.",
                       arguments=_arguments)  # fmt: skip
    p.set_defaults(run=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    from cnnkit.recipe.config import LR_FIND_OPTIONS, TrainConfig

    add_options(p, TrainConfig, LR_FIND_OPTIONS)
    p.add_argument("--steps", type=int, default=100, help="at most this many batches (default: 100)")
    p.add_argument("--out", help="where to save the plot (default: RUNS_DIR/lr-find-MODEL-DATA-TIME.png)")


def run(args: argparse.Namespace) -> int:
    from cnnkit.recipe.config import LR_FIND_OPTIONS, TrainConfig
    from cnnkit.recipe.lr_find import find_learning_rate

    given = given_options(args, TrainConfig, LR_FIND_OPTIONS)
    found = find_learning_rate(TrainConfig().replace(**given), steps=args.steps, plot=args.out)
    console.print(f"suggested peak learning rate: {found.suggestion:.2g} (lowest loss at {found.lowest:.2g})")
    console.print(f"plot saved to {found.plot}")
    # The whole command, so what was swept is what gets trained (one line: it is meant to be copied).
    train = command_line(TrainConfig, {"lr": float(f"{found.suggestion:.2g}"), **given})
    console.print(f"train with: cnnkit train {train}")
    return 0
