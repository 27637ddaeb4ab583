"""--accumulate N (gradient accumulation, one all-reduce per step under DDP) and --batch-size auto."""

from __future__ import annotations

import json

import pytest
import torch
import torch.distributed as dist
from torch import nn

from cnnkit.errors import ConfigError, TrainingError
from cnnkit.recipe.config import AUTO_BATCH, TrainConfig
from cnnkit.train import autobatch, loop
from cnnkit.train.distributed import Replicas
from cnnkit.train.settings import TrainSettings
from conftest import run_main

ce = nn.functional.cross_entropy


def _model() -> nn.Module:  # no BatchNorm: a batch's statistics would differ between 16 and 64 images
    torch.manual_seed(0)
    return nn.Sequential(nn.Conv2d(2, 4, 3), nn.ReLU(), nn.Flatten(), nn.Linear(4 * 4 * 4, 3))


def _trained(batch_size: int, accumulate: int, n: int, epochs: int = 2, clip_norm: float | None = None) -> nn.Module:
    model = _model()
    g = torch.Generator().manual_seed(1)
    x, y = torch.rand(n, 2, 6, 6, generator=g), torch.randint(0, 3, (n,), generator=g)
    settings = TrainSettings(channels_last=False, accumulate=accumulate, clip_norm=clip_norm)
    loop.fit(model, (x, y), loss_fn=ce, optimizer=torch.optim.SGD(model.parameters(), lr=0.5), epochs=epochs,
             batch_size=batch_size, shuffle=False, settings=settings, verbose=0)  # fmt: skip
    return model


@pytest.mark.parametrize("n", [64 * 3, 64 * 2 + 32])  # whole groups; and a last group of two batches, not four
def test_four_batches_of_16_train_as_one_batch_of_64(n):
    plain, accumulated = _trained(64, 1, n), _trained(16, 4, n)
    for a, b in zip(plain.parameters(), accumulated.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)
    assert not torch.allclose(_trained(16, 1, n).state_dict()["3.weight"], plain.state_dict()["3.weight"])


def test_clipping_sees_the_group_s_mean_gradient():
    plain, accumulated = _trained(64, 1, 128, clip_norm=0.05), _trained(32, 2, 128, clip_norm=0.05)
    for a, b in zip(plain.parameters(), accumulated.parameters()):
        torch.testing.assert_close(a, b, rtol=1e-5, atol=1e-6)


def test_micro_batches_before_the_last_skip_ddp_s_all_reduce():
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    try:
        model = _model()
        ddp = Replicas(model, torch.device("cpu")).forward()
        reduced = []

        def counting_hook(state, bucket):  # DDP calls it for each bucket it all-reduces
            reduced.append(bucket.index())
            fut = torch.futures.Future()
            fut.set_result(bucket.buffer())
            return fut

        ddp.register_comm_hook(None, counting_hook)
        optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
        step = loop.Stepper(model, ce, optimizer, TrainSettings(channels_last=False, accumulate=4))
        step.forward = ddp
        x, y = torch.rand(16, 2, 6, 6), torch.randint(0, 3, (16,))
        before = [p.detach().clone() for p in model.parameters()]
        for _ in range(3):
            step(x, y, last=False)
        assert reduced == [] and all(torch.equal(a, b) for a, b in zip(before, model.parameters()))  # no step yet
        step(x, y, last=True)
        assert len(reduced) == len(set(reduced)) >= 1  # each bucket once, in the last micro-batch's backward
        assert not all(torch.equal(a, b) for a, b in zip(before, model.parameters()))
    finally:
        dist.destroy_process_group()


def test_the_schedule_counts_optimizer_steps(tmp_path):
    result = run_main("train", "--data", "faces", "--epochs", "1", "--batch-size", "16", "--accumulate", "3", "-q",
                      "--no-report", "--out", str(tmp_path / "r"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert json.loads((tmp_path / "r" / "config.json").read_text())["accumulate"] == 3
    assert run_main("train", "--accumulate", "0", "--out", str(tmp_path / "x")).returncode == 1


# -- --batch-size auto -----------------------------------------------------------------------------------
def _simulated_gpu(per_image: int, oom_above: int):
    """A trial step on a pretend GPU: ``per_image`` bytes an image, out of memory past ``oom_above`` images."""
    tried: list[int] = []

    def trial(batch: int) -> int:
        tried.append(batch)
        if batch > oom_above:
            raise torch.OutOfMemoryError(f"CUDA out of memory trying {batch}")
        return batch * per_image

    return trial, tried


def test_the_largest_batch_within_the_share_of_free_memory():
    trial, tried = _simulated_gpu(per_image=1000, oom_above=10_000)
    assert autobatch.find_batch_size(trial, free=250_000, share=0.8) == 200  # 0.8 * 250 kB / 1 kB
    assert tried[:4] == [32, 64, 128, 256]  # doubling, then bisecting between 128 and 256
    trial, _ = _simulated_gpu(per_image=1000, oom_above=300)  # the allocator gives up before the share is used
    assert autobatch.find_batch_size(trial, free=10**9) == 300
    trial, tried = _simulated_gpu(per_image=1000, oom_above=5)
    assert autobatch.find_batch_size(trial, free=10**9) == 5 and tried[:4] == [32, 16, 8, 4]  # halving first
    trial, _ = _simulated_gpu(per_image=1, oom_above=10**6)
    assert autobatch.find_batch_size(trial, free=10**9, largest=90) == 90  # never more than the images
    trial, _ = _simulated_gpu(per_image=1000, oom_above=0)
    with pytest.raises(TrainingError, match="not even a batch of one image fits"):
        autobatch.find_batch_size(trial, free=10**9)


def test_the_real_trial_step_leaves_the_model_as_it_was():
    model = nn.Sequential(nn.Conv2d(1, 2, 3), nn.BatchNorm2d(2), nn.Flatten(), nn.Linear(2 * 4 * 4, 3)).eval()
    state = {k: v.clone() for k, v in model.state_dict().items()}
    trial = autobatch.trial_step(model, ce, torch.rand(1, 6, 6), classes=3)
    assert trial(8) == 0  # no CUDA: only an out-of-memory error would limit the size
    assert not model.training and all(p.grad is None for p in model.parameters())
    assert all(torch.equal(state[k], v) for k, v in model.state_dict().items())  # BatchNorm statistics too


def test_batch_size_auto_in_a_run_and_a_config_file(tmp_path, monkeypatch):
    from cnnkit.recipe import build

    assert TrainConfig.from_dict({"batch_size": "auto"}).batch_size == AUTO_BATCH
    with pytest.raises(ConfigError, match="batch_size: expected a number of images or auto"):
        TrainConfig.from_dict({"batch_size": "lots"})
    result = run_main("train", "--data", "faces", "--epochs", "1", "--batch-size", "auto", "--no-report",
                      "--out", str(tmp_path / "r"))  # fmt: skip
    assert result.returncode == 0, result.stderr
    assert "batch size auto: 64 (on cpu" in result.stdout
    assert json.loads((tmp_path / "r" / "config.json").read_text())["batch_size"] == 64  # what it found, recorded

    # On a (simulated) GPU the recipe searches with the real trial step and the data's own images.
    seen = {}

    def fake_find(trial, free, **kwargs):
        seen.update(free=free, **kwargs, fits=trial(4))
        return 48

    monkeypatch.setattr(build.autobatch, "find_batch_size", fake_find)
    from cnnkit.data.prepare import open_data
    from cnnkit.models import create_model

    prepared = open_data("faces", val_split=0.1)
    model = create_model("seed", num_classes=2, in_channels=1, input_size=28)
    config = TrainConfig(data="faces", batch_size=AUTO_BATCH, verbose=0)
    found = build.resolve_batch_size(config, model, prepared, torch.device("cuda"), free_memory=lambda d: 2**30)
    assert found.batch_size == 48 and seen["free"] == 2**30 and seen["largest"] == prepared.train_size
    with pytest.raises(ConfigError, match="under torchrun give the global batch"):
        build.resolve_batch_size(config, model, prepared, torch.device("cpu"), processes=2)
