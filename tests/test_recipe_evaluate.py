"""`cnnkit evaluate`'s library function: saved models on the right images, one or two at a time."""

from __future__ import annotations

import pytest

from cnnkit.errors import ConfigError
from cnnkit.recipe import evaluate_saved


def test_one_model_on_a_data_sets_test_split_with_plots(trained_seed, digits, tmp_path):
    _, path = trained_seed
    result = evaluate_saved([path], data="digits", top_k=2, plots_dir=tmp_path)
    (ev,) = result.evaluations
    assert result.where == "digits test split" and ev.summary.n == len(digits[1][1]) and ev.summary.top_k == 2
    assert result.comparison is None and {"confusion.png", "reliability.png"} <= {p.name for p in result.plots}
    assert all(p.parent == tmp_path for p in result.plots)


def test_two_models_are_compared_on_the_same_images(trained_seed):
    _, path = trained_seed
    result = evaluate_saved([path, str(path)], data="digits", plots_dir=None)
    a, b = result.evaluations
    assert result.models == [str(path), str(path)] and (a.labels == b.labels).all()
    assert result.comparison.difference == 0 and result.plots == []


def test_one_or_two_models_only(trained_seed):
    _, path = trained_seed
    with pytest.raises(ConfigError, match="one model, or two"):
        evaluate_saved([path] * 3, data="digits")
