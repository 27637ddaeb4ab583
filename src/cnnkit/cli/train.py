"""``cnnkit train``: flags -> TrainConfig -> :func:`cnnkit.recipe.train` (or resume a run).

The same command runs under torchrun (``torchrun --nproc-per-node N -m cnnkit train ...``):
rank 0 prints; an error on any process is one line naming its rank, also left in torchrun's
error file so torchrun's summary names the cause.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
import traceback
from pathlib import Path

from rich.text import Text

from cnnkit.cli._common import console
from cnnkit.cli._options import add_options, flag_of, given_options
from cnnkit.errors import CnnkitError, ConfigError

__all__ = ["add_parser", "run"]


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "train",
        help="train a model (default: the article's CNN on the built-in digits)",
        description="Train a model. Flags override --config, which overrides the defaults. The same command "
        "trains data-parallel under torchrun: torchrun --nproc-per-node N -m cnnkit train ... (one process per "
        "GPU; see recipes/README.md). Only rank 0 writes the run folder.",
        arguments=_arguments,
    )
    p.set_defaults(run=run)


def _arguments(p: argparse.ArgumentParser) -> None:
    from cnnkit.recipe.config import TrainConfig

    p.add_argument("--config", metavar="FILE", help="JSON file of training options")
    p.add_argument(
        "--resume",
        metavar="RUN",
        help="continue an interrupted run (its folder, `latest` or a "
        "prefix of its name under runs/) from its last checkpoint, or extend a finished one with "
        "--epochs N (more than it has)",
    )
    add_options(p, TrainConfig)  # one flag per field of TrainConfig


def _stop_on_sigterm() -> None:
    """SIGTERM (a scheduler or torchrun stopping us) ends the run like Ctrl-C: resumable."""

    def handler(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGTERM, handler)


def run(args: argparse.Namespace) -> int:
    from cnnkit.train import distributed

    _stop_on_sigterm()
    if not distributed.launched_by_torchrun():
        return _run(args)
    world = distributed.World(int(os.environ["RANK"]), int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"]))
    try:
        return _run(args, world.is_main)
    except CnnkitError as e:  # one line naming the rank, also for torchrun's summary
        print(f"cnnkit: error: [{world}] {e}", file=sys.stderr)
        distributed.record_error(world, e)
        return 1
    except Exception as e:  # a bug: keep its traceback, and tell torchrun which rank it was
        distributed.record_error(world, e, traceback.format_exc())
        raise


def _run(args: argparse.Namespace, main: bool = True) -> int:
    from cnnkit.recipe import TrainConfig, train

    given = given_options(args, TrainConfig)
    if args.resume:
        # A run continues with its own settings; --epochs alone may extend a finished one.
        epochs = given.pop("epochs", None)
        refused = [flag_of(TrainConfig, name) for name in given] + (["--config"] if args.config else [])
        if refused:
            raise ConfigError(f"--resume continues a run with its own settings (only --epochs, to extend a "
                              f"finished run); drop {refused[0]}")  # fmt: skip
        from cnnkit.runs import resolve_run

        # A folder as given (even one killed before its first model was saved), else `latest` or a prefix.
        run = args.resume if Path(args.resume).exists() else resolve_run(args.resume)
        result = train(resume=run, epochs=epochs)
    else:
        config = TrainConfig.from_file(args.config) if args.config else TrainConfig()
        config = config.replace(**given)
        if config.verbose and main and config.weights:
            console.print(Text.assemble("fine-tuning ", (config.model, "bold"), " from ", (config.weights, "bold"),
                                        " weights on ", (config.data, "bold"), f": {config.head_only_epochs} epoch(s) "
                                        f"of the new head alone, then {config.epochs} of all layers"))  # fmt: skip
        elif config.verbose and main:
            console.print(Text.assemble("training ", (config.model, "bold"), " on ", (config.data, "bold"),
                                        f" for {config.epochs} epochs"))  # fmt: skip
        result = train(config)
    t = result.test
    if t is None:  # a torchrun rank other than 0: rank 0 reports
        return 0
    top_k = f"  top-{t.top_k} error {t.top_k_error:.2%}" if t.has_top_k else ""  # k >= classes: always 0
    console.print(f"test accuracy {t.accuracy:.2%}  loss {t.loss:.4f}{top_k}  on {t.n} test images")
    console.print(f"training took {result.seconds:.1f}s (data preparation, training and validation; not testing)")
    console.print(f"model saved to {result.model_path}")
    report = result.run_dir / "report.html"
    if report.exists():
        console.print(f"report: {report}")
    return 0
