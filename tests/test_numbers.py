"""Numbers that line up (issue 16, items 5-7): one loss for validation and test, labelled timings,
top-k error only where it means something, one verdict from a comparison, and the warnings a run owes."""

from __future__ import annotations

import csv
import re
import shutil

import numpy as np
import pytest

from conftest import run_main


def _flat(text: str) -> str:
    """Console text with rich's soft wrapping undone."""
    return re.sub(r"\s+", " ", text)


@pytest.fixture(scope="module")
def digits_run(tmp_path_factory):
    """One epoch of the default recipe on digits (label smoothing 0.1), asked for --tta (digits never flip)."""
    out = tmp_path_factory.mktemp("numbers") / "seed-digits-2026-12-03-aaaa"
    result = run_main("train", "--epochs", "1", "--tta", "--no-report", "-q", "--out", str(out))
    assert result.returncode == 0, result.stderr
    return out, result


def test_val_loss_is_the_test_loss_not_the_smoothed_training_loss(digits_run):
    from cnnkit.data.prepare import reopen_data
    from cnnkit.evaluate import evaluate_arrays
    from cnnkit.models import load_model

    out, _ = digits_run
    model = load_model(out / "model.safetensors")  # one epoch: the best epoch is the only one
    val = reopen_data(out).dataset.val
    plain = evaluate_arrays(model, val.images, val.labels)  # plain cross-entropy, as the test loss
    (row,) = list(csv.DictReader((out / "metrics.csv").open()))
    assert float(row["val_loss"]) == pytest.approx(plain.loss, rel=2e-3)
    assert float(row["val_accuracy"]) == pytest.approx(plain.accuracy)
    assert "label smoothing 0.1" in model.training_summary["losses"]  # and the run says what "loss" was


def test_the_printed_result_labels_what_is_timed(digits_run):
    _, result = digits_run
    out = _flat(result.stdout)
    assert re.search(r"test accuracy \d+\.\d\d% loss \d\.\d{4} top-5 error \d+\.\d\d% on 359 test images", out)
    assert re.search(r"training took \d+\.\ds \(data preparation, training and validation; not testing\)", out)
    assert "images, " not in out  # the old "(359 images, 14.8s)"


def test_tta_without_flips_is_one_warning_line_kept_in_the_summary(digits_run):
    from cnnkit.models import load_model

    out, result = digits_run
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 1 and "--tta" in lines[0] and "(crop+affine) never flips" in lines[0], result.stderr
    assert load_model(out / "model.safetensors").training_summary["warnings"] == [lines[0].removeprefix("warning: ")]


def test_a_collapsed_model_and_a_tiny_validation_split_are_warned_about(tmp_path):
    from cnnkit.models import load_model
    from cnnkit.report import write_report

    # faces (2 classes, flips on: --tta is fine); class 1 weighs nothing, so the model learns "non_face" only;
    # 1% of 144 training images leaves 1 validation image per class.
    out = tmp_path / "faces"
    result = run_main("train", "--data", "faces", "--epochs", "3", "--class-weights", "1:0", "--val-split", "0.01",
                      "--tta", "--no-report", "-q", "--out", str(out))  # fmt: skip
    assert result.returncode == 0, result.stderr
    lines = [line for line in result.stderr.splitlines() if line.startswith("warning:")]
    assert len(lines) == 2, result.stderr
    assert "validation split has fewer than 2 images of 2 of 2 classes: non_face (1), face (1)" in lines[0]
    assert "the model predicts 'non_face' for 100% of the 40 test images (50% of them" in lines[1]
    assert "top-" not in result.stdout  # 2 classes: a top-2 error is always 0
    summary = load_model(out / "model.safetensors").training_summary
    assert summary["warnings"] == [line.removeprefix("warning: ") for line in lines]
    page = write_report(out).read_text()
    assert "warning: the model predicts &#x27;non_face&#x27; for 100%" in page
    assert "top-2 error" not in page and "<td>50.00%</td>" in page  # accuracy as a percentage, not 0.5


def test_one_class_warning_thresholds():
    from cnnkit.recipe.checks import one_class_warning

    names = ["a", "b", "c", "d", "e"]
    labels = np.repeat(np.arange(5), 20)  # balanced: 20% each
    assert one_class_warning(labels, labels, names) is None  # a perfect model
    assert one_class_warning(np.r_[np.zeros(59, int), labels[59:]], labels, names) is None  # 59% + 'a's share
    mostly_a = np.r_[np.zeros(70, int), labels[70:]]
    assert "predicts 'a' for 70% of the 100 test images (20% of them are 'a')" in one_class_warning(
        mostly_a, labels, names
    )
    skewed = np.r_[np.zeros(90, int), np.ones(10, int)]  # 'a' is 90% of the labels: predicting it 92% is fine
    assert one_class_warning(np.r_[np.zeros(92, int), np.ones(8, int)], skewed, names[:2]) is None


def test_compare_without_data_titles_the_runs_split_and_keeps_both_paths(digits_run, tmp_path):
    a, _ = digits_run
    b = tmp_path / (a.name[:-4] + "bbbb")  # the same run under a name that differs only at its end
    shutil.copytree(a, b)
    result = run_main("evaluate", "--compare", str(a), str(b))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "None" not in out and "359 images" in out.splitlines()[0]
    assert f"A  {a}" in out.replace("\n", "") and f"B  {b}" in out.replace("\n", "")
    assert _flat(out).count("verdict: ") == 1
    assert "verdict: no significant difference at 5%" in _flat(out) and "agree" in out


def test_the_bootstrap_and_mcnemar_give_one_verdict_and_say_why_they_differ():
    from cnnkit.evaluate import compare_predictions

    # 5 images only A gets right, none only B: no resample can favour B, so the bootstrap interval
    # excludes 0, but the exact test's p is 2 * 0.5**5 = 0.0625: not significant at 5%.
    a = np.ones(200, bool)
    b = a.copy()
    b[:5] = False
    c = compare_predictions(a, b)
    assert c.ci_low > 0 and c.mcnemar_p == pytest.approx(0.0625) and not c.significant
    assert not c.tests_agree
    verdict = c.verdict()
    assert verdict.startswith("no significant difference at 5%") and "follows the exact test" in verdict
    assert "only 5 images separate the models" in verdict
    assert c.to_dict()["verdict"] == verdict and c.to_dict()["tests_agree"] is False
    b[:20] = False  # 20 to 0: both say A is better
    c = compare_predictions(a, b)
    assert c.tests_agree and c.verdict().startswith("model A is more accurate") and "agree" in c.verdict()
