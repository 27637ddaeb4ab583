"""`cnnkit evaluate`: the full evaluation, its plots, and two models compared."""

from __future__ import annotations

import json

import pytest
from PIL import Image

from cnnkit.cli import main


@pytest.fixture(scope="module")
def untrained(tmp_path_factory):
    from cnnkit import models, seed_everything

    seed_everything(1)
    model = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
    model.class_names = [str(i) for i in range(10)]
    path = tmp_path_factory.mktemp("untrained") / "untrained.safetensors"
    model.save(path)
    return path


def test_evaluate_prints_per_class_metrics_and_writes_plots(trained_seed, tmp_path, capsys):
    _, path = trained_seed
    assert main(["evaluate", str(path), "--data", "digits", "--out", str(tmp_path / "plots")]) == 0
    out = capsys.readouterr().out
    for text in ("digits test split, 359 images", "accuracy", "top-5 error", "ECE", "precision", "macro avg"):
        assert text in out
    for name in ("confusion.png", "reliability.png", "mistakes.png"):
        with Image.open(tmp_path / "plots" / name) as image:
            assert image.format == "PNG" and image.width > 300


def test_evaluate_json_has_everything(trained_seed, capsys):
    _, path = trained_seed
    assert main(["evaluate", str(path), "--data", "digits", "--json", "--top-k", "2"]) == 0
    report = json.loads(capsys.readouterr().out)
    assert report["n"] == 359 and report["top_k"] == 2 and report["plots"] == []
    assert [row["name"] for row in report["per_class"]] == [str(d) for d in range(10)]
    assert sum(map(sum, report["confusion_matrix"]["counts"])) == 359
    assert 0 <= report["calibration"]["ece"] <= 1 and report["most_confused"][0]["count"] >= 1


def test_compare_a_trained_and_an_untrained_model(trained_seed, untrained, capsys):
    _, path = trained_seed
    assert main(["evaluate", "--compare", str(path), str(untrained), "--data", "digits", "--json"]) == 0
    report = json.loads(capsys.readouterr().out)
    c = report["comparison"]
    assert c["n"] == 359 and c["difference"] == pytest.approx(report["a"]["accuracy"] - report["b"]["accuracy"])
    assert c["ci_low"] < c["difference"] < c["ci_high"] and c["mcnemar_p"] < 1e-6 and c["significant"]


def test_compare_text_and_a_model_against_itself(trained_seed, capsys):
    _, path = trained_seed
    assert main(["evaluate", "--compare", str(path), str(path), "--data", "digits"]) == 0
    out = capsys.readouterr().out
    assert "A - B accuracy  +0.00%" in out and "p = 1" in out and "no significant difference" in out


@pytest.mark.parametrize(
    ("args", "message"),
    [
        (["--compare", "A"], "--compare takes exactly two models"),
        (["A", "B"], "evaluate takes one model (got 2); to compare two, add --compare"),
        (["A", "--top-k", "0"], "--top-k must be at least 1"),
    ],
)
def test_evaluate_usage_errors(args, message, capsys):
    assert main(["evaluate", *args, "--data", "digits"]) == 1
    err = capsys.readouterr().err
    assert message in err and err.count("\n") == 1


def test_evaluate_loads_no_library_it_does_not_use_for_cnnkits_own_model(trained_seed):
    """torchvision, scikit-learn, sympy (which autograd imports when it is handed a gradient) and
    matplotlib (the training report's) each cost 0.5-1.7 s to import, more than evaluating the model:
    `cnnkit evaluate` waits for none."""
    import os
    import subprocess
    import sys

    from conftest import SRC

    _, path = trained_seed
    probe = (f"import sys; from cnnkit.cli import main; code = main(['evaluate', {str(path)!r}, '--data', 'digits']); "
             "print([m for m in ('torchvision', 'sklearn', 'sympy', 'matplotlib') if m in sys.modules], code)")  # fmt: skip
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    done = subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env, timeout=300)
    assert done.stdout.splitlines()[-1] == "[] 0", done.stderr
