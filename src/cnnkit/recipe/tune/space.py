"""The search space of ``cnnkit tune``: training options -> Optuna distributions.

A space maps :class:`~cnnkit.recipe.config.TrainConfig` option names to what a trial may
take, written in a JSON or YAML file (``--space FILE``)::

    lr: {low: 1.0e-4, high: 1.0e-2, log: true}   # a float range (an int range for an int option)
    batch_size: [32, 64, 128]                    # a list: one of these
    augment: {choices: [none, flip+crop]}        # the same, spelt out
    epochs: 5                                    # a fixed value for every trial

Without a file, :func:`default_space` is searched: learning rate, weight decay, batch size,
label smoothing, the data set's own augmentation or none, and a few models that suit the
data set's image size; options given on the command line stay fixed.
"""

from __future__ import annotations

import json
import os
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any

import optuna
from optuna.distributions import BaseDistribution, CategoricalDistribution, FloatDistribution, IntDistribution

from cnnkit.data.catalog import resolve_data
from cnnkit.errors import ConfigError
from cnnkit.recipe.config import TrainConfig, field_type

__all__ = ["FIXED_OPTIONS", "Space", "default_space", "load_space", "space_from_dict", "space_from_json",
           "space_to_dict", "suggest"]  # fmt: skip

Space = dict[str, BaseDistribution]  # option name -> what a trial may take
# Options a trial never varies: where it writes and how it reports (the tune decides those).
FIXED_OPTIONS = frozenset({"out", "runs_dir", "verbose", "report", "tensorboard", "track", "track_uri", "data",
                           "data_dir", "device", "weights", "time"})  # fmt: skip
SMALL_MODELS = ("seed", "seed_bn", "lenet5", "resnet9")  # for images up to 64 px: seconds per epoch on a CPU
LARGE_MODELS = ("resnet18", "mobilenet_v3_small", "efficientnet_b0")


def default_space(config: TrainConfig, fixed: Collection[str] = ()) -> Space:
    """The space searched without ``--space``, for ``config.data``; options in ``fixed`` are left out."""
    info = resolve_data(config.data)
    own = info.augment if info is not None else "flip+crop"
    side = max(info.image_shape[:2]) if info is not None else config.image_size or 64
    augments = list(dict.fromkeys(["none", own, own if "cutout" in own else f"{own}+cutout"]))
    space: Space = {
        "lr": FloatDistribution(1e-4, 3e-2, log=True),
        "weight_decay": FloatDistribution(1e-6, 1e-2, log=True),
        "batch_size": CategoricalDistribution([32, 64, 128]),
        "label_smoothing": FloatDistribution(0.0, 0.2),
        "augment": CategoricalDistribution(augments),
        "model": CategoricalDistribution(list(SMALL_MODELS if side <= 64 else LARGE_MODELS)),
    }
    return {name: dist for name, dist in space.items() if name not in fixed}


def _distribution(name: str, spec: Any) -> BaseDistribution | None:
    """One entry of a space file; None for a fixed value."""
    f = TrainConfig.__dataclass_fields__[name]
    kind, _ = field_type(f)
    if isinstance(spec, list):
        spec = {"choices": spec}
    if not isinstance(spec, dict):
        return None
    unknown = set(spec) - {"choices", "low", "high", "log", "step"}
    if unknown:
        raise ConfigError(f"search space: {name} has unknown key(s) {', '.join(sorted(unknown))}; give choices: "
                          f"[...] or low:, high: (and log: true or step:)")  # fmt: skip
    if "choices" in spec:
        choices = spec["choices"]
        if not isinstance(choices, list) or not choices:
            raise ConfigError(f"search space: {name}'s choices must be a non-empty list")
        return CategoricalDistribution(choices)
    if "low" not in spec or "high" not in spec or kind not in (int, float):
        raise ConfigError(f"search space: {name} needs choices: [...], or low: and high: for a number option")
    log, step = bool(spec.get("log", False)), spec.get("step")
    try:
        if kind is int:
            return IntDistribution(int(spec["low"]), int(spec["high"]), log=log, step=int(step or 1))
        return FloatDistribution(float(spec["low"]), float(spec["high"]), log=log, step=step)
    except ValueError as e:
        raise ConfigError(f"search space: {name}: {e}") from None


def space_from_dict(values: Mapping[str, Any]) -> tuple[Space, dict[str, Any]]:
    """A space file's contents -> (the space, the fixed values), each value checked as an option."""
    known = set(TrainConfig.__dataclass_fields__)
    unknown = sorted(set(values) - known)
    if unknown:
        raise ConfigError(f"search space: unknown training option(s) {', '.join(unknown)}")
    refused = sorted(set(values) & FIXED_OPTIONS)
    if refused:
        raise ConfigError(f"search space: {', '.join(refused)} cannot be searched (the tune decides where trials "
                          f"run and write); give it on the command line")  # fmt: skip
    space, fixed = {}, {}
    for name, spec in values.items():
        dist = _distribution(name, spec)
        if dist is None:
            fixed[name] = spec
            _check_value(name, spec)
            continue
        ends = dist.choices if isinstance(dist, CategoricalDistribution) else (dist.low, dist.high)
        for value in ends:
            _check_value(name, value)
        space[name] = dist
    if not space:
        raise ConfigError("search space: nothing to search (give a range or a list of choices for an option)")
    return space, fixed


def _check_value(name: str, value: Any) -> None:
    """A value the option accepts, or the option's own one-line error."""
    try:
        TrainConfig.from_dict({name: value})
    except ConfigError as e:
        raise ConfigError(f"search space: {e}") from None


def load_space(path: str | os.PathLike) -> tuple[Space, dict[str, Any]]:
    """A space from a JSON or YAML file (YAML: ``.yaml``/``.yml``); see the module's docstring."""
    path = Path(path)
    try:
        text = path.read_text()
    except FileNotFoundError:
        raise ConfigError(f"{path}: no such search space file") from None
    try:
        if path.suffix.lower() in (".yaml", ".yml"):
            import yaml  # PyYAML comes with Optuna

            values = yaml.safe_load(text)
        else:
            values = json.loads(text)
    except Exception as e:  # yaml.YAMLError or json.JSONDecodeError: the parser's own message
        raise ConfigError(f"{path}: not a valid search space file ({str(e).splitlines()[0]})") from None
    if not isinstance(values, dict):
        raise ConfigError(f"{path}: a search space maps option names to ranges or choices")
    return space_from_dict(values)


def space_to_dict(space: Space) -> dict[str, Any]:
    """A space as JSON (``tune.json``), read back by :func:`space_from_json`."""
    return {name: optuna.distributions.distribution_to_json(dist) for name, dist in space.items()}


def space_from_json(values: Mapping[str, str]) -> Space:
    return {name: optuna.distributions.json_to_distribution(text) for name, text in values.items()}


def suggest(trial: optuna.Trial, space: Space) -> dict[str, Any]:
    """The trial's choice for each option of ``space`` (Optuna's sampler decides)."""
    params: dict[str, Any] = {}
    for name, dist in space.items():
        if isinstance(dist, CategoricalDistribution):
            params[name] = trial.suggest_categorical(name, list(dist.choices))
        elif isinstance(dist, IntDistribution):
            params[name] = trial.suggest_int(name, dist.low, dist.high, step=dist.step, log=dist.log)
        else:
            params[name] = trial.suggest_float(name, dist.low, dist.high, step=dist.step, log=dist.log)
    return params
