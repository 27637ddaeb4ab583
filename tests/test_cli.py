"""The cnnkit command as a user runs it: in a subprocess, reading what it prints."""

from __future__ import annotations

import csv
import json

import numpy as np
import pytest
import torch
from PIL import Image

from conftest import run_cli, run_main


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("cli") / "run"
    result = run_cli("train", "--epochs", "3", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def _one_line_error(result) -> str:
    assert result.returncode != 0
    assert "Traceback" not in result.stderr
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("cnnkit: error:"), result.stderr
    return lines[0]


def test_train_writes_the_run_and_reports(run_dir):
    out, result = run_dir
    assert "epoch 3/3" in result.stdout
    assert "test accuracy" in result.stdout and "top-5 error" in result.stdout
    assert f"model saved to {out / 'model.safetensors'}" in result.stdout.replace("\n", "")
    assert {p.name for p in out.iterdir()} >= {
        "model.safetensors",
        "config.json",
        "metrics.csv",
        "curves.png",
        "split.json",
    }
    config = json.loads((out / "config.json").read_text())
    assert config["model"] == "seed" and config["data"] == "digits" and config["epochs"] == 3
    assert config["augment"] == "crop+affine" and config["device"] == "cpu"
    rows = list(csv.DictReader((out / "metrics.csv").open()))
    assert [r["epoch"] for r in rows] == ["1", "2", "3"]
    assert {"loss", "accuracy", "val_loss", "val_accuracy", "lr"} <= set(rows[0])
    split = json.loads((out / "split.json").read_text())
    assert len(split["train"]) + len(split["val"]) == 1438 and not set(split["train"]) & set(split["val"])
    assert Image.open(out / "curves.png").size[0] > 300


def test_train_refuses_to_overwrite_a_run(run_dir):
    out, _ = run_dir
    assert "already holds a trained model" in _one_line_error(run_cli("train", "--epochs", "1", "--out", str(out)))


def test_train_bad_options_are_one_line_errors(tmp_path):
    assert "unknown data set 'nope'" in _one_line_error(
        run_cli("train", "--data", "nope", "--out", str(tmp_path / "a"))
    )
    # The same refusals in-process (the command's own main(), without starting Python again):
    assert "unknown model" in _one_line_error(run_main("train", "--model", "resnet9000", "--out", str(tmp_path / "b")))
    (tmp_path / "bad.json").write_text('{"epochs": 2, "learning_rate": 1}')
    assert "unknown training option(s): learning_rate" in _one_line_error(
        run_main("train", "--config", str(tmp_path / "bad.json"))
    )
    assert "epochs must be at least 1" in _one_line_error(run_main("train", "--epochs", "0"))


def test_train_from_an_architecture_json(tmp_path, trained_seed):
    from cnnkit import models

    arch = models.Sequential.from_config(trained_seed[0].get_config()).get_config()
    (tmp_path / "arch.json").write_text(json.dumps(arch))
    result = run_cli(
        "train",
        "--model",
        str(tmp_path / "arch.json"),
        "--epochs",
        "1",
        "--out",
        str(tmp_path / "run"),
        "-q",
        "--no-report",
    )
    assert result.returncode == 0, result.stderr
    assert (tmp_path / "run" / "model.safetensors").exists()


def _digit_images(tmp_path, digits):
    """The first test digits as a user might have them: a big RGB JPEG, an RGBA PNG, a 16-bit PNG."""
    _, (x_test, y_test) = digits
    grey = (x_test[:3, :, :, 0] * 255).astype(np.uint8)
    paths = [tmp_path / "photo.jpg", tmp_path / "alpha.png", tmp_path / "deep.png"]
    Image.fromarray(grey[0]).resize((300, 300), Image.Resampling.BILINEAR).convert("RGB").save(paths[0], quality=95)
    rgba = np.dstack([np.stack([grey[1]] * 3, axis=2), np.full((28, 28), 255, np.uint8)])
    Image.fromarray(rgba, "RGBA").resize((56, 56)).save(paths[1])
    Image.fromarray(grey[2].astype(np.uint16) * 257).save(paths[2])
    return paths, [str(int(y)) for y in y_test[:3]]


def test_predict_on_files_of_any_size_and_mode(run_dir, tmp_path, digits):
    out, _ = run_dir
    paths, labels = _digit_images(tmp_path, digits)
    (tmp_path / "notes.png").write_text("not an image")
    result = run_cli("predict", str(out), *map(str, paths), str(tmp_path / "notes.png"), "--format", "json", "-k", "3")
    assert result.returncode == 0, result.stderr
    rows = [json.loads(line) for line in result.stdout.splitlines()]
    assert [r["path"] for r in rows] == [str(p) for p in paths]
    for row, label in zip(rows, labels):
        assert len(row["labels"]) == 3 and sum(row["probabilities"]) <= 1.0 + 1e-6
        assert row["probabilities"] == sorted(row["probabilities"], reverse=True)
        assert row["labels"][0] == label
    assert "skipped" in result.stderr and "notes.png" in result.stderr and "Traceback" not in result.stderr


def test_predict_table_and_csv_on_a_folder(run_dir, tmp_path, digits):
    out, _ = run_dir
    _digit_images(tmp_path, digits)
    table = run_cli("predict", str(out / "model.safetensors"), str(tmp_path))
    assert table.returncode == 0 and "photo.jpg" in table.stdout and "prediction" in table.stdout
    rows = list(
        csv.DictReader(
            run_cli("predict", str(out), str(tmp_path / "*.png"), "--format", "csv", "-k", "2").stdout.splitlines()
        )
    )
    assert len(rows) == 4 and {r["rank"] for r in rows} == {"1", "2"}


def test_predict_nothing_readable(run_dir, tmp_path):
    out, _ = run_dir
    result = run_cli("predict", str(out), str(tmp_path / "missing.png"))
    assert "no such file or folder" in _one_line_error(result)


def test_evaluate(run_dir, digits):
    out, result = run_dir
    text = run_cli("evaluate", str(out), "--data", "digits")
    assert text.returncode == 0, text.stderr
    assert "accuracy" in text.stdout and "top-5 error" in text.stdout and "359 images" in text.stdout
    report = json.loads(run_main("evaluate", str(out / "model.safetensors"), "--data", "digits", "--json").stdout)
    assert report["n"] == 359 and 0.5 < report["accuracy"] <= 1 and report["top_k"] == 5
    assert f"{report['accuracy']:.2%}" in result.stdout  # the same number train printed
    assert "knows 10 classes but faces has 2" in _one_line_error(run_main("evaluate", str(out), "--data", "faces"))


def test_bad_model_files_are_one_line_errors(tmp_path):
    torch.save({"w": torch.zeros(1)}, tmp_path / "model.pt")
    assert "pickle" in _one_line_error(run_cli("predict", str(tmp_path / "model.pt"), "x.png"))
    assert "no such model file" in _one_line_error(
        run_main("evaluate", str(tmp_path / "none.safetensors"), "--data", "digits")
    )
    (tmp_path / "cut.safetensors").write_bytes(b'\x10\x00\x00\x00\x00\x00\x00\x00{"a')
    assert "truncated" in _one_line_error(run_main("evaluate", str(tmp_path / "cut.safetensors"), "--data", "digits"))


def test_listings():
    models = run_cli("models")
    assert models.returncode == 0 and "seed" in models.stdout and "93,322" in models.stdout
    data = run_main("datasets")
    assert data.returncode == 0 and "digits" in data.stdout and "faces" in data.stdout and "1,438" in data.stdout
    assert run_main("--version").stdout.startswith("cnnkit ")
