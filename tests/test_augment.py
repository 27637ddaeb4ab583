"""The augmentation registry: every op on grey and colour batches, label mixing through the loss and metrics."""

from __future__ import annotations

import pytest
import torch
import torch.nn.functional as F
from torch import nn

from cnnkit.data import augment
from cnnkit.errors import ConfigError

SHAPES = [(1, 8, 8), (3, 16, 16)]  # digits-like grey, photo-like colour


@pytest.mark.parametrize("shape", SHAPES, ids=["grey", "rgb"])
@pytest.mark.parametrize("name", list(augment.AUGMENTATIONS))
def test_every_registered_op_keeps_the_batch_and_changes_it(name, shape):
    torch.manual_seed(0)
    x = torch.rand(32, *shape)
    labels = torch.randint(0, 5, (32,))
    out, targets = augment.apply_policy(name, x, labels, num_classes=5)
    assert out.shape == x.shape and out.dtype == torch.float32 and torch.isfinite(out).all()
    assert not torch.equal(out, x)  # it did something to 32 random images
    if augment.AUGMENTATIONS[name].mixer is not None:
        assert targets.shape == (32, 5) and torch.allclose(targets.sum(1), torch.ones(32))
    else:
        assert targets is labels


def test_policies_run_in_the_registry_order_and_refuse_unknown_names():
    assert augment.parse_policy("mixup+crop+randaugment+flip") == ["flip", "crop", "randaugment", "mixup"]
    assert augment.parse_policy("none") == [] and augment.make_augment("none") is None
    assert augment.parse_policy("flip-crop") == ["flip", "crop"]  # the old spelling
    with pytest.raises(ConfigError, match="unknown augmentation 'crop\\+spin'; combine flip, crop, .*mixup, cutmix"):
        augment.parse_policy("crop+spin")
    with pytest.raises(ValueError, match="already registered"):
        augment.register_augmentation(augment.Augmentation("crop", "again", augment.random_crop))


def test_mixing_index_labels_needs_the_class_count():
    mix = augment.make_augment("mixup")
    with pytest.raises(ConfigError, match="need the number of classes"):
        mix(torch.rand(4, 1, 8, 8), torch.arange(4))
    soft = F.one_hot(torch.arange(4), 4).float()  # already probabilities: nothing to one-hot
    assert mix(torch.rand(4, 1, 8, 8), soft)[1].shape == (4, 4)


def test_mixup_blends_each_image_with_its_neighbour_by_its_target_weights():
    torch.manual_seed(1)
    x = torch.rand(6, 3, 8, 8)
    out, targets = augment.apply_policy("mixup", x, torch.arange(6), num_classes=6)  # one class per image
    lam = targets[0, 0]
    assert 0 < lam < 1 and torch.allclose(targets.diagonal(), lam.expand(6))
    torch.testing.assert_close(out, lam * x + (1 - lam) * x.roll(1, 0))  # the other share is the previous image's


def test_cutmix_labels_are_the_pasted_areas():
    torch.manual_seed(3)
    x = torch.arange(4.0)[:, None, None, None].expand(4, 1, 16, 16) / 4  # image i is filled with i/4
    out, targets = augment.apply_policy("cutmix", x, torch.arange(4), num_classes=4)
    own = (out == x).float().mean((1, 2, 3))  # share of each image's own pixels
    torch.testing.assert_close(targets.diagonal(), own)


def test_torchvision_ops_draw_their_parameters_once_per_group():
    calls = []

    def constant(part: torch.Tensor) -> torch.Tensor:  # stands for a transform: one draw per call
        calls.append(len(part))
        return torch.full_like(part, float(len(calls)))

    out = augment.in_groups(constant)(torch.zeros(20, 1, 2, 2))
    assert calls == [3, 3, 3, 3, 2, 2, 2, 2] and len(out.unique()) == augment.GROUPS  # 20 images, 8 draws
    assert augment.in_groups(constant)(torch.zeros(3, 1, 2, 2)).unique().numel() == 3  # never an empty slice


def test_colour_jitter_on_grey_images_changes_brightness_and_contrast_only():
    torch.manual_seed(0)
    grey = torch.rand(16, 1, 8, 8) * 0.5 + 0.25
    out, _ = augment.apply_policy("jitter", grey, torch.zeros(16, dtype=torch.long))
    assert out.shape == (16, 1, 8, 8) and not torch.equal(out, grey) and out.min() >= 0 and out.max() <= 1


def test_soft_targets_go_through_the_loss_with_label_smoothing():
    from cnnkit.train.losses import SparseCategoricalCrossentropy

    torch.manual_seed(0)
    logits, labels = torch.randn(8, 5), torch.randint(0, 5, (8,))
    loss = SparseCategoricalCrossentropy(label_smoothing=0.1)
    torch.testing.assert_close(loss(logits, F.one_hot(labels, 5).float()), loss(logits, labels))  # hard = soft
    soft = torch.softmax(torch.randn(8, 5), 1)
    smoothed = 0.9 * soft + 0.1 / 5
    torch.testing.assert_close(loss(logits, soft), -(smoothed * logits.log_softmax(1)).sum(1).mean())


def test_the_loop_feeds_mixed_targets_to_the_loss_and_counts_their_dominant_class():
    from cnnkit.evaluate import count_correct
    from cnnkit.train import loop
    from cnnkit.train.settings import TrainSettings

    # accuracy of mixed targets: the class with the larger share
    mixed = torch.tensor([[0.7, 0.3, 0.0], [0.2, 0.0, 0.8]])
    assert int(count_correct(torch.tensor([[2.0, 1.0, 0.0], [3.0, 0.0, 1.0]]), mixed)) == 1

    seen = []

    def loss_fn(logits: torch.Tensor, targets: torch.Tensor) -> torch.Tensor:
        seen.append(targets.shape)
        return F.cross_entropy(logits, targets)

    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(64, 3))
    settings = TrainSettings(augment=augment.make_augment("crop+mixup", num_classes=3), channels_last=False)
    step = loop.Stepper(model, loss_fn, torch.optim.SGD(model.parameters(), lr=0.1), settings)
    batches = loop.TensorBatches(torch.rand(16, 1, 8, 8), torch.randint(0, 3, (16,)), 8)
    logs, skipped = loop.train_one_epoch(step, batches, metrics={"accuracy": 1})
    assert seen == [(8, 3), (8, 3)] and skipped == 0 and 0 <= logs["accuracy"] <= 1


def test_train_accepts_the_joined_policy_from_the_issue():
    from cnnkit.recipe import TrainConfig
    from cnnkit.recipe.build import resolve_settings

    config = TrainConfig(augment="crop+flip+randaugment+mixup")
    config.validate()
    settings, recorded = resolve_settings(config, "crop", torch.device("cpu"), num_classes=4)
    x, targets = settings.augment(torch.rand(8, 3, 16, 16), torch.randint(0, 4, (8,)))
    assert recorded["augment"] == "crop+flip+randaugment+mixup" and targets.shape == (8, 4)
