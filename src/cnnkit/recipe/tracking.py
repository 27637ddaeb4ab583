"""Experiment tracking: ``cnnkit train --track mlflow`` logs the run to MLflow.

One :class:`MLflowTracking` per run: an engine callback that logs every epoch's metrics
(``step`` = the epoch, from 1) and, when the run ends, the test results and the run folder's
files (the model, ``report.html``, the plots, ``config.json``, ``metrics.csv``) as artifacts.
The resolved options are the run's params; the data set and the SHA-256 of its split are tags.

A run started while another MLflow run is active in the process becomes its child
(MLflow's ``nested`` runs): ``cnnkit tune --track mlflow`` opens a parent run for the study
(:func:`parent_run`) and each trial's run is logged under it.

MLflow is an optional extra (``pip install 'cnnkit[mlflow]'``: it brings a web server, pandas
and pyarrow, and takes seconds to import), imported only when a run is tracked.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
import logging
import os
from collections.abc import Iterator, Mapping
from pathlib import Path
from typing import Any

from cnnkit import __version__
from cnnkit.errors import ConfigError
from cnnkit.train.callbacks import Callback, Logs

__all__ = ["ARTIFACTS", "DEFAULT_STORE", "EXPERIMENT", "MLflowTracking", "parent_run", "split_sha256", "tracking_uri"]

DEFAULT_STORE = "mlruns"  # a local folder: an SQLite store (mlflow.db) and the artifacts beside it
EXPERIMENT = "cnnkit"
ARTIFACTS = ("model.safetensors", "report.html", "config.json", "metrics.csv", "*.png")  # of the run folder
_INSTALL = "--track mlflow needs MLflow, an optional extra: pip install 'cnnkit[mlflow]' (or pip install mlflow)"


def _mlflow() -> Any:
    try:
        import mlflow
    except ImportError:
        raise ConfigError(_INSTALL) from None
    logging.getLogger("mlflow").setLevel(logging.WARNING)  # its INFO lines (database set-up) would cut into ours
    return mlflow


def tracking_uri(where: str | None) -> tuple[str, str | None]:
    """The MLflow tracking URI for ``--track-uri`` and the artifact folder of a local store.

    A folder (default ``./mlruns``) is an SQLite store ``FOLDER/mlflow.db`` with the artifacts in
    ``FOLDER/artifacts``: MLflow 3 keeps its plain file store in maintenance mode and refuses it by
    default, so a local folder is kept the way MLflow now recommends. Anything with a scheme
    (``http://``, ``sqlite:///``, ``databricks``) is passed to MLflow as it is.
    """
    where = where or os.environ.get("MLFLOW_TRACKING_URI") or DEFAULT_STORE
    if "://" in where or where in ("databricks",):
        return where, None
    folder = Path(where).expanduser().resolve()
    folder.mkdir(parents=True, exist_ok=True)
    return f"sqlite:///{folder / 'mlflow.db'}", (folder / "artifacts").as_uri()


def split_sha256(split: Mapping[str, Any]) -> str:
    """A fingerprint of the data split (``split.json``): equal hashes, same images in each role."""
    return hashlib.sha256(json.dumps(split, sort_keys=True, default=str).encode()).hexdigest()


def _experiment(mlflow: Any, artifacts: str | None) -> str:
    experiment = mlflow.get_experiment_by_name(EXPERIMENT)
    if experiment is not None:
        return experiment.experiment_id
    return mlflow.create_experiment(EXPERIMENT, artifact_location=artifacts)


@contextlib.contextmanager
def parent_run(where: str | None, name: str, params: Mapping[str, Any] | None = None) -> Iterator[str]:
    """An MLflow run that the runs started inside it are logged under (one per ``cnnkit tune``); yields its id."""
    mlflow = _mlflow()
    uri, artifacts = tracking_uri(where)
    mlflow.set_tracking_uri(uri)
    with mlflow.start_run(run_name=name, experiment_id=_experiment(mlflow, artifacts),
                          tags={"cnnkit.version": __version__}) as run:  # fmt: skip
        if params:
            mlflow.log_params({key: _param(value) for key, value in params.items()})
        yield run.info.run_id


def _param(value: Any) -> str:
    return value if isinstance(value, str) else json.dumps(value)


class MLflowTracking(Callback):
    """Log one training run to MLflow: params now, metrics each epoch, artifacts at :meth:`finish`.

    Args:
        where: ``--track-uri``: a folder or an MLflow tracking URI (see :func:`tracking_uri`).
        name: the run's name (the run folder's).
        params: the resolved options (``config.json``).
        tags: e.g. the data set and its split hash.
    """

    rank_zero_only = True

    def __init__(self, where: str | None, name: str, params: Mapping[str, Any], tags: Mapping[str, str]) -> None:
        super().__init__()
        self.mlflow = mlflow = _mlflow()
        uri, artifacts = tracking_uri(where)
        mlflow.set_tracking_uri(uri)
        self.uri = uri
        nested = mlflow.active_run() is not None  # inside cnnkit tune's (or a user's) run: a child of it
        self.run = mlflow.start_run(run_name=name, experiment_id=_experiment(mlflow, artifacts), nested=nested,
                                    tags={"cnnkit.version": __version__, **tags})  # fmt: skip
        self.run_id: str = self.run.info.run_id
        mlflow.log_params({key: _param(value) for key, value in params.items()})

    def on_epoch_end(self, epoch: int, logs: Logs | None = None) -> None:
        metrics = dict(logs or {})
        optimizer = getattr(self.model, "optimizer", None)
        if optimizer is not None and hasattr(optimizer, "param_groups"):
            metrics["lr"] = float(optimizer.param_groups[0]["lr"])
        self.mlflow.log_metrics(metrics, step=epoch + 1, run_id=self.run_id)

    def finish(self, run_dir: Path, test: Mapping[str, float] | None = None) -> None:
        """Log the test results and the run folder's files, and end the run as finished."""
        if test:
            self.mlflow.log_metrics({f"test_{key}": value for key, value in test.items()}, run_id=self.run_id)
        for pattern in ARTIFACTS:
            for path in sorted(Path(run_dir).glob(pattern)):
                self.mlflow.log_artifact(str(path), run_id=self.run_id)
        self.end("FINISHED")

    def end(self, status: str = "FAILED") -> None:
        """End the run (``KILLED`` when interrupted, ``FAILED`` on an error) unless it has ended."""
        if self.run is not None:
            active = self.mlflow.active_run()
            if active is not None and active.info.run_id == self.run_id:
                self.mlflow.end_run(status)
            else:
                self.mlflow.MlflowClient(self.uri).set_terminated(self.run_id, status)
            self.run = None
