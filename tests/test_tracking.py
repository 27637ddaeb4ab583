"""--track mlflow: the run read back with MLflow's own client from a store in a temporary folder."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest

from cnnkit.recipe import TrainConfig, train
from cnnkit.recipe.tracking import EXPERIMENT, split_sha256, tracking_uri
from conftest import SRC, run_main

pytestmark = pytest.mark.slow  # MLflow creates its SQLite tables (seconds) in each new store


def _client(store):
    from mlflow.tracking import MlflowClient

    return MlflowClient(tracking_uri(str(store))[0])


def _runs(client):
    experiment = client.get_experiment_by_name(EXPERIMENT)
    return client.search_runs([experiment.experiment_id])


def test_a_tracked_run_has_its_options_metrics_artifacts_and_data_tags(tmp_path):
    store = tmp_path / "mlruns"
    result = train(TrainConfig(data="faces", epochs=2, lr=0.004, out=str(tmp_path / "run"), verbose=0, track="mlflow",
                               track_uri=str(store)))  # fmt: skip
    client = _client(store)
    (run,) = _runs(client)
    assert run.info.status == "FINISHED" and run.info.run_name == "run"
    params = run.data.params
    assert params["lr"] == "0.004" and params["epochs"] == "2" and params["data"] == "faces"
    assert params["precision"] == "fp32"  # the resolved options (config.json's), not "auto"
    history = client.get_metric_history(run.info.run_id, "val_loss")
    assert [m.step for m in history] == [1, 2]
    assert [m.value for m in history] == pytest.approx(result.history["val_loss"])
    assert len(client.get_metric_history(run.info.run_id, "accuracy")) == 2
    assert run.data.metrics["test_accuracy"] == pytest.approx(result.test.accuracy)
    artifacts = {a.path for a in client.list_artifacts(run.info.run_id)}
    assert {"model.safetensors", "report.html", "curves.png", "config.json", "metrics.csv"} <= artifacts
    split = json.loads((result.run_dir / "split.json").read_text())
    assert run.data.tags["data"] == "faces" and run.data.tags["split_sha256"] == split_sha256(split)


def test_tune_logs_each_trial_as_a_child_of_one_parent_run(tmp_path):
    from cnnkit.recipe.tune import TuneConfig, tune

    store = tmp_path / "mlruns"
    space = tmp_path / "space.json"
    space.write_text('{"lr": [0.003, 0.004]}')
    base = TrainConfig(data="faces", epochs=1, report=False, verbose=0, track="mlflow", track_uri=str(store))
    tune(base, TuneConfig(trials=2, space=str(space), out=str(tmp_path / "t")), say=lambda _: None)
    runs = _runs(_client(store))
    parents = [r for r in runs if "mlflow.parentRunId" not in r.data.tags]
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parents[0].info.run_id]
    assert len(parents) == 1 and parents[0].info.run_name == "t"
    assert sorted(r.info.run_name for r in children) == ["trial-000", "trial-001"]
    assert all(r.info.status == "FINISHED" for r in runs)


def test_without_mlflow_the_flag_says_how_to_install_it(tmp_path, monkeypatch):
    monkeypatch.setitem(sys.modules, "mlflow", None)  # what `import mlflow` does when it is not installed
    result = run_main("train", "--data", "faces", "--epochs", "1", "--track", "mlflow", "--no-report",
                      "--out", str(tmp_path / "r"))  # fmt: skip
    assert result.returncode == 1
    assert result.stderr.strip().splitlines() == [
        "cnnkit: error: --track mlflow needs MLflow, an optional extra: pip install 'cnnkit[mlflow]' "
        "(or pip install mlflow)"
    ]


def test_an_untracked_run_never_imports_mlflow(tmp_path):
    code = (f"from cnnkit.cli import main; import sys; main(['train', '--data', 'faces', '--epochs', '1', '-q', "
            f"'--no-report', '--out', {str(tmp_path / 'r')!r}]); print(sorted({{'mlflow', 'optuna'}} & set(sys.modules)))")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env={"PYTHONPATH": str(SRC),
                         "PATH": "/usr/bin:/bin"}, timeout=300)  # fmt: skip
    assert out.returncode == 0, out.stderr
    assert out.stdout.strip().splitlines()[-1] == "[]"
