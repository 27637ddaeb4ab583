"""Evaluation metrics against scikit-learn and hand-computed cases; model comparison statistics."""

from __future__ import annotations

import json

import numpy as np
import pytest
from scipy.special import softmax
from sklearn import metrics as skm

from cnnkit.errors import DataError, ShapeError
from cnnkit.evaluate import (
    calibration,
    classification_metrics,
    compare_models,
    compare_predictions,
    evaluate_arrays,
    evaluate_model,
)


@pytest.fixture
def random_logits(rng):
    classes, n = 7, 500
    labels = rng.integers(0, classes - 1, n)  # the last class never occurs: it still gets a row
    logits = rng.normal(size=(n, classes)) * 2
    logits[np.arange(n), labels] += 1.5  # better than chance, worse than perfect
    return logits.astype(np.float32), labels


def test_metrics_match_scikit_learn_on_random_logits(random_logits):
    logits, labels = random_logits
    names = [f"class{i}" for i in range(7)]
    ev = classification_metrics(logits, labels, names, top_k=3)
    probs, predicted, every = softmax(logits.astype(np.float64), axis=1), logits.argmax(axis=1), list(range(7))
    assert ev.summary.n == 500
    assert ev.summary.accuracy == pytest.approx(skm.accuracy_score(labels, predicted))
    assert ev.summary.top_k == 3
    assert ev.summary.top_k_error == pytest.approx(1 - skm.top_k_accuracy_score(labels, logits, k=3, labels=every))
    assert ev.summary.loss == pytest.approx(skm.log_loss(labels, probs, labels=every), rel=1e-5)
    report = skm.classification_report(
        labels, predicted, labels=every, target_names=names, output_dict=True, zero_division=0
    )
    for row in ev.per_class:
        expected = report[row.name]
        assert (row.precision, row.recall, row.f1, row.support) == pytest.approx(
            (expected["precision"], expected["recall"], expected["f1-score"], expected["support"])
        )
    for mine, theirs in ((ev.macro, report["macro avg"]), (ev.weighted, report["weighted avg"])):
        assert (mine["precision"], mine["recall"], mine["f1"]) == pytest.approx(
            (theirs["precision"], theirs["recall"], theirs["f1-score"])
        )
    np.testing.assert_array_equal(ev.confusion, skm.confusion_matrix(labels, predicted, labels=every))
    np.testing.assert_allclose(
        ev.confusion_normalized[:6], skm.confusion_matrix(labels, predicted, labels=every, normalize="true")[:6]
    )
    assert not ev.confusion_normalized[6].any()  # no images of the last class: a zero row, not NaN
    np.testing.assert_allclose(ev.losses, -np.log(probs[np.arange(500), labels]), rtol=1e-4)


def test_per_class_scores_match_scikit_learn_where_a_class_is_never_predicted_or_never_seen():
    labels = np.array([0, 0, 0, 1, 1, 2, 3, 3])
    predicted = np.array([0, 0, 1, 0, 0, 0, 3, 3])  # 2 never predicted, 1 never right, 4 never seen
    ev = classification_metrics(np.eye(5)[predicted] * 4, labels, top_k=2)
    every = list(range(5))
    theirs = skm.precision_recall_fscore_support(labels, predicted, labels=every, zero_division=0)
    for mine, expected in zip(zip(*[(r.precision, r.recall, r.f1, r.support) for r in ev.per_class]), theirs):
        np.testing.assert_allclose(mine, expected)
    np.testing.assert_array_equal(ev.confusion, skm.confusion_matrix(labels, predicted, labels=every))


def test_most_confused_pairs_and_worst_images():
    # 3 classes; true 0 predicted 2 three times, true 1 predicted 0 once.
    labels = np.array([0, 0, 0, 0, 1, 1, 2])
    predicted = np.array([2, 2, 2, 0, 0, 1, 2])
    logits = np.eye(3, dtype=np.float32)[predicted] * 4
    logits[1, 2] = 9  # the most confident mistake
    ev = classification_metrics(logits, labels, ["cat", "dog", "fox"])
    pairs = ev.most_confused(5)
    assert [(p.true, p.predicted, p.count) for p in pairs] == [("cat", "fox", 3), ("dog", "cat", 1)]
    assert pairs[0].rate == pytest.approx(0.75)
    assert ev.worst(1).tolist() == [1]
    assert set(ev.worst(4).tolist()) == {0, 1, 2, 4}  # the four mistakes
    assert ev.correct.tolist() == [False, False, False, True, False, True, True]


def test_expected_calibration_error_by_hand():
    # Constant confidence 0.9 with 60% right: one bin, ECE = |0.6 - 0.9| = 0.3.
    probs = np.tile([0.9, 0.1], (10, 1))
    labels = np.array([0] * 6 + [1] * 4)
    cal = calibration(probs, labels, bins=10)
    assert cal.ece == pytest.approx(0.3)
    assert cal.count[8] == 10 and sum(cal.count) == 10  # 0.9 falls in (0.8, 0.9]: bins are right-closed
    assert cal.accuracy[8] == pytest.approx(0.6) and cal.confidence[8] == pytest.approx(0.9)
    assert cal.accuracy[0] is None
    # Two bins, computed directly from the definition.
    probs = np.array([[0.55, 0.45], [0.6, 0.4], [0.95, 0.05], [0.99, 0.01], [0.2, 0.8]])
    labels = np.array([1, 0, 0, 0, 1])
    # bin (0.5, 0.6]: conf (0.55 + 0.6)/2, acc 1/2; bin (0.9, 1.0]: conf 0.97, acc 1; bin (0.7, 0.8]: conf 0.8, acc 1
    expected = (2 * abs(0.5 - 0.575) + 2 * abs(1 - 0.97) + 1 * abs(1 - 0.8)) / 5
    assert calibration(probs, labels, bins=10).ece == pytest.approx(expected)


def test_perfectly_calibrated_predictions_have_small_ece(rng):
    confidence = rng.uniform(0.5, 1.0, 20000)
    right = rng.uniform(size=20000) < confidence  # right exactly as often as claimed
    probs = np.stack([confidence, 1 - confidence], axis=1)
    assert calibration(probs, np.where(right, 0, 1)).ece < 0.02


def test_evaluation_to_json_keeps_the_old_keys(random_logits):
    logits, labels = random_logits
    data = json.loads(json.dumps(classification_metrics(logits, labels).to_dict()))
    assert {"n", "loss", "accuracy", "top_k", "top_k_error"} <= set(data)
    assert len(data["per_class"]) == 7 and data["confusion_matrix"]["classes"][0] == "0"
    assert len(data["calibration"]["edges"]) == 16 and len(data["highest_loss"]) == 10
    assert data["highest_loss"][0]["loss"] >= data["highest_loss"][-1]["loss"]


def test_bad_inputs_are_clear_errors():
    with pytest.raises(ShapeError):
        classification_metrics(np.zeros((3, 2)), np.zeros(4, int))
    with pytest.raises(DataError, match="labels must be in 0..1"):
        classification_metrics(np.zeros((3, 2)), np.array([0, 1, 2]))
    with pytest.raises(DataError, match="3 class names for 2"):
        classification_metrics(np.zeros((3, 2)), np.array([0, 1, 1]), ["a", "b", "c"])


def test_evaluate_model_agrees_with_evaluate_arrays(trained_seed, digits):
    model, _ = trained_seed
    _, (x, y) = digits
    ev = evaluate_model(model, x, y)
    old = evaluate_arrays(model, x, y)
    assert (ev.summary.n, ev.summary.accuracy, ev.summary.top_k_error) == (old.n, old.accuracy, old.top_k_error)
    assert ev.summary.loss == pytest.approx(old.loss, rel=1e-5)
    assert ev.class_names == model.class_names and ev.confusion.sum() == len(y)
    assert ev.confusion.trace() / len(y) == pytest.approx(ev.summary.accuracy)


def test_mcnemar_and_bootstrap_by_hand():
    # Identical models: no difference, p = 1, an interval of exactly zero.
    same = np.array([True, False] * 50)
    c = compare_predictions(same, same)
    assert (c.difference, c.ci_low, c.ci_high, c.mcnemar_p, c.significant) == (0, 0, 0, 1.0, False)
    # A right on 10 images B gets wrong, never the reverse: exact p = 2 * 0.5**10.
    a = np.ones(100, bool)
    b = a.copy()
    b[:10] = False
    c = compare_predictions(a, b)
    assert (c.only_a, c.only_b, c.both_right, c.both_wrong) == (10, 0, 90, 0)
    assert c.mcnemar_p == pytest.approx(2 * 0.5**10) and c.significant
    assert c.difference == pytest.approx(0.1) and 0.03 <= c.ci_low < 0.1 < c.ci_high <= 0.17
    # 6 against 4 discordant: p = P(|X - 5| >= 1) for X ~ Bin(10, 1/2) = 1 - P(X = 5).
    b = a.copy()
    b[:6] = False
    a2 = a.copy()
    a2[10:14] = False
    assert compare_predictions(a2, b).mcnemar_p == pytest.approx(1 - 252 / 1024)


def test_bootstrap_interval_matches_resampling_images(rng):
    # The multinomial shortcut must give the interval a plain index bootstrap gives.
    a, b = rng.uniform(size=300) < 0.8, rng.uniform(size=300) < 0.7
    c = compare_predictions(a, b, resamples=20000, seed=1)
    idx = rng.integers(0, 300, size=(4000, 300))
    plain = np.quantile(a[idx].mean(axis=1) - b[idx].mean(axis=1), [0.025, 0.975])
    assert c.ci_low == pytest.approx(plain[0], abs=0.012) and c.ci_high == pytest.approx(plain[1], abs=0.012)


def test_compare_models_needs_the_same_images(random_logits):
    logits, labels = random_logits
    ev = classification_metrics(logits, labels)
    other = classification_metrics(logits[:-1], labels[:-1])
    with pytest.raises(DataError, match="same labelled images"):
        compare_models(ev, other)
    assert compare_models(ev, ev).mcnemar_p == 1.0
