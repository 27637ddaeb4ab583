"""The command line as a user meets it: listings in a pipe, near-miss names, lr-find's next step."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import numpy as np
import pytest
from PIL import Image

from conftest import SRC, run_cli, run_main


def _piped(*args: str) -> subprocess.CompletedProcess:
    """``cnnkit ARGS | ...`` in an 80-column terminal: stdout is a pipe."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "COLUMNS": "80"}
    return subprocess.run([sys.executable, "-m", "cnnkit", *args], capture_output=True, text=True, env=env, timeout=300)


def test_listings_are_never_cut_in_a_pipe():
    models = _piped("models")
    assert models.returncode == 0, models.stderr
    (alexnet,) = [line for line in models.stdout.splitlines() if line.strip().startswith("alexnet ")]
    # One model, one line, whole: `cnnkit models | grep alexnet` shows its description and paper.
    assert "61,100,840" in alexnet and "dense 4096-4096 (LRN optional)" in alexnet and "(16.4% top-5)" in alexnet
    datasets = _piped("datasets")
    assert datasets.returncode == 0, datasets.stderr
    (blood,) = [line for line in datasets.stdout.splitlines() if "bloodmnist" in line]
    assert "MedMNIST: blood cell microscopy, 8 cell types" in blood and "…" not in datasets.stdout


def test_listings_as_json(tmp_path):
    from cnnkit.models import count_parameters, list_models

    result = run_main("models", "--json")
    assert result.returncode == 0, result.stderr
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert set(rows) == set(list_models())
    assert rows["alexnet"]["input"] == [224, 224, 3] and rows["alexnet"]["weights"] == "imagenet"
    # The listing's written-down counts are what count_parameters says (a stale table fails here).
    assert {name: row["params"] for name, row in rows.items()} == {name: count_parameters(name) for name in rows}
    result = run_main("datasets", "--json", "--data-dir", str(tmp_path))
    rows = {row["name"]: row for row in json.loads(result.stdout)}
    assert rows["digits"]["train"] == 1438 and rows["digits"]["builtin"] and rows["digits"]["image"] == [28, 28, 1]
    assert rows["mnist"]["cached"] is False and rows["mnist"]["download_bytes"] > 0


def test_the_model_listing_builds_no_torchvision_model():
    # `cnnkit models` should take about as long as importing torch: no torchvision, no weight initialization.
    code = "import sys; from cnnkit.cli import main; main(['models']); assert 'torchvision' not in sys.modules"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    result = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, timeout=300)
    assert result.returncode == 0, result.stderr


def test_unknown_names_suggest_the_nearest():
    result = run_main("train", "--modle", "seed")
    assert result.returncode == 2 and "unrecognized arguments: --modle seed; did you mean --model?" in result.stderr
    result = run_main("models", "--jsno")
    assert result.returncode == 2 and "did you mean --json?" in result.stderr
    result = run_main("trian")  # a value outside argparse's choices: the command, a flag's
    assert result.returncode == 2 and "invalid choice: 'trian'" in result.stderr
    assert "(did you mean 'train'?)" in result.stderr
    result = run_main("train", "--optimizer", "adma")
    assert result.returncode == 2 and "'rmsprop') (did you mean 'adam'?)" in result.stderr
    assert "did you mean" not in run_main("train", "--schedule", "xyz").stderr  # nothing close: argparse's list alone
    result = run_main("train", "--model", "resnet19", "--epochs", "1")
    assert result.returncode == 1 and "unknown model 'resnet19' (did you mean 'resnet9'" in result.stderr
    result = run_main("train", "--data", "digit", "--epochs", "1")
    assert result.returncode == 1 and "(did you mean 'digits'?)" in result.stderr
    from cnnkit.data import get_dataset_info
    from cnnkit.errors import ConfigError

    with pytest.raises(ConfigError, match=r"unknown data set 'fashionmnst' \(did you mean 'fashion-mnist'"):
        get_dataset_info("fashionmnst")
    assert "did you mean" not in run_main("train", "--model", "zzzz", "--epochs", "1").stderr


def test_lr_find_prints_the_whole_train_command_and_keeps_the_plot_with_the_runs(tmp_path):
    result = run_cli("lr-find", "--data", "faces", "--model", "seed_small", "--image-size", "24",
                     "--batch-size", "16", "--steps", "20", cwd=tmp_path)  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert not (tmp_path / "lr_find.png").exists()
    (plot,) = (tmp_path / "runs").glob("lr-find-seed_small-faces-*.png")
    assert f"plot saved to {plot.relative_to(tmp_path)}" in result.stdout
    assert Image.open(plot).size[0] > 300
    (line,) = [line for line in result.stdout.splitlines() if line.startswith("train with: ")]
    words = line.removeprefix("train with: ").split()
    assert words[:3] == ["cnnkit", "train", "--lr"]
    assert " ".join(words[4:]) == "--model seed_small --data faces --batch-size 16 --image-size 24"
    # What it prints is a command that parses to the options that were swept.
    from cnnkit.cli import build_parser

    args = build_parser().parse_args(words[1:])
    assert (args.model, args.data, args.image_size, args.batch_size) == ("seed_small", "faces", 24, 16)
    assert args.lr == float(words[3])


def test_paths_with_brackets_and_long_paths_print_as_they_are(tmp_path):
    """A folder named like ``photos [2024]`` is the user's, not a style: it trains and prints whole."""
    # "[/b]" is a closing tag to rich's markup (it raised MarkupError); the long name passes 80 columns.
    data = tmp_path / "holiday photos [2024], sorted by what is in them" / "a[/b]"
    rng = np.random.default_rng(0)
    for label in ("beach", "hills"):
        (data / label).mkdir(parents=True)
        for i in range(6):
            Image.fromarray(rng.integers(0, 256, (16, 16, 3), dtype=np.uint8)).save(data / label / f"[{i}].png")
    run = tmp_path / "run"
    trained = run_main("train", "--data", str(data), "--epochs", "1", "--no-report", "--out", str(run))
    assert trained.returncode == 0, trained.stderr
    assert f"on {data} for 1 epochs" in trained.stdout.splitlines()[0]
    assert f"model saved to {run / 'model.safetensors'}" in trained.stdout.splitlines()
    table = run_main("predict", str(run), str(data / "beach"))
    assert table.returncode == 0, table.stderr
    rows = [line for line in table.stdout.splitlines() if ".png" in line]  # one image, one row, its path whole
    assert len(rows) == 6 and all(str(data / "beach") in row for row in rows)
    assert "[0].png" in table.stdout
