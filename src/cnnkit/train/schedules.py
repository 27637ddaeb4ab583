"""``keras.optimizers.schedules``: learning rates as a function of the step, passed as ``learning_rate=``.

``Adam(learning_rate=CosineDecay(1e-3, decay_steps=1000))``: the optimizer sets each step's rate
from the schedule at its step count (Keras' ``optimizer.iterations``: 0 for the first step), which
is kept in the torch optimizer's state, so a resumed or second ``fit`` continues the schedule.
The formulas are Keras 3's.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

from cnnkit._keras_names import missing
from cnnkit.errors import ConfigError

__all__ = ["SCHEDULES", "CosineDecay", "ExponentialDecay", "LearningRateSchedule", "PiecewiseConstantDecay", "get"]


class LearningRateSchedule:
    """Base: ``schedule(step) -> learning rate``; ``get_config()`` is what a model file stores."""

    def __call__(self, step: int) -> float:
        raise NotImplementedError

    def get_config(self) -> dict[str, Any]:
        return {"class_name": type(self).__name__, "config": dict(vars(self))}


def _positive(value: float, what: str) -> float:
    if not value > 0:
        raise ConfigError(f"{what} must be > 0, got {value!r}")
    return value


class ExponentialDecay(LearningRateSchedule):
    """``initial_learning_rate * decay_rate ** (step / decay_steps)`` (the exponent floored if ``staircase``)."""

    def __init__(self, initial_learning_rate: float, decay_steps: int, decay_rate: float, staircase: bool = False,
                 name: str = "ExponentialDecay") -> None:  # fmt: skip
        self.initial_learning_rate = float(_positive(initial_learning_rate, "initial_learning_rate"))
        self.decay_steps, self.decay_rate = _positive(decay_steps, "decay_steps"), float(decay_rate)
        self.staircase, self.name = bool(staircase), name

    def __call__(self, step: int) -> float:
        p = step / self.decay_steps
        return self.initial_learning_rate * self.decay_rate ** (math.floor(p) if self.staircase else p)


class CosineDecay(LearningRateSchedule):
    """Cosine decay over ``decay_steps`` to ``alpha`` times the rate, after an optional linear warm-up.

    Without ``warmup_target``: from ``initial_learning_rate``. With it: ``warmup_steps`` linear steps
    from ``initial_learning_rate`` to ``warmup_target``, then the cosine decay from ``warmup_target``.
    """

    def __init__(self, initial_learning_rate: float, decay_steps: int, alpha: float = 0.0, name: str = "CosineDecay",
                 warmup_target: float | None = None, warmup_steps: int = 0) -> None:  # fmt: skip
        self.initial_learning_rate = float(initial_learning_rate)
        self.decay_steps, self.alpha, self.name = _positive(decay_steps, "decay_steps"), float(alpha), name
        self.warmup_target, self.warmup_steps = warmup_target, int(warmup_steps)
        if warmup_target is not None and self.warmup_steps < 0:
            raise ConfigError(f"warmup_steps must be >= 0, got {warmup_steps}")

    def _decay(self, step: float, start: float) -> float:
        cosine = 0.5 * (1.0 + math.cos(math.pi * step / self.decay_steps))
        return start * ((1 - self.alpha) * cosine + self.alpha)

    def __call__(self, step: int) -> float:
        if self.warmup_target is None:
            return self._decay(min(step, self.decay_steps), self.initial_learning_rate)
        step = min(step, self.decay_steps + self.warmup_steps)
        if step < self.warmup_steps:
            fraction = step / self.warmup_steps
            return self.initial_learning_rate + (self.warmup_target - self.initial_learning_rate) * fraction
        return self._decay(step - self.warmup_steps, self.warmup_target)


class PiecewiseConstantDecay(LearningRateSchedule):
    """``values[0]`` up to step ``boundaries[0]`` (inclusive), ``values[1]`` up to ``boundaries[1]``, ..."""

    def __init__(self, boundaries: Sequence[int], values: Sequence[float], name: str = "PiecewiseConstant") -> None:
        if len(values) != len(boundaries) + 1:
            raise ConfigError(f"PiecewiseConstantDecay needs one more value than boundaries, got {len(values)} "
                              f"values for {len(boundaries)} boundaries")  # fmt: skip
        if list(boundaries) != sorted(boundaries):
            raise ConfigError(f"PiecewiseConstantDecay's boundaries must increase, got {list(boundaries)}")
        self.boundaries, self.values, self.name = list(boundaries), [float(v) for v in values], name

    def __call__(self, step: int) -> float:
        return self.values[sum(step > b for b in self.boundaries)]


SCHEDULES: dict[str, type[LearningRateSchedule]] = {
    cls.__name__: cls for cls in (ExponentialDecay, CosineDecay, PiecewiseConstantDecay)
}


def get(config: dict[str, Any]) -> LearningRateSchedule:
    """A schedule from its ``get_config()`` (what a model file's compile settings store)."""
    kind = config.get("class_name")
    if kind not in SCHEDULES:
        raise ConfigError(f"unknown learning-rate schedule {kind!r}; cnnkit has: {', '.join(SCHEDULES)}")
    return SCHEDULES[kind](**config.get("config", {}))


def __getattr__(name: str) -> Any:
    raise missing(__name__, name)
