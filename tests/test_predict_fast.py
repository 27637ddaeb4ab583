"""``Model.predict`` / ``evaluate``'s fast path gives the plain path's answers: the remembered ``kernels.fuse``
answer after the model changes (more fit, load_weights, to(), a new layer, a hook), the passes of many
images for Keras' batch_size, and the eval mode that puts every module's own mode back."""

from __future__ import annotations

import copy

import numpy as np
import pytest
import torch
from torch import nn

from cnnkit import kernels, layers, models
from cnnkit.evaluate import eval_mode, predict_logits


def article_model() -> models.Sequential:
    model = models.Sequential([
        layers.Input((28, 28, 1)),
        layers.Conv2D(8, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Conv2D(16, (3, 3), activation="relu"), layers.MaxPooling2D((2, 2)),
        layers.Flatten(), layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.fixture
def data():
    rng = np.random.default_rng(0)
    return rng.random((96, 28, 28, 1), dtype=np.float32), rng.integers(0, 10, 96)


def plain_probabilities(model: nn.Module, x: np.ndarray) -> np.ndarray:
    """The model as written (its own forward, every layer as a module), in eval mode, one pass."""
    was = model.training
    model.eval()
    with torch.no_grad():
        out = torch.softmax(model(torch.from_numpy(x).permute(0, 3, 1, 2)), dim=1).numpy()
    model.train(was)
    return out


def test_fuse_remembers_its_answer_until_the_modules_change(data):
    model = article_model()
    model.predict(data[0][:1], verbose=0)
    fused = kernels.fuse(model)
    assert isinstance(fused, kernels.Fused) and kernels.fuse(model) is fused
    assert "_cnnkit_fused" not in dict(model.named_modules()) and not any("fused" in k for k in model.state_dict())
    handle = model.layers[0].register_forward_hook(lambda *a: None)
    hooked = kernels.fuse(model)
    assert hooked is not fused and "conv2d+max_pooling2d" not in hooked.blocks  # the hooked block runs as written
    handle.remove()
    assert kernels.fuse(model).blocks == fused.blocks
    model.pop()
    model.add(layers.Dense(5, activation="softmax"))
    model.build((28, 28, 1))
    assert kernels.fuse(model) is not fused
    assert model.predict(data[0][:4], verbose=0).shape == (4, 5)
    twin = copy.deepcopy(model)  # the remembered answer travels with the copy but is the copy's own
    assert kernels.fuse(twin).model is twin
    np.testing.assert_allclose(twin.predict(data[0][:4], verbose=0), model.predict(data[0][:4], verbose=0))


def test_predict_follows_fit_load_weights_and_to(data, tmp_path):
    x, y = data
    model = article_model()
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    first = model.predict(x, verbose=0)
    np.testing.assert_allclose(first, plain_probabilities(model, x), rtol=1e-4, atol=1e-6)
    model.save_weights(tmp_path / "first.safetensors")
    model.fit(x, y, epochs=2, batch_size=16, verbose=0)  # weights updated in place
    second = model.predict(x, verbose=0)
    assert not np.allclose(first, second, atol=1e-4)
    np.testing.assert_allclose(second, plain_probabilities(model, x), rtol=1e-4, atol=1e-6)
    model.load_weights(tmp_path / "first.safetensors")
    np.testing.assert_allclose(model.predict(x, verbose=0), first, rtol=1e-4, atol=1e-6)
    model.to(memory_format=torch.channels_last)
    np.testing.assert_allclose(model.predict(x, verbose=0), first, rtol=1e-4, atol=1e-6)
    conv = model.layers[0].conv
    conv.weight = nn.Parameter(conv.weight.detach() * 2)  # a new Parameter object: read at each call
    doubled = model.predict(x, verbose=0)
    assert not np.allclose(doubled, first, atol=1e-4)
    np.testing.assert_allclose(doubled, plain_probabilities(model, x), rtol=1e-4, atol=1e-6)


def test_predict_and_evaluate_do_not_depend_on_batch_size(data):
    x, y = data
    model = models.Sequential([
        layers.Input((28, 28, 1)),
        layers.Conv2D(8, (3, 3), activation="relu"), layers.BatchNormalization(), layers.MaxPooling2D((2, 2)),
        layers.Flatten(), layers.Dense(10, activation="softmax"),
    ])  # fmt: skip
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=1, batch_size=32, verbose=0)
    expected = plain_probabilities(model, x)
    for batch_size in (1, 7, 32, None, 1000):
        np.testing.assert_allclose(model.predict(x, batch_size=batch_size, verbose=0), expected, rtol=1e-4, atol=1e-6)
    one = model.evaluate(x, y, batch_size=1, verbose=0, return_dict=True)
    default = model.evaluate(x, y, verbose=0, return_dict=True)
    assert default["accuracy"] == one["accuracy"]
    assert default["loss"] == pytest.approx(one["loss"], rel=1e-5)


def test_a_large_image_keeps_keras_batch_size(monkeypatch):
    from cnnkit.models import trainer as model_module  # where Model.predict finds predict_logits

    seen = []
    real = model_module.predict_logits
    monkeypatch.setattr(model_module, "predict_logits", lambda m, x, b: seen.append(b) or real(m, x, b))
    net = models.Model(
        nn.Sequential(nn.Conv2d(3, 2, 3), nn.AdaptiveAvgPool2d(1), nn.Flatten()), input_shape=(128, 128, 3)
    )
    net.predict(np.zeros((3, 128, 128, 3), np.float32), verbose=0)
    small = article_model()
    small.predict(np.zeros((3, 28, 28, 1), np.float32), verbose=0)
    assert seen == [32, (1 << 20) // (28 * 28)]  # 128x128x3 = 49,152 values: 21 images fit in 4 MiB, fewer than 32


class _Counting(nn.Module):
    """A module with its own train(), as some libraries write (frozen BatchNorm, ...)."""

    calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return x

    def train(self, mode: bool = True):
        _Counting.calls += 1
        return super().train(mode)


def test_eval_mode_puts_back_each_modules_own_mode():
    net = nn.Sequential(nn.Linear(4, 4), nn.Dropout(0.5), nn.Linear(4, 2))
    net.train()
    net[1].eval()  # a user's frozen part stays frozen
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert [m.training for m in net.modules()] == [True, True, False, True]
    net.eval()
    with eval_mode(net):
        assert not any(m.training for m in net.modules())
    assert not any(m.training for m in net.modules())
    custom = nn.Sequential(nn.Linear(4, 2), _Counting())
    predict_logits(custom, torch.zeros(3, 4))
    assert _Counting.calls == 2 and custom.training  # its own train() ran, to eval and back


def test_predict_of_a_fused_model_restores_training_mode(data):
    model = article_model()
    model.fit(*data, epochs=1, verbose=0)
    model.train()
    model.predict(data[0][:2], verbose=0)
    assert all(m.training for m in model.modules())
    assert kernels.fuse(model).training
