"""The torchrun helpers in one process: how batches are split over ranks, run folder names across
restarts, the checks on the global batch, torchrun's error file, and the collectives on a real
(one-process) gloo group. tests/test_distributed.py runs real torchrun jobs."""

from __future__ import annotations

import json
import math

import numpy as np
import pytest
import torch
import torch.distributed as dist
from torch import nn
from torch.distributed.elastic.multiprocessing.errors import ProcessFailure

from cnnkit.errors import ConfigError, TrainingError
from cnnkit.evaluate import evaluate_tensors
from cnnkit.recipe.config import TrainConfig
from cnnkit.train import distributed
from cnnkit.train.distributed import World
from cnnkit.train.loop import TensorBatches

CASES = [
    (144, 16, 2),
    (100, 32, 2),
    (101, 32, 4),
    (35, 16, 8),
    (7, 8, 8),
    (10, 3, 1),
    (64, 64, 4),
]  # batch: a multiple of ranks


def _shards(n: int, batch: int, size: int) -> list[list[torch.Tensor]]:
    """Each rank's batches (as image indices) of one epoch, every rank seeded alike."""
    x = torch.arange(n)
    out = []
    for rank in range(size):
        generator = torch.Generator().manual_seed(5)
        batches = TensorBatches(x, x, batch, generator=generator, world=World(rank, rank, size))
        out.append([xb for xb, _ in batches])
        assert len(out[-1]) == len(batches) == distributed.steps_per_epoch(n, batch, size)
    return out


@pytest.mark.parametrize(("n", "batch", "size"), CASES)
def test_the_ranks_split_each_global_batch_of_one_process_evenly(n, batch, size):
    (alone,) = _shards(n, batch, 1)
    assert len(alone) == math.ceil(n / batch) == distributed.steps_per_epoch(n, batch)
    ranks = _shards(n, batch, size)
    for step, shares in enumerate(zip(*ranks)):
        assert len({len(s) for s in shares}) == 1  # the same number of images on every rank
        together = torch.cat(shares)
        assert len(set(together.tolist())) == len(together)
        expected = alone[step][: len(alone[step]) - len(alone[step]) % size]  # at most size - 1 left out
        assert sorted(together.tolist()) == sorted(expected.tolist())
    if n % batch == 0 and batch % size == 0:  # then exactly one process's batches
        assert sum(len(s) for shares in ranks for s in shares) == n


@pytest.mark.parametrize(("n", "batch", "size"), [case for case in CASES if case[2] > 1])
def test_streamed_files_are_split_like_resident_tensors(tmp_path, n, batch, size):
    from cnnkit.data.streaming import file_batches, shard_batches

    paths, labels = [tmp_path / f"{i}.png" for i in range(n)], np.zeros(n, dtype=np.int64)
    loader = file_batches(paths, labels, (8, 8, 1), batch, seed=3, workers=0)
    ranks = []
    for rank in range(size):
        share = shard_batches(loader, rank, size, seed=3)
        share.sampler.set_epoch(4)  # what the engine does at each epoch
        ranks.append(list(share.batch_sampler))  # file indices; nothing is decoded
        assert len(share) == distributed.steps_per_epoch(n, batch, size)
        assert share.batch_size == batch // size
    order = list(torch.randperm(n, generator=torch.Generator().manual_seed(3 + 4)))  # DistributedSampler's
    for step, shares in enumerate(zip(*ranks)):
        together = sorted(i for s in shares for i in s)
        assert together == sorted(int(i) for i in order[step * batch : (step + 1) * batch][: len(together)])


def test_the_global_batch_and_sync_bn_are_checked():
    from cnnkit.recipe.run import _global_batch

    two, cpu = World(0, 0, 2), torch.device("cpu")
    assert _global_batch(TrainConfig(batch_size=64), two, cpu).batch_size == 64
    per_process = _global_batch(TrainConfig(batch_size=32, batch_scope="process"), World(1, 1, 4), cpu)
    assert (per_process.batch_size, per_process.batch_scope) == (128, "global")  # what config.json records
    with pytest.raises(ConfigError, match=r"--batch-size 65 is the global batch.*multiple of 2 \(e.g. 64 or 66\)"):
        _global_batch(TrainConfig(batch_size=65), two, cpu)
    with pytest.raises(ConfigError, match="--sync-bn needs GPUs"):
        _global_batch(TrainConfig(sync_bn=True), two, cpu)
    assert _global_batch(TrainConfig(sync_bn=True), World(), cpu).sync_bn  # one process: nothing to sync
    with pytest.raises(ConfigError, match="batch_scope must be global or process"):
        TrainConfig(batch_scope="node").validate()


@pytest.fixture
def torchrun_env(monkeypatch):
    for name, value in {"RANK": "0", "LOCAL_RANK": "0", "WORLD_SIZE": "2", "TORCHELASTIC_RESTART_COUNT": "0"}.items():
        monkeypatch.setenv(name, value)
    return monkeypatch


def test_restarted_processes_find_the_run_folder_again(torchrun_env, tmp_path):
    from cnnkit.recipe.run import _stable_run_dir

    config = TrainConfig(runs_dir=str(tmp_path))
    torchrun_env.setenv("TORCHELASTIC_MAX_RESTARTS", "0")
    assert _stable_run_dir(config) is None  # never restarted: the usual timestamped name
    torchrun_env.setenv("TORCHELASTIC_MAX_RESTARTS", "3")
    torchrun_env.setenv("TORCHELASTIC_RUN_ID", "none")  # torchrun without --standalone or --rdzv-id
    with pytest.raises(ConfigError, match="give --out DIR"):
        _stable_run_dir(config)
    assert _stable_run_dir(config.replace(out=str(tmp_path / "mine"))) == tmp_path / "mine"
    torchrun_env.setenv("TORCHELASTIC_RUN_ID", "3f2a9c1e-8a7b-4c5d-9e0f-123456789abc")  # --standalone's
    assert _stable_run_dir(config) == tmp_path / "seed-digits-3f2a9c1e"
    torchrun_env.setenv("TORCHELASTIC_RUN_ID", "slurm/4711")
    assert _stable_run_dir(config.replace(data="faces", model="lenet5")) == tmp_path / "lenet5-faces-slurm_4711"


def test_errors_reach_torchrun_s_summary(torchrun_env, tmp_path):
    path = tmp_path / "error.json"
    torchrun_env.setenv("TORCHELASTIC_ERROR_FILE", str(path))
    distributed.record_error(World(1, 1, 2), TrainingError("out of memory on cuda:1"))
    failure = ProcessFailure(local_rank=1, pid=1, exitcode=1, error_file=str(path))  # torchrun's own reader
    assert failure.message["extraInfo"]["py_callstack"] == "[rank 1 of 2] out of memory on cuda:1"
    cause = failure.timestamp
    distributed.record_error(World(0, 0, 2), distributed.LostPeerError("lost contact"))
    assert ProcessFailure(local_rank=0, pid=2, exitcode=1, error_file=str(path)).timestamp > cause
    distributed.record_error(World(0, 0, 2), KeyError("x"), "Traceback ...")
    assert json.loads(path.read_text())["message"]["message"] == "[rank 0 of 2] KeyError: 'x'"


def test_gloo_s_errors_become_one_line():
    gloo = RuntimeError("[/__w/pytorch/third_party/gloo/gloo/transport/tcp/pair.cc:561] Connection closed by peer "
                        "[127.0.0.1]:47804. This is typically caused by a remote worker crashing. GLHF!")  # fmt: skip
    assert distributed._lost_peer(gloo) and not distributed._lost_peer(RuntimeError("shape mismatch"))
    assert distributed._first_line(gloo) == "Connection closed by peer [127.0.0.1]:47804"


@pytest.fixture
def one_process_group():
    """A real gloo process group of one process (what torchrun --nproc-per-node 1 would need)."""
    dist.init_process_group("gloo", store=dist.HashStore(), rank=0, world_size=1)
    yield World(0, 0, 1)
    dist.destroy_process_group()


def test_collectives_on_a_real_process_group(one_process_group):
    assert distributed.current() == distributed.SINGLE  # one process: nothing to keep in step
    assert bool(distributed.any_rank(torch.tensor(True))) and not bool(distributed.any_rank(torch.tensor(False)))
    total, count = distributed.sum_over_ranks(torch.tensor(2.5), torch.tensor(7))
    assert (float(total), float(count)) == (2.5, 7.0)
    distributed.check_same_length(9, one_process_group)
    torch.manual_seed(0)
    model = nn.Sequential(nn.Flatten(), nn.Linear(4, 3))
    x, y = torch.randn(10, 1, 2, 2), torch.randint(0, 3, (10,))
    loss = nn.functional.cross_entropy
    expected = evaluate_tensors(model, x, y, loss, {"accuracy": 1, "top2": 2})
    assert distributed.evaluate_shards(model, x, y, loss, {"accuracy": 1, "top2": 2}, 4) == pytest.approx(expected)


def test_the_ddp_wrapper_is_rebuilt_when_layers_are_unfrozen(one_process_group):
    model = nn.Sequential(nn.Linear(4, 4), nn.ReLU(), nn.Linear(4, 2))
    replicas = distributed.Replicas(model, torch.device("cpu"))
    for p in model[0].parameters():
        p.requires_grad_(False)  # fine-tuning's frozen body
    frozen = replicas.forward()
    assert isinstance(frozen, nn.parallel.DistributedDataParallel) and replicas.forward() is frozen
    for p in model[0].parameters():
        p.requires_grad_(True)
    unfrozen = replicas.forward()
    assert unfrozen is not frozen
    unfrozen(torch.randn(3, 4)).sum().backward()
    assert all(p.grad is not None for p in model.parameters())


def test_train_help_says_the_batch_is_global(capsys):
    from cnnkit.cli import build_parser

    with pytest.raises(SystemExit):
        build_parser().parse_args(["train", "--help"])
    text = " ".join(capsys.readouterr().out.split())
    assert "torchrun --nproc-per-node N -m cnnkit train" in text
    assert "under torchrun the global batch, split evenly over the processes" in text
    assert "never scaled by the number of processes" in text and "--sync-bn" in text and "--dist-timeout" in text
