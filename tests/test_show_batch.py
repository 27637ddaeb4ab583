"""show-batch: augmented training images with their (mixed) labels, in every run folder, the report and the CLI."""

from __future__ import annotations

import numpy as np
import torch
from PIL import Image

from cnnkit.data import augment as augmentations
from cnnkit.data.prepare import open_data
from cnnkit.recipe import show_batch as show
from cnnkit.report.plots import batch_captions
from conftest import run_main


def test_mixed_labels_show_their_two_largest_shares():
    names = ["cat", "dog", "emu"]
    soft = np.array([[0.0, 0.62, 0.38], [0.0, 0.0, 1.0], [0.9967, 0.0017, 0.0017]])  # mixed; one-hot; smoothed
    assert batch_captions(soft, names) == ["dog 62%\nemu 38%", "emu", "cat"]
    assert batch_captions(np.array([2, 0]), names) == ["emu", "cat"]


def test_the_batch_is_the_policy_s_own_and_leaves_training_s_random_numbers_alone():
    prepared = open_data("faces", val_split=0.1)
    torch.manual_seed(3)
    expected_next = torch.rand(3)
    torch.manual_seed(3)
    x, y = show.augmented_batch(prepared, "flip+crop", (28, 28, 1), n=8, seed=1)
    assert torch.equal(torch.rand(3), expected_next)  # the global stream continues as if nothing was drawn
    assert x.shape == (8, 1, 28, 28) and y.shape == (8,)
    plain, _ = show.augmented_batch(prepared, "none", (28, 28, 1), n=8, seed=1)
    again, _ = show.augmented_batch(prepared, "flip+crop", (28, 28, 1), n=8, seed=1)
    assert torch.equal(x, again) and not torch.equal(x, plain)  # seeded, and augmented


def test_a_label_mixing_policy_is_drawn_with_its_soft_targets(tmp_path, monkeypatch):
    """The registry's batch-and-labels entry point is what the picture uses (here a stand-in MixUp)."""
    seen = {}

    def apply_policy(policy, images, labels, num_classes):
        seen.update(policy=policy, classes=num_classes)
        onehot = torch.nn.functional.one_hot(labels, num_classes).float()
        return 0.7 * images + 0.3 * images.flip(0), 0.7 * onehot + 0.3 * onehot.flip(0)

    monkeypatch.setattr(augmentations, "apply_policy", apply_policy, raising=False)
    prepared = open_data("faces", val_split=0.1)
    x, y = show.augmented_batch(prepared, "mixup", (28, 28, 1), n=6)
    assert seen == {"policy": "mixup", "classes": 2} and y.shape == (6, 2)
    captions = batch_captions(y.numpy(), prepared.dataset.class_names)
    assert all(caption.count("%") in (0, 2) for caption in captions) and any("70%" in c for c in captions)
    path = show.write_train_batch(tmp_path / "b.png", prepared, "mixup", (28, 28, 1), n=6)
    assert Image.open(path).size[0] > 300


def test_cnnkit_show_batch_previews_a_policy(tmp_path):
    out = tmp_path / "preview.png"
    result = run_main("show-batch", "--data", "faces", "--augment", "flip+cutout", "--images", "12", "--out", str(out))
    assert result.returncode == 0, result.stderr
    assert f"wrote {out}" in result.stdout
    width, height = Image.open(out).size
    assert width > height > 100  # 8 columns by 2 rows of tiles
    bad = run_main("show-batch", "--data", "faces", "--augment", "wobble", "--out", str(tmp_path / "x.png"))
    assert bad.returncode == 1 and "unknown augmentation 'wobble'" in bad.stderr and not (tmp_path / "x.png").exists()
