"""Deletion and insertion (RISE) against a model whose right answer is known by construction."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from torch import nn

from cnnkit.explain import metrics
from cnnkit.explain.quality import Quality, Score, measure_heatmaps
from cnnkit.models import Model


class LeftSum(nn.Module):
    """logit 0 = k * (sum of the left half's pixels), logit 1 = 0: only the left half is evidence."""

    def __init__(self, k: float = 0.5) -> None:
        super().__init__()
        self.k = k
        self.conv = nn.Conv2d(1, 1, 1, bias=False)  # a convolution for the CAM methods to look at
        with torch.no_grad():
            self.conv.weight.fill_(1.0)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        a = self.conv(x)  # (B, 1, H, W) = x
        left = a[..., : x.shape[-1] // 2].sum(dim=(1, 2, 3))
        return torch.stack([self.k * left, torch.zeros_like(left)], dim=1)


@pytest.fixture
def left_sum():
    return Model(LeftSum(), input_shape=(4, 4, 1))


def _left_first() -> np.ndarray:
    heat = np.zeros((1, 4, 4), np.float32)
    heat[..., :2] = 1.0
    heat[..., :2] += np.arange(8, dtype=np.float32).reshape(4, 2) / 100  # no ties: the order is fixed
    return heat


def test_deletion_curve_by_hand(left_sum):
    image = torch.ones(1, 1, 4, 4)
    # 4 steps over 16 pixels: 0, 4, 8, 12, 16 removed. Left first: the left sum is 8, 4, 0, 0, 0.
    curve = metrics.perturbation_curves(left_sum, image, _left_first(), np.array([0]), steps=4)
    sigmoid = lambda s: 1 / (1 + np.exp(-0.5 * np.asarray(s, dtype=np.float64)))  # noqa: E731
    np.testing.assert_allclose(curve[0], sigmoid([8, 4, 0, 0, 0]), rtol=1e-6)
    # The opposite order (right half first) keeps the evidence until the end: 8, 8, 8, 4, 0.
    right_first = 1.0 - _left_first()
    late = metrics.perturbation_curves(left_sum, image, right_first, np.array([0]), steps=4)
    np.testing.assert_allclose(late[0], sigmoid([8, 8, 8, 4, 0]), rtol=1e-6)
    # The area is the trapezoid rule over x in [0, 1].
    expected = np.trapezoid(sigmoid([8, 4, 0, 0, 0]), dx=1 / 4)
    assert metrics.deletion(left_sum, image, _left_first(), np.array([0]), steps=4)[0] == pytest.approx(expected)
    assert metrics.deletion(left_sum, image, right_first, steps=4)[0] > expected  # targets default: predicted (0)


def test_insertion_starts_blurred_and_ends_at_the_image(left_sum):
    image = torch.zeros(1, 1, 4, 4)
    image[..., :2] = 1.0  # the left half bright, the right dark: the blur moves evidence to the right
    curve = metrics.perturbation_curves(left_sum, image, _left_first(), np.array([0]), mode="insertion", steps=4)
    p = lambda x: float(torch.softmax(left_sum(x).detach(), 1)[0, 0])  # noqa: E731
    assert curve[0, 0] == pytest.approx(p(metrics._blur(image, 0.5 * 2)), rel=1e-5)  # sigma = 4 / 8 at least 1
    assert curve[0, -1] == pytest.approx(p(image), rel=1e-6)
    # The left-first map restores the evidence early; right-first only at the end.
    right_first = 1.0 - _left_first()
    assert metrics.insertion(left_sum, image, _left_first())[0] > metrics.insertion(left_sum, image, right_first)[0]


def test_batched_passes_match_one_image_at_a_time(left_sum):
    images = torch.rand(7, 1, 4, 4, generator=torch.Generator().manual_seed(0))
    heats = metrics.random_order(images, seed=3)
    together = metrics.perturbation_curves(left_sum, images, heats, steps=5, batch_size=1000)
    apart = np.concatenate([metrics.perturbation_curves(left_sum, images[i : i + 1], heats[i : i + 1], steps=5,
                                                        batch_size=6) for i in range(7)])  # fmt: skip
    np.testing.assert_allclose(together, apart, rtol=1e-6)
    assert together.shape == (7, 6)


def test_the_baselines_are_heat_maps():
    images = torch.rand(3, 2, 5, 7, generator=torch.Generator().manual_seed(0))
    for name, baseline in metrics.BASELINES.items():
        heats = baseline(images)
        assert heats.shape == (3, 5, 7) and heats.dtype == np.float32, name
    centre = metrics.centre_out(images)[0]
    assert centre[2, 3] == centre.max() == 1.0 and centre[0, 0] == centre.min() == 0.0
    np.testing.assert_allclose(metrics.brightest_first(images), images.mean(dim=1).numpy(), rtol=1e-6)
    assert not np.array_equal(metrics.random_order(images, 0), metrics.random_order(images, 1))


def test_shape_mismatch_is_an_error(left_sum):
    from cnnkit.errors import ShapeError

    with pytest.raises(ShapeError, match="do not match"):
        metrics.deletion(left_sum, torch.rand(2, 1, 4, 4), np.zeros((2, 3, 3), np.float32))


def test_a_method_that_follows_the_model_beats_the_trivial_orders(left_sum):
    # Every pixel is bright, so brightness and the centre say nothing; saliency finds the left half.
    images = 0.5 + 0.5 * torch.rand(12, 1, 4, 4, generator=torch.Generator().manual_seed(1))
    quality = measure_heatmaps(left_sum, images, methods=["saliency", "gradcam"], steps=8)
    names = [s.name for s in quality.scores]
    assert names == ["gradcam at conv", "saliency", "random", "centre-out", "brightest-first"]
    saliency = quality.scores[1]
    assert all(saliency.deletion < b.deletion - 0.05 for b in quality.baselines)
    table = quality.table().splitlines()
    assert table[0].startswith("heat map") and table[2].startswith("saliency") and table[-1].endswith("baseline")


def test_the_verdict_says_plainly_when_nothing_beats_the_baselines():
    scores = [Score("gradcam at conv2d_2", "gradcam", "conv2d_2", 0.27, 0.5, 0.001),
              Score("random", None, None, 0.34, 0.4, 0.0), Score("brightest-first", None, None, 0.15, 0.6, 0.0)]  # fmt: skip
    quality = Quality(scores, 30, 20)
    assert quality.best is None and not quality.beats_baselines(scores[0])
    assert quality.verdict().startswith("No heat-map method beats all of the trivial orders")
    better = Score("saliency", "saliency", None, 0.1, 0.7, 0.001)
    quality = Quality([*scores, better], 30, 20)
    assert quality.best == better and "saliency tells the most" in quality.verdict()


def test_the_report_measures_every_method_against_the_trivial_orders(trained_seed, digits, tmp_path):
    import re

    from cnnkit.data.catalog import Dataset, ImageArrays
    from cnnkit.report import write_report

    model, model_path = trained_seed
    (x, y), (xt, yt) = digits
    data = Dataset("digits", [str(i) for i in range(10)], ImageArrays(x[:64], y[:64]), ImageArrays(xt[:20], yt[:20]))
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    (run_dir / "model.safetensors").write_bytes(model_path.read_bytes())
    text = write_report(run_dir, model=model, data=data, samples=2).read_text()
    section = re.search(r'<section id="gradcam">(.*?)</section>', text, flags=re.S).group(1)
    assert "Do the heat maps tell more than trivial orders?" in section and "first 12 test images" in section
    for name in ("layercam at conv2d_1", "gradcam at conv2d", "gradcam at conv2d_2", "saliency",
                 "integrated-gradients", "random", "centre-out", "brightest-first"):  # fmt: skip
        assert f"<td>{name}</td>" in section, name
    assert "tells the most over these 12 images" in section or "No heat-map method beats all" in section
