"""Explanations against models whose answer is known by construction."""

from __future__ import annotations

import threading

import numpy as np
import pytest
import torch
from PIL import Image
from torch import nn

from cnnkit import explain
from cnnkit.errors import ConfigError, ShapeError
from cnnkit.models import Model


class LeftHalf(nn.Module):
    """A CNN that only sees the left half of the image: the right half is zeroed before every convolution."""

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.conv1 = nn.Conv2d(3, 8, 3, padding=1, bias=False)
        self.conv2 = nn.Conv2d(8, 8, 1, bias=False)  # 1x1: nothing bleeds back into the right half
        self.fc = nn.Linear(8, classes)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        mask = torch.zeros_like(x[:, :1])
        mask[..., : x.shape[-1] // 2] = 1  # (B, 1, H, W): left half only
        a = torch.relu(self.conv1(x * mask)) * mask  # (B, 8, H, W)
        a = torch.relu(self.conv2(a))
        return self.fc(a.mean(dim=(2, 3)))


@pytest.fixture
def left_half():
    torch.manual_seed(3)
    model = Model(LeftHalf(), input_shape=(16, 16, 3))
    image = torch.rand(3, 16, 16)  # both halves bright: only the model decides where evidence is
    return model, image


def _identity_cam_model() -> Model:
    """1x1 convolution with weight 1 -> global average -> logits (+mean, -mean): Grad-CAM of class 0 is the image."""
    conv = nn.Conv2d(1, 1, 1, bias=False)
    fc = nn.Linear(1, 2, bias=False)
    with torch.no_grad():
        conv.weight.fill_(1.0)
        fc.weight.copy_(torch.tensor([[1.0], [-1.0]]))
    return Model(nn.Sequential(conv, nn.AdaptiveAvgPool2d(1), nn.Flatten(), fc), input_shape=(6, 5, 1))


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_cam_of_a_hand_computed_model(method):
    # d logit0 / dA = 1/(H*W) everywhere, so every CAM variant is proportional to A = the image itself.
    model = _identity_cam_model()
    image = torch.rand(1, 6, 5, generator=torch.Generator().manual_seed(0))
    heat, cls, layer = explain.class_activation_map(model, image, target=0, method=method)
    assert (cls, layer) == (0, "0") and heat.dtype == np.float32 and heat.shape == (6, 5)
    np.testing.assert_allclose(heat, (image[0] / image.max()).numpy(), rtol=1e-5, atol=1e-6)
    # Class 1's score falls wherever the image is bright: no positive evidence anywhere.
    assert not explain.class_activation_map(model, image, target=1, method=method)[0].any()


@pytest.mark.parametrize("method", ["gradcam", "gradcam++", "layercam"])
def test_cam_mass_is_where_the_network_looks(left_half, method):
    model, image = left_half
    heat, _, layer = explain.class_activation_map(model, image, method=method)
    assert layer == "conv2"  # found automatically: the last convolution that runs
    assert heat.shape == (16, 16) and heat.max() == pytest.approx(1.0)
    assert heat[:, 8:].sum() == 0 and heat[:, :8].sum() > 0
    # The right half of the *image* is bright too: the map follows the model, not the pixels.
    assert image[:, :, 8:].mean() > 0.4


def test_gradcam_public_signature(left_half):
    model, image = left_half
    predicted = int(model(image[None]).argmax())
    np.testing.assert_array_equal(explain.gradcam(model, image), explain.gradcam(model, image[None], target=predicted))
    np.testing.assert_array_equal(explain.gradcam(model, image), explain.gradcam(model, image, layer="conv2"))
    hwc = image.permute(1, 2, 0).numpy()  # Keras-style arrays work too
    np.testing.assert_array_equal(explain.gradcam(model, image), explain.gradcam(model, hwc))


def test_explanations_take_a_pil_image(left_half):
    model, image = left_half
    pixels = (image.permute(1, 2, 0) * 255).round().to(torch.uint8).numpy()  # (16, 16, 3)
    same = torch.from_numpy(pixels).permute(2, 0, 1).float() / 255  # (3, 16, 16): the PIL image's values
    pil = Image.fromarray(pixels)
    np.testing.assert_allclose(explain.gradcam(model, pil), explain.gradcam(model, same), atol=1e-6)
    np.testing.assert_allclose(explain.saliency(model, pil), explain.saliency(model, same), atol=1e-6)
    maps = explain.feature_maps(model, pil)
    assert all(np.allclose(m, explain.feature_maps(model, same)[name], atol=1e-6) for name, m in maps.items())


def test_saliency_and_integrated_gradients_ignore_what_the_model_cannot_see(left_half):
    model, image = left_half
    for heat in (explain.saliency(model, image), explain.integrated_gradients(model, image)):
        assert heat.shape == (16, 16) and heat.dtype == np.float32
        assert heat.max() == pytest.approx(1.0) and heat[:, 8:].sum() == 0


def test_integrated_gradients_are_complete(left_half):
    # Sundararajan et al.'s axiom: the attributions add up to score(image) - score(black image).
    model, image = left_half
    attributions, cls = explain.integrated_gradients_attributions(model, image, steps=256)
    with torch.no_grad():
        expected = float(model(image[None])[0, cls] - model(torch.zeros(1, 3, 16, 16))[0, cls])
    assert attributions.shape == (3, 16, 16)
    assert attributions.sum() == pytest.approx(expected, rel=0.02, abs=1e-4)


def test_saliency_is_the_input_gradient():
    # logits = W x (a linear model): d logit_c / d x = W[c], so saliency is |W[c]| max over channels.
    torch.manual_seed(0)
    linear = nn.Linear(2 * 4 * 4, 3)
    model = Model(nn.Sequential(nn.Flatten(), linear), input_shape=(4, 4, 2))
    grads, cls = explain.saliency_attributions(model, torch.rand(2, 4, 4), target=2)
    np.testing.assert_allclose(grads, linear.weight[2].detach().view(2, 4, 4).numpy(), rtol=1e-6)
    expected = np.abs(grads).max(axis=0)
    np.testing.assert_allclose(
        explain.saliency(model, torch.rand(2, 4, 4), target=2), expected / expected.max(), rtol=1e-5
    )


def test_sequential_feature_maps_kernels_and_gradcam(trained_seed, digits):
    model, _ = trained_seed
    image = torch.from_numpy(digits[1][0][0]).permute(2, 0, 1)  # (1, 28, 28)
    maps = explain.feature_maps(model, image)
    convs = [layer for layer in model.layers if type(layer).__name__ == "Conv2D"]
    assert list(maps) == [layer.name for layer in convs] == explain.conv_layer_names(model)
    for layer in convs:  # Keras' (None, H, W, C) -> (C, H, W)
        _, h, w, c = layer.output_shape
        assert maps[layer.name].shape == (c, h, w) and (maps[layer.name] >= 0).all()  # after the ReLU
    every = explain.feature_maps(model, image, layers="all")
    assert list(every)[:2] == ["conv2d", "max_pooling2d"] and "dense" not in every  # only (C, H, W) outputs
    np.testing.assert_array_equal(explain.conv_kernels(model), convs[0].conv.weight.detach().numpy())
    assert explain.conv_kernels(model).shape == (32, 1, 3, 3)
    heat, cls, layer = explain.class_activation_map(model, image)
    assert layer == convs[-2].name == "conv2d_1"  # 11x11; conv2d_2's 3x3 is below the 7x7 a default layer needs
    assert heat.shape == (28, 28) and heat.min() >= 0 and heat.max() <= 1
    assert cls == int(model(image[None]).argmax())
    assert explain.class_activation_map(model, image, target="3")[1] == 3  # a class name
    only = explain.feature_maps(model, image, layers=["conv2d_1"])
    assert list(only) == ["conv2d_1"] and only["conv2d_1"].shape == (64, 11, 11)


def test_torchvision_resnet_last_conv_and_inplace_relu():
    from torchvision.models import resnet18

    torch.manual_seed(0)
    model = Model(resnet18(num_classes=4), input_shape=(32, 32, 3))
    image = torch.rand(3, 32, 32)
    heat, _, layer = explain.class_activation_map(model, image)
    # At this size layer1 is 8x8, layer2 4x4, layer3 2x2, layer4 1x1: upsampled from 2x2 a map says little
    # about where, so the default is the last convolution whose map is at least 7x7 (explain._layers.MIN_CAM_SIDE).
    assert layer == "layer1.1.conv2" and heat.shape == (32, 32) and np.isfinite(heat).all()
    # ReLU(inplace=True) right after a hooked BatchNorm must not break the gradient.
    assert explain.gradcam(model, image, layer="layer4.1.bn2").shape == (32, 32)
    assert explain.gradcam(model, image, layer="net.layer3").shape == (32, 32)  # a full module path works too
    maps = explain.feature_maps(model, image)
    assert maps["conv1"].shape == (64, 16, 16) and maps["layer4.1.conv2"].shape == (512, 1, 1)
    assert explain.conv_kernels(model).shape == (64, 3, 7, 7)


def test_last_conv_is_found_by_execution_order():
    class Reversed(nn.Module):
        def __init__(self) -> None:
            super().__init__()
            self.late = nn.Conv2d(4, 4, 3, padding=1)  # registered first, runs last
            self.early = nn.Conv2d(1, 4, 3, padding=1)
            self.fc = nn.Linear(4, 2)

        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return self.fc(self.late(torch.relu(self.early(x))).mean(dim=(2, 3)))

    model = Model(Reversed(), input_shape=(8, 8, 1))
    assert explain.class_activation_map(model, torch.rand(1, 8, 8))[2] == "late"
    assert list(explain.feature_maps(model, torch.rand(1, 8, 8))) == ["early", "late"]  # the order they run


def test_bad_requests_are_clear_errors(left_half):
    model, image = left_half
    with pytest.raises(ConfigError, match="no layer 'conv9'.*conv1, conv2"):
        explain.gradcam(model, image, layer="conv9")
    with pytest.raises(ConfigError, match="does not output feature maps"):
        explain.gradcam(model, image, layer="fc")
    with pytest.raises(ConfigError, match="out of range"):
        explain.gradcam(model, image, target=7)
    with pytest.raises(ConfigError, match="unknown class 'cat'"):
        explain.saliency(model, image, target="cat")
    with pytest.raises(ShapeError, match="one image at a time"):
        explain.gradcam(model, torch.rand(2, 3, 16, 16))


def test_explanations_leave_the_model_as_they_found_it(left_half):
    model, image = left_half
    model.train()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    with torch.inference_mode():  # e.g. a server handler
        heat = explain.gradcam(model, image)
    explain.integrated_gradients(model, image, steps=4)
    assert model.training and heat.any()
    assert all(p.grad is None for p in model.parameters())
    assert all(torch.equal(before[k], v) for k, v in model.state_dict().items())
    assert not any(m._forward_hooks for m in model.modules())


def test_concurrent_gradcams_match_one_at_a_time(left_half):
    model, _ = left_half
    images = torch.rand(6, 3, 16, 16, generator=torch.Generator().manual_seed(1))
    expected = [explain.gradcam(model, x) for x in images]
    results: dict[int, np.ndarray] = {}
    threads = [
        threading.Thread(target=lambda i=i: results.update({i: explain.gradcam(model, images[i])})) for i in range(6)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    for i in range(6):
        np.testing.assert_array_equal(results[i], expected[i])


def test_overlay_blends_the_coloured_map_over_the_image():
    image = torch.full((1, 4, 6), 0.5)  # grey
    heat = np.zeros((4, 6), np.float32)
    heat[0, 0] = 1.0
    out = explain.overlay(image, heat, alpha=0.5)
    assert out.mode == "RGB" and out.size == (6, 4)
    pixels = np.asarray(out, dtype=np.float32) / 255
    np.testing.assert_allclose(pixels[0, 0], 0.25 + 0.5 * explain.colorize(np.ones((1, 1)))[0, 0], atol=1 / 255)
    np.testing.assert_allclose(pixels[3, 5], 0.25 + 0.5 * explain.colorize(np.zeros((1, 1)))[0, 0], atol=1 / 255)
    big = explain.overlay(np.full((40, 60, 3), 0.2, np.float32), heat)  # a model-size map over a larger photo
    assert big.size == (60, 40)


def test_tile_lays_maps_out_in_a_grid():
    maps = np.stack([np.full((2, 3), float(i)) for i in range(5)])
    grid = explain.tile(maps, columns=3, pad=1, per_tile=False)
    assert grid.shape == (2 * 2 + 1, 3 * 3 + 2)
    assert grid[0, 0] == 0 and grid[3, 4] == pytest.approx(1.0)  # tile 4 (row 1, col 1) is the largest
    assert grid[2, 0] == 1.0  # padding between rows


# One model per family (the zoo's own tests build every one; these are the cheap members).
@pytest.mark.parametrize("name", ["lenet5", "alexnet_small", "resnet9", "vgg11", "efficientnet_b0", "seed_bn"])
def test_every_model_family_can_be_explained(name):
    from cnnkit import models

    torch.manual_seed(0)
    model = models.create_model(name, num_classes=3, in_channels=3, input_size=32)
    image = torch.rand(3, 32, 32)
    heat, cls, layer = explain.class_activation_map(model, image)
    assert heat.shape == (32, 32) and np.isfinite(heat).all() and heat.min() >= 0 and heat.max() <= 1
    assert layer in explain.conv_layer_names(model) and cls == int(model.eval()(image[None]).argmax())
    assert explain.saliency(model, image).shape == (32, 32)
    maps = explain.feature_maps(model, image)
    assert maps and all(m.ndim == 3 and np.isfinite(m).all() for m in maps.values())
    first = next(iter(maps.values()))
    assert explain.conv_kernels(model).shape[:2] == (first.shape[0], 3)  # the first convolution's kernels
