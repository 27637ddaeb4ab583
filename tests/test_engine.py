"""The training engine's parts: non-finite steps, clipping, EMA, schedules, budgets, weights, augmentation."""

from __future__ import annotations

import math

import numpy as np
import pytest
import torch
from torch import nn

from cnnkit import layers, models
from cnnkit.data import augment
from cnnkit.errors import TrainingError
from cnnkit.train import loop, lr_schedule, optimizers
from cnnkit.train.callbacks import ModelCheckpoint, TimeBudget
from cnnkit.train.ema import EMA
from cnnkit.train.lr_find import lr_find
from cnnkit.train.settings import TrainSettings


def tiny_model(classes: int = 3) -> models.Sequential:
    return models.Sequential([layers.Input((4, 4, 1)), layers.Conv2D(4, 3), layers.BatchNormalization(),
                              layers.Flatten(), layers.Dense(classes, activation="softmax")])  # fmt: skip


def tiny_data(n: int = 64, classes: int = 3, seed: int = 0) -> tuple[torch.Tensor, torch.Tensor]:
    g = torch.Generator().manual_seed(seed)
    return torch.rand(n, 1, 4, 4, generator=g), torch.randint(0, classes, (n,), generator=g)


def ce(logits, y):
    return nn.functional.cross_entropy(logits, y)


@pytest.mark.parametrize("name", ["adam", "rmsprop"])  # fused (skip on device) and not (skip on host)
def test_a_non_finite_step_is_skipped_and_reported(name, capsys):
    x, y = tiny_data(64)
    x[40] = float("nan")  # poisons exactly one batch of 16
    model = tiny_model()
    optimizer = optimizers.get(name).build(model.parameters())
    history = loop.fit(model, (x, y), loss_fn=ce, optimizer=optimizer, epochs=2, batch_size=16, verbose=2)
    assert all(torch.isfinite(p).all() for p in model.parameters())
    assert all(math.isfinite(v) for v in history.history["loss"])
    assert capsys.readouterr().out.count("skipped 1 non-finite step(s)") == 2


def test_repeated_non_finite_steps_stop_the_run():
    x, y = tiny_data(64)
    x[::8] = float("nan")  # every batch of 16
    model = tiny_model()
    with pytest.raises(TrainingError, match=r"NaN or infinite in 4 of 4 steps.*10x smaller --lr"):
        loop.fit(model, (x, y), loss_fn=ce, optimizer=optimizers.Adam().build(model.parameters()), epochs=1,
                 batch_size=16, shuffle=False, verbose=0)  # fmt: skip


def test_a_nan_model_never_overwrites_the_last_good_checkpoint(tmp_path):
    model = tiny_model()
    checkpoint = ModelCheckpoint(tmp_path / "m.safetensors")
    checkpoint.set_model(model)
    checkpoint.on_epoch_end(0, {"loss": 1.0})
    good = (tmp_path / "m.safetensors").read_bytes()
    with torch.no_grad():
        model.layers[0].conv.weight[0, 0, 0, 0] = float("nan")
    checkpoint.on_epoch_end(1, {"loss": 0.5})
    assert (tmp_path / "m.safetensors").read_bytes() == good


def test_out_of_memory_is_a_clear_error(monkeypatch):
    model = tiny_model()

    def oom(*args, **kwargs):
        raise torch.OutOfMemoryError("CUDA out of memory. Tried to allocate 2.00 GiB")

    monkeypatch.setattr(model, "forward", oom)
    with pytest.raises(TrainingError, match=r"out of memory .* batches of 16 .*--batch-size \(e\.g\. 8\)"):
        loop.fit(model, tiny_data(32), loss_fn=ce, optimizer=optimizers.Adam().build(model.parameters()),
                 epochs=1, batch_size=16, verbose=0)  # fmt: skip


def test_gradient_clipping_bounds_the_update():
    model = tiny_model()
    before = [p.detach().clone() for p in model.parameters()]
    opt = torch.optim.SGD(model.parameters(), lr=1.0)
    step = loop.Stepper(model, lambda logits, y: 1e6 * ce(logits, y), opt, TrainSettings(clip_norm=0.5))
    step(*tiny_data(16))
    change = torch.cat([(p.detach() - b).flatten() for p, b in zip(model.parameters(), before)])
    assert change.norm() == pytest.approx(0.5, rel=1e-4)


def test_ema_follows_the_weights_with_warmup_and_becomes_the_result():
    model = tiny_model()
    ema = EMA(model, decay=0.9)
    start = [t.clone() for t in ema.tensors]
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    step = loop.Stepper(model, ce, opt, ema=ema)
    step(*tiny_data(16))
    decay = min(0.9, 2 / 11)  # warm-up: (1 + t) / (10 + t) at t = 1
    expected = [s * decay + t.detach() * (1 - decay) for s, t in zip(start, EMA._sources(model))]
    for got, want in zip(ema.tensors, expected):
        torch.testing.assert_close(got, want)
    with ema.applied(model):
        torch.testing.assert_close(next(model.parameters()), ema.tensors[0])
    assert not torch.equal(next(model.parameters()), ema.tensors[0])  # swapped back
    history = loop.fit(model, tiny_data(32), loss_fn=ce, optimizer=opt, epochs=1, batch_size=16, ema=ema, verbose=0)
    assert len(history.epoch) == 1
    torch.testing.assert_close(next(model.parameters()), ema.tensors[0])


def test_weight_decay_skips_biases_and_norm_scales():
    groups = optimizers.decay_groups(tiny_model(), 5e-4)
    decayed, plain = groups
    assert decayed["weight_decay"] == 5e-4 and all(p.ndim > 1 for p in decayed["params"])
    assert plain["weight_decay"] == 0 and {p.ndim for p in plain["params"]} == {1}
    assert len(plain["params"]) == 4  # conv bias, BN gamma and beta, dense bias


def test_schedules_warm_up_and_end_at_zero():
    def rates(shape, total=20, shrink_to=None):
        p = nn.Parameter(torch.zeros(1))
        opt = torch.optim.SGD([p], lr=1.0)
        schedule = lr_schedule.Schedule(opt, shape, total)
        out = []
        for i in range(total):
            if shrink_to and i == 5:
                schedule.total_steps = shrink_to
            out.append(opt.param_groups[0]["lr"])
            opt.step()
            schedule.step()
        return out

    one = rates("onecycle")
    assert one[0] == pytest.approx(0.1) and max(one) == pytest.approx(1.0) and one[-1] == pytest.approx(1 / 16)
    cos = rates("cosine")
    assert cos[0] == pytest.approx(0.25) and cos.index(max(cos)) == 3 and cos[-1] < 0.01
    assert rates("onecycle", shrink_to=10)[10] == 0.0  # the budget's shorter run still ends at zero


def test_time_budget_shrinks_the_run_and_its_schedule():
    ticks = iter(range(0, 10_000, 10))  # every reading of the clock advances 10 s: 10 s per epoch
    model = tiny_model()
    opt = torch.optim.SGD(model.parameters(), lr=0.1)
    schedule = lr_schedule.Schedule(opt, "onecycle", total_steps=100 * 2)
    budget = TimeBudget(35, schedule, steps_per_epoch=2, clock=lambda: next(ticks))
    history = loop.fit(model, tiny_data(32), loss_fn=ce, optimizer=opt, epochs=100, batch_size=16,
                       scheduler=schedule, callbacks=[budget], verbose=0)  # fmt: skip
    assert budget.planned_epochs == 3 and len(history.epoch) == 3 and schedule.total_steps == 6


def test_lr_find_restores_the_model_and_suggests_a_rate(tmp_path):
    from cnnkit.recipe.lr_find import plot_lr_find

    model = tiny_model()
    opt = optimizers.Adam().build(model.parameters())
    before = {k: v.clone() for k, v in model.state_dict().items()}
    result = lr_find(model, tiny_data(256), ce, opt, steps=60, batch_size=16)
    for key, value in model.state_dict().items():
        torch.testing.assert_close(value, before[key])
    assert opt.state == {} or all(len(s) == 0 for s in opt.state.values())
    assert result.lrs[0] == pytest.approx(1e-7) and 1e-7 <= result.suggestion <= 10
    assert result.lrs == sorted(result.lrs)
    assert plot_lr_find(result, tmp_path / "lr.png").stat().st_size > 1000


def test_class_weights_auto_is_balanced():
    from cnnkit.recipe.build import class_weights

    weights = class_weights("auto", np.array([0] * 8 + [1] * 2), 2)
    torch.testing.assert_close(weights, torch.tensor([10 / 16, 10 / 4]))
    torch.testing.assert_close(class_weights("1:3", np.array([0, 1]), 3), torch.tensor([1.0, 3.0, 1.0]))


# -- augmentation -------------------------------------------------------------------------------------
def test_crop_shifts_content_and_flip_mirrors():
    torch.manual_seed(0)
    x = torch.zeros(64, 1, 8, 8)
    x[:, :, 3:5, 3:5] = 1.0
    shifted = augment.random_crop(x, 2)
    assert shifted.shape == x.shape and torch.all(shifted.sum((1, 2, 3)) == 4)  # nothing lost: 2 px margin
    assert len({tuple(torch.nonzero(s[0])[0].tolist()) for s in shifted}) > 5
    ramp = torch.arange(8.0).expand(64, 1, 8, 8)
    flipped = augment.random_flip(ramp)
    assert 10 < int((flipped[:, 0, 0, 0] == 7).sum()) < 54


def test_affine_and_cutout():
    torch.manual_seed(0)
    x = torch.rand(16, 3, 12, 12)
    assert augment.random_affine(x, degrees=0, scale=0, shear=0).sub(x).abs().max() < 1e-5  # identity
    moved = augment.random_affine(x)
    assert moved.shape == x.shape and not torch.allclose(moved, x)
    cut = augment.random_cutout(torch.ones(16, 3, 12, 12), fraction=0.25)
    assert torch.all((cut == 0).sum((2, 3)) == 9)  # one 3x3 hole per channel


def test_augment_policies():
    assert augment.make_augment("none") is None
    labels = torch.arange(4)
    out, targets = augment.make_augment("flip+crop+cutout+affine")(torch.rand(4, 1, 8, 8), labels)
    assert out.shape == (4, 1, 8, 8) and targets is labels
    assert augment.make_augment("flip-crop") is not None  # old spelling
    with pytest.raises(Exception, match="unknown augmentation 'rotate'"):
        augment.make_augment("rotate")


@pytest.mark.parametrize("precision", ["bf16", "fp16"])
def test_mixed_precision_steps_train(precision):
    """The GPU code path (autocast, and a gradient scaler for fp16), exercised on the CPU."""
    torch.manual_seed(0)
    model = tiny_model()
    opt = optimizers.Adam(learning_rate=0.01).build(model.parameters())
    step = loop.Stepper(model, ce, opt, TrainSettings(precision=precision))
    losses = [float(step(*tiny_data(32, seed=1))[0]) for _ in range(15)]
    assert all(math.isfinite(v) for v in losses) and losses[-1] < losses[0]
    assert all(p.dtype == torch.float32 for p in model.parameters())


def test_deterministic_runs_are_bit_identical(tmp_path):
    from safetensors.torch import load_file

    from cnnkit.recipe import TrainConfig, train

    runs = [train(TrainConfig(data="faces", epochs=2, deterministic=True, seed=5, ema=0.9, augment="flip+crop+affine",
                              out=str(tmp_path / str(i)), verbose=0))
            for i in range(2)]  # fmt: skip
    first, second = (load_file(r.model_path) for r in runs)
    assert first.keys() == second.keys()
    assert all(torch.equal(first[k], second[k]) for k in first)


def test_optimizer_state_follows_a_change_of_weight_layout_between_fits():
    # A first fit in NCHW leaves Adam's moments contiguous; a second one in channels-last must not
    # let the fused step pair each weight with another weight's moments.
    def trained(second_channels_last: bool) -> models.Sequential:
        torch.manual_seed(0)
        model = models.Sequential([layers.Input((6, 6, 2)), layers.Conv2D(4, 3, activation="relu"), layers.Conv2D(4, 3),
                                   layers.Flatten(), layers.Dense(3)])  # fmt: skip
        optimizer = optimizers.Adam().build(model.parameters())
        g = torch.Generator().manual_seed(1)
        x, y = torch.rand(32, 2, 6, 6, generator=g), torch.randint(0, 3, (32,), generator=g)
        for channels_last in (False, second_channels_last):
            loop.fit(model, (x, y), loss_fn=ce, optimizer=optimizer, epochs=1, batch_size=16, shuffle=False,
                     settings=TrainSettings(channels_last=channels_last), verbose=0)  # fmt: skip
        return model

    weight = trained(True).layers[1].conv.weight
    assert weight.is_contiguous(memory_format=torch.channels_last) and not weight.is_contiguous()
    for a, b in zip(trained(True).get_weights(), trained(False).get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-5)


# -- settings -----------------------------------------------------------------------------------------
def test_settings_refuse_an_unknown_precision():
    with pytest.raises(TrainingError, match="precision must be one of fp32, bf16, fp16, got 'fp8'"):
        TrainSettings(precision="fp8")


@pytest.mark.parametrize(("channels_last", "expected"), [(None, True), (False, False)])
def test_fit_resolves_auto_channels_last_from_the_model(channels_last, expected):
    model = models.Sequential([layers.Input((6, 6, 2)), layers.Conv2D(4, 3), layers.Flatten(), layers.Dense(3)])
    optimizer = optimizers.Adam().build(model.parameters())
    x, y = torch.rand(32, 2, 6, 6), torch.randint(0, 3, (32,))
    loop.fit(model, (x, y), loss_fn=ce, optimizer=optimizer, epochs=1, batch_size=16,
             settings=TrainSettings(channels_last=channels_last), verbose=0)  # fmt: skip
    weight = model.layers[0].conv.weight  # (4, 2, 3, 3): two input channels, so the two layouts differ
    assert weight.is_contiguous(memory_format=torch.channels_last) == expected
    assert weight.is_contiguous() != expected


def test_the_recipe_resolves_every_auto_once_into_typed_settings():
    from cnnkit.recipe.build import resolve_settings
    from cnnkit.recipe.config import TrainConfig

    settings, recorded = resolve_settings(TrainConfig(clip_norm=2.0), "crop", torch.device("cpu"))
    assert settings.channels_last is True and settings.precision == "fp32" and callable(settings.augment)
    assert settings.clip_norm == 2.0 and settings.compile is False
    assert (recorded["channels_last"], recorded["precision"], recorded["augment"]) == ("on", "fp32", "crop")
    settings, recorded = resolve_settings(TrainConfig(channels_last="off", augment="none"), "crop", torch.device("cpu"))
    assert settings.channels_last is False and settings.augment is None
    assert (recorded["channels_last"], recorded["augment"]) == ("off", "none")
