"""The search's own options (``cnnkit tune``'s flags beside the training ones), declared once.

Apart from :mod:`~cnnkit.recipe.tune.study` so that ``cnnkit tune --help`` generates its flags
without importing Optuna and torch.
"""

from __future__ import annotations

from dataclasses import dataclass

from cnnkit.errors import ConfigError
from cnnkit.recipe.config import option, parse_duration

__all__ = ["PRUNERS", "TuneConfig"]

PRUNERS = ("median", "hyperband", "none")


@dataclass
class TuneConfig:
    """The options of the search itself (``cnnkit tune``'s own flags); each trial's are a TrainConfig."""

    trials: int = option(20, "trials in the study, counting those of earlier (--resume) or other processes")
    time: float | None = option(None, "wall-clock budget of the search (90s, 5m, 1h): no trial starts after it, "
                                "and the last one's schedule shrinks to end in it", parse=parse_duration)  # fmt: skip
    space: str | None = option(None, "a JSON or YAML search space (default: lr, weight decay, batch size, label "
                               "smoothing, augmentation and model, for the data set; options given are fixed)",
                               metavar="FILE")  # fmt: skip
    pruner: str = option("median", "stop trials doing worse than the others by the same epoch", choices=PRUNERS)
    out: str | None = option(None, "the tune folder (default: runs/tune-<data>-<time>)", metavar="DIR")

    def validate(self) -> None:
        if self.trials < 1:
            raise ConfigError("trials must be at least 1")
        if self.time is not None and self.time <= 0:
            raise ConfigError("time must be a positive number of seconds")
        if self.pruner not in PRUNERS:
            raise ConfigError(f"pruner must be one of {', '.join(PRUNERS)}, got {self.pruner!r}")
