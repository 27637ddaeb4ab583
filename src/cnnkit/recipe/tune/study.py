"""``cnnkit tune``: a hyperparameter search with Optuna over ``cnnkit train``'s recipe.

Each trial is :func:`cnnkit.recipe.train` with the options Optuna's TPE sampler chose (see
:mod:`~cnnkit.recipe.tune.space`), in its own run folder ``TUNE/trial-NNN``; it reports its
``val_loss`` after every epoch through :class:`Pruning`, an engine callback, and the pruner
(median, or Hyperband) stops a trial that is doing worse than the others did by then. The
objective is the trial's best ``val_loss`` (the plain cross-entropy, whatever label smoothing
it trains with, so trials compare fairly).

The study lives in ``TUNE/study.db`` (SQLite), with what the tune was asked in ``tune.json``:
a killed tune continues with ``tune(resume=TUNE)``, and several processes may work on one
study at once (each ``cnnkit tune --resume TUNE``). Optuna's heartbeat marks a killed
process's trial as failed (and tries its options again once). At the end ``best.json`` is the
best trial's options as a ``cnnkit train --config`` file, and ``history.png`` and
``importances.png`` are Optuna's plots of the search.
"""

from __future__ import annotations

import contextlib
import csv
import io
import json
import math
import time
import warnings
from collections.abc import Callable, Iterator
from dataclasses import asdict, dataclass, fields
from pathlib import Path
from typing import Any

import optuna
from optuna.trial import TrialState

from cnnkit._io import atomic_write_json, atomic_write_text
from cnnkit.errors import CnnkitError, ConfigError, TrainingError
from cnnkit.recipe.config import TrainConfig
from cnnkit.recipe.run import train
from cnnkit.recipe.tune.config import TuneConfig
from cnnkit.recipe.tune.space import Space, default_space, load_space, space_from_json, space_to_dict, suggest
from cnnkit.runs import create_run_dir
from cnnkit.train.callbacks import Callback, Logs

__all__ = ["STUDY_FILE", "TUNE_FILE", "Pruning", "TuneResult", "make_pruner", "tune"]

STUDY_FILE, TUNE_FILE, BEST_FILE = "study.db", "tune.json", "best.json"
MONITOR = "val_loss"
STUDY_NAME = "cnnkit"
DONE = (TrialState.COMPLETE, TrialState.PRUNED, TrialState.FAIL)  # what --trials counts


@dataclass(frozen=True)
class TuneResult:
    """Where the search is and what it found."""

    tune_dir: Path
    study: optuna.Study
    best_config: Path | None  # best.json, a `cnnkit train --config` file (None: no trial finished)
    best_run: Path | None  # the best trial's run folder
    best_value: float | None  # its best val_loss


class Pruning(Callback):
    """Report each epoch's ``val_loss`` to an Optuna trial; raise ``optuna.TrialPruned`` when the pruner says so.

    The step is the number of epochs trained (the "resource" of Hyperband's rungs).
    """

    def __init__(self, trial: optuna.Trial, monitor: str = MONITOR) -> None:
        super().__init__()
        self.trial, self.monitor = trial, monitor

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        value = (logs or {}).get(self.monitor)
        if value is None or not math.isfinite(value):
            return
        self.trial.report(value, step=epoch + 1)
        if self.trial.should_prune():
            raise optuna.TrialPruned(f"{self.monitor} {value:.4f} after epoch {epoch + 1}")


def make_pruner(name: str, epochs: int) -> optuna.pruners.BasePruner:
    """``median``: worse than the median of the trials at the same epoch, from the 2nd epoch, after 3 trials;
    ``hyperband``: Hyperband's successive halving from 1 epoch to the trials' ``epochs``."""
    if name == "median":
        return optuna.pruners.MedianPruner(n_startup_trials=3, n_warmup_steps=2)
    if name == "hyperband":
        return optuna.pruners.HyperbandPruner(min_resource=1, max_resource=max(1, epochs), reduction_factor=3)
    return optuna.pruners.NopPruner()


def _storage(tune_dir: Path) -> optuna.storages.RDBStorage:
    # The heartbeat lets any process see a trial whose process died (killed, not Ctrl-C) as failed.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)  # heartbeats: since Optuna 2.8
        return optuna.storages.RDBStorage(
            f"sqlite:///{tune_dir / STUDY_FILE}", engine_kwargs={"connect_args": {"timeout": 60}},
            heartbeat_interval=30, grace_period=90,
            heartbeat_stale_trial_callback=optuna.storages.RetryHeartbeatStaleTrialCallback(max_retry=1),
        )  # fmt: skip


def _setup(base: TrainConfig, settings: TuneConfig, fixed: set[str], resume: Path | None
           ) -> tuple[Path, TrainConfig, TuneConfig, Space]:  # fmt: skip
    """The tune folder, its trials' base options, the search settings and the space: new, or as saved."""
    if resume is not None:
        if not (resume / TUNE_FILE).exists():
            raise ConfigError(f"{resume} is not a tune folder (no {TUNE_FILE})")
        saved = json.loads((resume / TUNE_FILE).read_text())
        kept = {f.name: getattr(settings, f.name) for f in fields(TuneConfig) if f.name in ("trials", "time")}
        settings = TuneConfig(**{**saved["tune"], **kept})
        return resume, TrainConfig.from_dict(saved["base"]), settings, space_from_json(saved["space"])
    if base.val_split <= 0:
        raise ConfigError("cnnkit tune compares trials by their val_loss: give a --val-split above 0")
    space, values = load_space(settings.space) if settings.space else (default_space(base, fixed), {})
    base = base.replace(**values)
    from cnnkit.data.catalog import resolve_data

    info = resolve_data(base.data)
    name = f"tune-{info.name if info is not None else Path(base.data).stem}"
    if settings.out and (Path(settings.out) / TUNE_FILE).exists():
        raise ConfigError(f"{settings.out} already holds a tune: continue it with --resume {settings.out}, or choose "
                          f"another --out")  # fmt: skip
    tune_dir = create_run_dir(base.runs_dir, name, Path(settings.out) if settings.out else None)
    atomic_write_json(tune_dir / TUNE_FILE, {"study": STUDY_NAME, "base": base.to_dict(), "tune": asdict(settings),
                                             "space": space_to_dict(space)})  # fmt: skip
    return tune_dir, base, settings, space


def tune(base: TrainConfig | None = None, settings: TuneConfig | None = None, *, resume: str | Path | None = None,
         fixed: set[str] | None = None, say: Callable[[str], None] = print) -> TuneResult:  # fmt: skip
    """Search the training options; return the study and its best trial (see the module's docstring).

    Args:
        base: the options every trial starts from (``cnnkit tune``'s training flags).
        settings: the search's own (trials, time, space, pruner, folder).
        resume: a tune folder to continue (its saved base, space and pruner; ``settings``'
            ``trials`` and ``time`` apply).
        fixed: options given on the command line, left out of the default space.
        say: where the one line per trial goes.
    """
    settings = settings or TuneConfig()
    settings.validate()
    tune_dir, base, settings, space = _setup(base or TrainConfig(), settings, set(fixed or ()),
                                             Path(resume) if resume is not None else None)  # fmt: skip
    optuna.logging.set_verbosity(optuna.logging.WARNING)  # one line per trial is ours
    storage = _storage(tune_dir)
    earlier = 0
    with contextlib.suppress(KeyError):
        earlier = len(optuna.load_study(study_name=STUDY_NAME, storage=storage).trials)
    study = optuna.create_study(
        study_name=STUDY_NAME, storage=storage, direction="minimize", load_if_exists=True,
        sampler=optuna.samplers.TPESampler(seed=base.seed + earlier),  # a resumed tune does not redraw the same
        pruner=make_pruner(settings.pruner, base.epochs),
    )  # fmt: skip
    remaining = settings.trials - _done(study)
    say(f"tune folder: {tune_dir}; {_done(study)} of {settings.trials} trials done; searching "
        f"{', '.join(space)}")  # fmt: skip
    if remaining > 0:
        deadline = time.monotonic() + settings.time if settings.time else None
        objective = _objective(tune_dir, base, space, deadline, say)
        with _tracked(base, tune_dir, space):
            study.optimize(objective, n_trials=remaining, timeout=settings.time, catch=(TrainingError,),
                           callbacks=[optuna.study.MaxTrialsCallback(settings.trials, states=DONE)])  # fmt: skip
    return _results(study, tune_dir, base)


def _done(study: optuna.Study) -> int:
    return len(study.get_trials(deepcopy=False, states=DONE))


@contextlib.contextmanager
def _tracked(base: TrainConfig, tune_dir: Path, space: Space) -> Iterator[None]:
    """With ``--track mlflow``: a parent MLflow run for the search; each trial's run is logged under it."""
    if base.track == "none":
        yield
        return
    from cnnkit.recipe.tracking import parent_run

    with parent_run(base.track_uri, tune_dir.name, {"space": space_to_dict(space), "tune_dir": str(tune_dir)}):
        yield


def _objective(tune_dir: Path, base: TrainConfig, space: Space, deadline: float | None,
               say: Callable[[str], None]) -> Callable[[optuna.Trial], float]:  # fmt: skip
    def objective(trial: optuna.Trial) -> float:
        params = suggest(trial, space)
        run_dir = tune_dir / f"trial-{trial.number:03d}"
        trial.set_user_attr("run_dir", str(run_dir))
        config = base.replace(**params, out=str(run_dir), verbose=0 if base.verbose < 2 else 1)
        if deadline is not None:  # the last trial's schedule shrinks to end within the search's budget
            left = deadline - time.monotonic()
            config = config.replace(time=max(1.0, min(left, config.time or math.inf)))
        shown = ", ".join(f"{k}={_short(v)}" for k, v in params.items())
        try:
            result = train(config, callbacks=[Pruning(trial)])
        except optuna.TrialPruned as e:
            say(f"trial {trial.number}: pruned ({e}); {shown}")
            raise
        except CnnkitError as e:
            say(f"trial {trial.number}: failed ({e}); {shown}")
            raise TrainingError(str(e)) from None
        value = min(v for v in result.history[MONITOR] if math.isfinite(v))
        if result.test is not None:
            trial.set_user_attr("test_accuracy", result.test.accuracy)
        say(f"trial {trial.number}: {MONITOR} {value:.4f}; {shown}")
        return value

    return objective


def _short(value: Any) -> str:
    return f"{value:.3g}" if isinstance(value, float) else str(value)


def _results(study: optuna.Study, tune_dir: Path, base: TrainConfig) -> TuneResult:
    """``best.json``, ``trials.csv`` and the plots, from the study as it stands (all processes' trials)."""
    trials = study.get_trials(deepcopy=False)
    _write_trials(trials, tune_dir)
    complete = [t for t in trials if t.state == TrialState.COMPLETE]
    if not complete:
        return TuneResult(tune_dir, study, None, None, None)
    best = study.best_trial
    config = base.replace(**best.params)
    values = {**config.to_dict(), "out": None}  # train it again: a new run folder
    best_path = atomic_write_json(tune_dir / BEST_FILE, values)
    TrainConfig.from_file(best_path)  # what `cnnkit train --config` reads: it must load
    _plots(study, tune_dir)
    run_dir = best.user_attrs.get("run_dir")  # none for a trial added to the study by hand
    return TuneResult(tune_dir, study, best_path, Path(run_dir) if run_dir else None, best.value)


def _write_trials(trials: list[optuna.trial.FrozenTrial], tune_dir: Path) -> None:
    names = list(dict.fromkeys(name for t in trials for name in t.params))
    out = io.StringIO()
    writer = csv.writer(out, lineterminator="\n")
    writer.writerow(["trial", "state", MONITOR, "epochs", *names, "run_dir"])
    for t in trials:
        value = t.value if t.value is not None else (t.intermediate_values.get(t.last_step) if t.last_step else "")
        writer.writerow([t.number, t.state.name.lower(), value, t.last_step or "",
                         *[t.params.get(n, "") for n in names], t.user_attrs.get("run_dir", "")])  # fmt: skip
    atomic_write_text(tune_dir / "trials.csv", out.getvalue())


def _plots(study: optuna.Study, tune_dir: Path) -> None:
    """Optuna's optimization history and parameter importances (matplotlib; the second needs 2+ trials)."""
    import matplotlib.pyplot as plt  # Optuna draws on pyplot's figures; each is closed once saved
    from optuna.visualization import matplotlib as plots

    from cnnkit.report.plots import save_figure

    with warnings.catch_warnings():
        warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
        for name, plot in (("history.png", plots.plot_optimization_history),
                           ("importances.png", plots.plot_param_importances)):  # fmt: skip
            try:
                axes = plot(study)
            except (ValueError, RuntimeError):  # importances of fewer than two finished trials
                continue
            figure = axes.figure
            figure.set_size_inches(7, 4.5)
            figure.tight_layout()
            save_figure(figure, tune_dir / name)
            plt.close(figure)
