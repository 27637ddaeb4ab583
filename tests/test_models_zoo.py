"""The model zoo: every registered architecture builds, trains a step, counts like its reference, and saves."""

from __future__ import annotations

import json

import pytest
import torch

from cnnkit import models
from cnnkit.errors import ConfigError, ShapeError
from cnnkit.models import get_model_entry

ALL = models.list_models()
TORCHVISION = ["resnet18", "resnet50", "mobilenet_v3_small", "mobilenet_v3_large", "efficientnet_b0", "convnext_tiny"]


@pytest.fixture
def one_thread():
    """Tiny batches gain nothing from threads, and on a busy 2-core machine two threads contend badly."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_the_issue_lists_every_family():
    expected = {
        "seed",
        "lenet5",
        "alexnet",
        "alexnet_small",
        "vgg11",
        "vgg16",
        "resnet9",
        "resnet18_small",
        *TORCHVISION,
    }
    assert expected <= set(ALL)
    assert len([n for n in ALL if n.startswith("seed")]) >= 3  # the article's CNN and its variants
    assert models.list_models("resnet*") == ["resnet18", "resnet18_small", "resnet50", "resnet9"]


@pytest.mark.parametrize("name", ALL)
def test_forward_backward_any_channels_odd_classes(name, one_thread):
    entry = get_model_entry(name)
    size = max(entry.min_input_size, 32)  # 32 px, or AlexNet's ImageNet-geometry minimum (63)
    torch.manual_seed(0)
    for channels in (1, 3):
        model = models.create_model(name, num_classes=7, in_channels=channels, input_size=size)
        assert model.image_shape == (size, size, channels)
        model.train()
        logits = model(torch.rand(3, channels, size, size))  # (B, C, H, W) in [0, 1]
        assert logits.shape == (3, 7)
        assert torch.isfinite(logits).all()
        torch.nn.functional.cross_entropy(logits, torch.tensor([0, 3, 6])).backward()
        for pname, p in model.named_parameters():
            assert p.grad is not None, f"{name}/{channels}ch: {pname} got no gradient"
            assert torch.isfinite(p.grad).all(), f"{name}/{channels}ch: {pname} has a NaN/inf gradient"
        assert any(p.grad.abs().sum() > 0 for p in model.parameters())


@pytest.mark.parametrize("name", TORCHVISION)
def test_wrappers_count_like_torchvision_builders(name):
    import torchvision

    with torch.device("meta"):
        reference = torchvision.models.get_model(name, weights=None, num_classes=1000)
        ours = models.create_model(name, num_classes=1000, in_channels=3)
        assert sum(p.numel() for p in ours.parameters()) == sum(p.numel() for p in reference.parameters())
        # Same names and shapes too: torchvision's state dicts load as they are.
        assert {k: v.shape for k, v in ours.net.state_dict().items()} == {
            k: v.shape for k, v in reference.state_dict().items()
        }
        assert models.count_parameters(name) == torchvision.models.get_model_weights(name).DEFAULT.meta["num_params"]


def test_published_parameter_counts():
    assert models.count_parameters("lenet5", num_classes=10, input_size=32) == 61_706
    assert models.count_parameters("lenet5", num_classes=10, input_size=28) == 61_706  # padded like the paper
    assert models.count_parameters("alexnet", num_classes=1000) == 61_100_840
    assert models.count_parameters("seed", num_classes=10) == 93_322
    assert models.count_parameters("resnet18_small", num_classes=10) == 11_173_962  # the CIFAR ResNet-18
    with torch.device("meta"):
        assert models.create_model("seed", num_classes=10).count_params() == 93_322  # Keras' count


def test_alexnet_has_torchvision_names_and_optional_lrn():
    import torchvision

    with torch.device("meta"):
        reference = torchvision.models.alexnet(weights=None)
        for lrn in (False, True):
            ours = models.create_model("alexnet", num_classes=1000, lrn=lrn)
            assert {k: v.shape for k, v in ours.net.state_dict().items()} == {
                k: v.shape for k, v in reference.state_dict().items()
            }
    lrn_model = models.create_model("alexnet_small", num_classes=3, lrn=True)
    assert any(isinstance(m, torch.nn.LocalResponseNorm) for m in lrn_model.modules())


def test_registry_errors_are_clear():
    with pytest.raises(ValueError, match="already registered"):
        models.register_model("seed", description="again")(lambda **kw: None)
    with pytest.raises(ConfigError, match="unknown model 'resnet1000'"):
        models.create_model("resnet1000")
    with pytest.raises(ConfigError, match="at least 63x63.*--image-size 63"):
        models.create_model("alexnet", num_classes=5, input_size=32)
    with pytest.raises(ConfigError, match="bad argument for model 'alexnet_small'.*lrm"):
        models.create_model("alexnet_small", num_classes=5, lrm=True)
    with pytest.raises(ConfigError, match="in_channels must be 1"):
        models.create_model("resnet9", num_classes=5, in_channels=4)


# One of each kind of config: Sequential (with BatchNorm), registry models with and without
# options, torchvision's builders with a swapped stem and as they are.
ROUND_TRIP = ["seed_bn", "lenet5", "alexnet_small", "vgg11", "resnet9", "resnet18_small", "mobilenet_v3_small"]


@pytest.mark.parametrize("name", ROUND_TRIP)
def test_save_load_round_trip(name, tmp_path, one_thread):
    entry = get_model_entry(name)
    size = max(entry.min_input_size, 32)
    kwargs = {"lrn": True} if name.startswith("alexnet") else {}
    model = models.create_model(name, num_classes=5, in_channels=1, input_size=size, **kwargs).eval()
    model.class_names = list("abcde")
    model.save(tmp_path / "m.safetensors")
    again = models.load_model(tmp_path / "m.safetensors")
    x = torch.rand(2, 1, size, size)
    torch.testing.assert_close(again(x), model(x))
    assert again.image_shape == (size, size, 1) and again.class_names == list("abcde")
    assert again.get_config() == model.get_config()


def test_hand_written_architecture_errors_point_at_layer_and_field(tmp_path):
    def arch(*layers):
        path = tmp_path / "my_cnn.json"
        path.write_text(json.dumps({"class_name": "Sequential", "config": {"name": "mine", "layers": list(layers)}}))
        return path

    inp = {"class_name": "InputLayer", "config": {"shape": [28, 28, 1]}}
    conv = {"class_name": "Conv2D", "config": {"name": "c1", "filters": 8, "kernel_size": 3, "activation": "relu"}}
    flat = {"class_name": "Flatten", "config": {}}
    dense = {"class_name": "Dense", "config": {"name": "out", "units": 10, "activation": "softmax"}}
    model = models.load_architecture(arch(inp, conv, flat, dense))
    assert model.count_params() == 8 * 9 + 8 + 26 * 26 * 8 * 10 + 10

    cases = [
        (
            {**conv, "config": {**conv["config"], "filtres": 8}},
            r"my_cnn.json: layers\[1\] 'c1' \(Conv2D\): unknown field 'filtres'",
        ),
        (
            {"class_name": "Conv2D", "config": {"name": "c1", "kernel_size": 3}},
            r"layers\[1\] 'c1' \(Conv2D\): missing field 'filters'",
        ),
        (
            {**conv, "config": {**conv["config"], "activation": "rellu"}},
            r"layers\[1\] 'c1' \(Conv2D\): field 'activation': unknown activation 'rellu'",
        ),
        (
            {**conv, "config": {**conv["config"], "kernel_size": "3"}},
            r"layers\[1\] 'c1' \(Conv2D\): kernel_size must be",
        ),
        ({"class_name": "Conv3D", "config": {}}, r"layers\[1\] \(Conv3D\): unknown layer class 'Conv3D'"),
        ("conv", r"layers\[1\]: each layer is"),
    ]
    for bad, message in cases:
        with pytest.raises(ConfigError, match=message):
            models.load_architecture(arch(inp, bad, flat, dense))
    with pytest.raises(ShapeError, match=r"layers\[2\] 'out' \(Dense\): .*Add layers.Flatten\(\)"):
        models.load_architecture(arch(inp, conv, dense))
    (tmp_path / "broken.json").write_text('{"class_name": "Sequential", ')
    with pytest.raises(ConfigError, match="broken.json: not valid JSON"):
        models.load_architecture(tmp_path / "broken.json")


def test_cli_lists_models_with_params_input_and_paper(capsys):
    from cnnkit.cli import main  # in-process: tests/test_cli.py already runs `cnnkit models` as a subprocess

    assert main(["models"]) == 0
    out = capsys.readouterr().out
    for name in ("seed", "lenet5", "alexnet", "vgg16", "resnet9", "convnext_tiny"):
        assert name in out
    for figure in ("61,706", "61,100,840", "93,322", "11,689,512", "28,589,128"):
        assert figure in out
    assert "LeCun" in out and "Krizhevsky" in out and "imagenet" in out and "224x224x3" in out


def test_models_pattern_filters(capsys):
    from cnnkit.cli import main

    assert main(["models", "vgg*"]) == 0
    out = capsys.readouterr().out
    assert "vgg11" in out and "vgg16" in out and "resnet9" not in out
    assert main(["models", "nope*"]) == 1
    assert "no registered model matches 'nope*'" in capsys.readouterr().err


def test_training_sizes_small_images_up_to_the_models_minimum():
    from cnnkit import data
    from cnnkit.recipe.build import build_model
    from cnnkit.recipe.config import TrainConfig

    digits = data.load_dataset("digits")  # 28x28x1
    assert build_model(TrainConfig(model="vgg11"), digits).image_shape == (32, 32, 1)  # VGG needs 32
    assert build_model(TrainConfig(model="lenet5"), digits).image_shape == (28, 28, 1)  # LeNet takes 28
    assert build_model(TrainConfig(model="lenet5", image_size=32), digits).image_shape == (32, 32, 1)


@pytest.mark.parametrize("name, channels, size", [("mobilenet_v3_small", 3, 32), ("seed_bn", 1, 28)])
def test_a_batchnorm_model_trained_briefly_from_scratch_predicts_in_eval_mode(name, channels, size, one_thread):
    # With BatchNorm momentum 0.01 (torchvision's MobileNetV3, Keras' default 0.99) the running statistics
    # were still near their initial values after a short training, and eval mode answered one class.
    import numpy as np

    import cnnkit as keras

    model = models.create_model(name, num_classes=2, in_channels=channels, input_size=size)
    momenta = [m.momentum for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    assert momenta and momenta == pytest.approx([0.1] * len(momenta))
    rng = np.random.default_rng(0)
    y = np.arange(96) % 2
    stripes = (np.arange(size) // 2 % 2).astype(np.float32)
    x = np.where(y[:, None, None] == 1, stripes[None, None, :], stripes[None, :, None])  # vertical / horizontal
    x = np.repeat((x * 0.8 + rng.normal(0, 0.1, (96, size, size)))[..., None], channels, axis=3).astype(np.float32)
    keras.utils.set_random_seed(0)
    model = models.create_model(name, num_classes=2, in_channels=channels, input_size=size)
    model.compile(optimizer=keras.optimizers.Adam(3e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, batch_size=16, epochs=16, verbose=0)  # 96 steps: with momentum 0.01, eval got 50%
    assert history.history["accuracy"][-1] > 0.9
    loss, accuracy = model.evaluate(x, y, verbose=0)  # eval mode: the running statistics
    assert accuracy > 0.9


UNNORMALIZED = ["alexnet", "alexnet_small", "lenet5", "seed", "seed_deep", "seed_small", "seed_wide"]


def test_the_models_without_a_normalization_layer_are_the_ones_listed():
    norms = (torch.nn.modules.batchnorm._BatchNorm, torch.nn.LayerNorm, torch.nn.GroupNorm)
    with torch.device("meta"):  # structure only: no memory, no initialization
        built = {name: models.create_model(name, input_size=get_model_entry(name).min_input_size) for name in ALL}
    assert [name for name, m in built.items() if not any(isinstance(x, norms) for x in m.modules())] == UNNORMALIZED


@pytest.mark.parametrize("name", UNNORMALIZED)
def test_an_unnormalized_models_logits_at_init_depend_on_the_image(name, one_thread):
    # Nothing rescales the activations of a model with no normalization layer, so its initialization must
    # keep their scale: with torch's default init alexnet's logits over 16 images differed by ~1e-4 (the
    # output bias was all that reached them), and it trained at chance.
    size = max(get_model_entry(name).min_input_size, 32)
    torch.manual_seed(0)
    model = models.create_model(name, num_classes=10, in_channels=3, input_size=size).eval()
    with torch.no_grad():
        logits = model(torch.rand(16, 3, size, size))  # (16, 10)
    assert logits.std(dim=0).mean() > 5e-3


def test_alexnet_small_learns_digits_at_keras_default_learning_rate(one_thread):
    import cnnkit as keras

    digits = keras.datasets.load_dataset("digits")
    x, y = digits.train.images[:128], digits.train.labels[:128]  # (128, 28, 28, 1) in [0, 1]
    keras.utils.set_random_seed(0)
    model = models.create_model("alexnet_small", num_classes=10, in_channels=1, input_size=28)
    model.compile(optimizer=keras.optimizers.Adam(1e-3), loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, batch_size=16, epochs=8, verbose=0)  # 64 steps: 83-90% (3 seeds); torch's default init 12-23%
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy > 0.6


def test_efficientnet_starts_at_chance_loss_with_few_classes(one_thread):
    # torchvision's head init scales with 1/sqrt(classes): with 10 classes this batch's loss was 7.1, not ln 10
    import math

    torch.manual_seed(0)
    model = models.create_model("efficientnet_b0", num_classes=10, input_size=32).train()
    logits = model(torch.rand(32, 3, 32, 32))  # (32, 10): train mode, the batch's own statistics
    loss = torch.nn.functional.cross_entropy(logits, torch.randint(0, 10, (32,)))
    assert abs(loss.item() - math.log(10)) < 0.2
