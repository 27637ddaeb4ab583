"""cnnkit tune: Optuna's study over cnnkit train's recipe, kept in SQLite, pruned through an engine callback."""

from __future__ import annotations

import json

import optuna
import pytest
import torch

from cnnkit.errors import ConfigError
from cnnkit.recipe.config import TrainConfig
from cnnkit.recipe.tune import Pruning, TuneConfig, default_space, tune
from cnnkit.recipe.tune.space import load_space
from cnnkit.recipe.tune.study import STUDY_NAME, make_pruner
from cnnkit.train import loop
from conftest import run_main

BASE = TrainConfig(data="faces", epochs=2, report=False, verbose=0)  # a trial: ~2 s on two cores


@pytest.fixture(scope="module")
def tuned(tmp_path_factory):
    """A two-trial tune of the learning rate and batch size on faces, from a YAML space."""
    root = tmp_path_factory.mktemp("tune")
    space = root / "space.yaml"
    space.write_text("lr: {low: 1.0e-3, high: 1.0e-2, log: true}\nbatch_size: [32, 64]\n")
    lines: list[str] = []
    result = tune(BASE, TuneConfig(trials=2, space=str(space), out=str(root / "t")), say=lines.append)
    return result, lines


def _study(tune_dir):
    return optuna.load_study(study_name=STUDY_NAME, storage=f"sqlite:///{tune_dir / 'study.db'}")


def test_a_tune_keeps_its_study_in_sqlite_and_writes_the_best_config(tuned, tmp_path):
    result, lines = tuned
    study = _study(result.tune_dir)  # read back from the file, not the object the tune held
    assert [t.state for t in study.trials] == [optuna.trial.TrialState.COMPLETE] * 2
    assert {"lr", "batch_size"} == set(study.best_trial.params)
    assert result.best_value == study.best_value == min(t.value for t in study.trials)
    assert result.best_run == result.tune_dir / f"trial-{study.best_trial.number:03d}"
    assert (result.best_run / "model.safetensors").exists()  # the best trial's run folder is kept
    for name in ("history.png", "importances.png", "trials.csv", "tune.json"):
        assert (result.tune_dir / name).stat().st_size > 0, name
    assert any(line.startswith("trial 1: val_loss ") for line in lines)
    # best.json is a config file cnnkit train reads: the best trial's options over the base's.
    best = json.loads(result.best_config.read_text())
    assert best["lr"] == study.best_trial.params["lr"] and best["data"] == "faces" and best["out"] is None
    assert TrainConfig.from_file(result.best_config).batch_size == study.best_trial.params["batch_size"]
    done = run_main("train", "--config", str(result.best_config), "--epochs", "1", "-q", "--out", str(tmp_path / "r"))
    assert done.returncode == 0, done.stderr
    saved = json.loads((tmp_path / "r" / "config.json").read_text())
    assert saved["lr"] == best["lr"] and saved["batch_size"] == best["batch_size"]


def test_resume_continues_the_study_and_a_bad_trial_is_pruned(tuned):
    result, _ = tuned
    tune_dir = result.tune_dir
    # Three earlier trials that reached a val_loss of 0.01 by every epoch: any real trial is worse than their
    # median, so the median pruner stops the next one after its 2nd epoch (its first prunable step).
    study = _study(tune_dir)
    dists = {"lr": optuna.distributions.FloatDistribution(1e-3, 1e-2, log=True),
             "batch_size": optuna.distributions.CategoricalDistribution([32, 64])}  # fmt: skip
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(params={"lr": 3e-3, "batch_size": 32}, distributions=dists,
                                                  value=0.01, intermediate_values={1: 0.01, 2: 0.01}))  # fmt: skip
    lines: list[str] = []
    resumed = tune(settings=TuneConfig(trials=6), resume=tune_dir, say=lines.append)
    trials = _study(tune_dir).trials
    assert len(trials) == 6  # 2 + 3 added + 1 new: the same study, grown
    last = trials[-1]
    assert last.state == optuna.trial.TrialState.PRUNED and last.last_step == 2
    assert any("pruned (val_loss" in line for line in lines)
    assert resumed.best_value == pytest.approx(0.01)
    # A study that has its trials runs none.
    again = tune(settings=TuneConfig(trials=6), resume=tune_dir, say=lines.append)
    assert len(again.study.trials) == 6


def test_the_pruning_callback_stops_the_engine_s_fit():
    study = optuna.create_study(pruner=make_pruner("median", 3))
    for _ in range(3):
        study.add_trial(optuna.trial.create_trial(value=0.0, intermediate_values={1: 0.0, 2: 0.0, 3: 0.0}))
    trial = study.ask()
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(12, 3))
    x, y = torch.rand(24, 3, 2, 2), torch.randint(0, 3, (24,))
    with pytest.raises(optuna.TrialPruned, match="after epoch 2"):
        loop.fit(model, (x, y), loss_fn=torch.nn.functional.cross_entropy, validation=(x, y), epochs=3,
                 optimizer=torch.optim.SGD(model.parameters(), lr=0.1), callbacks=[Pruning(trial)], verbose=0)  # fmt: skip
    assert list(trial.storage.get_trial(trial._trial_id).intermediate_values) == [1, 2]
    assert isinstance(make_pruner("hyperband", 9), optuna.pruners.HyperbandPruner)


def test_the_default_space_suits_the_data_set_and_leaves_given_options_fixed():
    space = default_space(TrainConfig(data="faces"), fixed={"lr", "model"})
    assert "lr" not in space and "model" not in space
    assert {"weight_decay", "batch_size", "label_smoothing", "augment"} <= set(space)
    assert "flip+crop" in space["augment"].choices  # faces' own policy, and none
    assert set(default_space(TrainConfig(data="digits"))["model"].choices) <= {"seed", "seed_bn", "lenet5", "resnet9"}


@pytest.mark.parametrize(("text", "message"), [
    ('{"lrr": [0.1]}', "unknown training option"),
    ('{"lr": {"low": -1, "high": 0.1}}', "lr must be positive"),
    ('{"out": ["a", "b"]}', "out cannot be searched"),
    ('{"augment": ["flip", "wobble"]}', "unknown augmentation"),
    ('{"lr": {"low": 0.1}}', "needs choices"),
    ('{"epochs": 3}', "nothing to search"),
    ("[1, 2]", "maps option names"),
])  # fmt: skip
def test_a_bad_space_file_is_one_line(tmp_path, text, message):
    path = tmp_path / "space.json"
    path.write_text(text)
    with pytest.raises(ConfigError, match=message):
        load_space(path)


def test_the_command_line_refuses_what_a_resumed_tune_cannot_change(tmp_path):
    (tmp_path / "tune.json").write_text("{}")
    result = run_main("tune", "--resume", str(tmp_path), "--lr", "0.1")
    assert result.returncode == 1 and "drop --lr" in result.stderr
    result = run_main("tune", "--resume", str(tmp_path / "nope"))
    assert result.returncode == 1 and "not a tune folder" in result.stderr
    result = run_main("tune", "--data", "faces", "--val-split", "0", "--out", str(tmp_path / "t"))
    assert result.returncode == 1 and "--val-split above 0" in result.stderr
