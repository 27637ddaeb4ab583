"""``cnnkit tune``: flags -> TrainConfig (each trial's start) and TuneConfig -> :func:`cnnkit.recipe.tune.tune`."""

from __future__ import annotations

import argparse
import dataclasses

from cnnkit.cli._common import console
from cnnkit.cli._options import add_options, flag_of, given_options
from cnnkit.errors import ConfigError

__all__ = ["add_parser", "run"]

# TrainConfig's options that the search decides itself: `--time` and `--out` are the tune's own.
_NOT_TRIAL_OPTIONS = ("time", "out")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "tune",
        help="search the training options with Optuna (each trial a cnnkit train run)",
        description="Search learning rate, weight decay, batch size, label smoothing, augmentation and model with "
        "Optuna's TPE sampler, pruning trials that do worse than the others by the same epoch. The study is kept in "
        "TUNE/study.db: --resume TUNE continues a stopped tune, and several processes may run --resume TUNE at once. "
        "Training flags fix an option for every trial; the best trial's options end in TUNE/best.json, a file for "
        "cnnkit train --config.",
        arguments=_arguments,
    )
    p.set_defaults(run=run)


def _trial_options() -> list[str]:
    from cnnkit.recipe.config import TrainConfig

    return [f.name for f in dataclasses.fields(TrainConfig) if f.name not in _NOT_TRIAL_OPTIONS]


def _arguments(p: argparse.ArgumentParser) -> None:
    from cnnkit.recipe.config import TrainConfig
    from cnnkit.recipe.tune.config import TuneConfig

    p.add_argument("--config", metavar="FILE", help="JSON file of training options every trial starts from")
    p.add_argument("--resume", metavar="TUNE", help="continue the tune in this folder (with more --trials or "
                   "another --time), or join it from a second process")  # fmt: skip
    add_options(p.add_argument_group("the search"), TuneConfig)
    add_options(p, TrainConfig, _trial_options())  # fixed for every trial (a group of groups is deprecated)


def run(args: argparse.Namespace) -> int:
    from cnnkit.recipe.config import TrainConfig
    from cnnkit.recipe.tune import TuneConfig, tune

    given = given_options(args, TrainConfig, _trial_options())
    search = given_options(args, TuneConfig)
    if args.resume:
        refused = [flag_of(TrainConfig, name) for name in given] + (["--config"] if args.config else [])
        refused += [flag_of(TuneConfig, name) for name in search if name not in ("trials", "time")]
        if refused:
            raise ConfigError(f"--resume continues a tune with its own options (only --trials and --time); drop "
                              f"{refused[0]}")  # fmt: skip
        result = tune(settings=TuneConfig(**search), resume=args.resume, say=console.print)
    else:
        base = TrainConfig.from_file(args.config) if args.config else TrainConfig()
        result = tune(base.replace(**given), TuneConfig(**search), fixed=set(given), say=console.print)
    study = result.study
    states = [t.state.name.lower() for t in study.get_trials(deepcopy=False)]
    counts = ", ".join(f"{states.count(s)} {s}" for s in dict.fromkeys(states))
    console.print(f"{len(states)} trials ({counts}) in {result.tune_dir / 'study.db'}")
    if result.best_config is None:
        console.print("no trial finished yet: nothing to report")
        return 0
    best = study.best_trial
    console.print(f"best: trial {best.number}, val_loss {result.best_value:.4f} "
                  f"({', '.join(f'{k}={v}' for k, v in best.params.items())})"
                  + (f"; its run: {result.best_run}" if result.best_run else ""))  # fmt: skip
    console.print(f"train it again: cnnkit train --config {result.best_config}")
    plots = [p.name for p in (result.tune_dir / "history.png", result.tune_dir / "importances.png") if p.exists()]
    if plots:
        console.print(f"plots: {', '.join(str(result.tune_dir / p) for p in plots)}")
    return 0
