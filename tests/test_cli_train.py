"""`cnnkit train` with the engine's options, `cnnkit lr-find`, budgets: as a user runs them."""

from __future__ import annotations

import csv
import json

from PIL import Image

from conftest import run_cli, run_main


def test_train_with_the_engine_options(tmp_path):
    out = tmp_path / "run"
    result = run_cli(
        "train", "--data", "faces", "--epochs", "2", "--optimizer", "sgd", "--lr", "0.05", "--schedule", "cosine",
        "--weight-decay", "5e-4", "--label-smoothing", "0.1", "--clip-norm", "1", "--class-weights", "auto",
        "--ema", "0.9", "--augment", "flip+crop+affine+cutout", "--tta", "--patience", "3", "--tensorboard",
        "--no-report", "--out", str(out), "-q",
    )  # fmt: skip
    assert result.returncode == 0, result.stderr
    config = json.loads((out / "config.json").read_text())
    assert config["optimizer"] == "sgd" and config["ema"] == 0.9 and config["class_weights"] == "auto"
    assert config["precision"] == "fp32" and config["channels_last"] == "on"  # 'auto' resolved on a CPU
    assert list((out / "tensorboard").glob("events.out.tfevents.*"))
    assert config["report"] is False and not (out / "report.html").exists()
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert len(rows) == 2 and float(rows[1]["lr"]) < float(rows[0]["lr"])  # cosine decay
    assert "test accuracy" in result.stdout


def test_time_budget_ends_the_run_early(tmp_path):
    out = tmp_path / "run"
    result = run_cli("train", "--data", "faces", "--epochs", "500", "--time", "2s", "--no-report", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert "time budget 2s: training for" in result.stdout
    assert len(list(csv.DictReader((out / "metrics.csv").open()))) < 500


def test_lr_find(tmp_path):
    result = run_cli(
        "lr-find", "--data", "faces", "--batch-size", "16", "--steps", "40", "--out", str(tmp_path / "lr.png")
    )
    assert result.returncode == 0, result.stderr
    assert "suggested peak learning rate" in result.stdout and "cnnkit train --lr" in result.stdout
    assert Image.open(tmp_path / "lr.png").size[0] > 300


def test_bad_engine_options_are_one_line_errors(tmp_path):
    for args, message in [
        (["--ema", "1.5"], "ema must be a decay"),
        (["--augment", "spin"], "unknown augmentation 'spin'"),
        (["--class-weights", "zero:1"], "class_weights must be"),
    ]:
        result = run_main("train", "--data", "faces", "--epochs", "1", *args, "--out", str(tmp_path / args[0]))
        assert result.returncode == 1 and message in result.stderr and "Traceback" not in result.stderr, result.stderr
    result = run_main("train", "--time", "soon")
    assert result.returncode == 2 and "expected a duration" in result.stderr
