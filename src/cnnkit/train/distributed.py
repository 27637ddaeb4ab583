"""Data-parallel training under torchrun: one process per GPU (or CPU slot), on one machine or many.

torchrun starts the processes and tells each its place through the environment (``RANK``,
``LOCAL_RANK``, ``WORLD_SIZE``, ``MASTER_ADDR``/``MASTER_PORT``; for elastic runs
``TORCHELASTIC_RESTART_COUNT`` and ``TORCHELASTIC_RUN_ID``). :func:`session` joins the
process group that describes (NCCL on GPUs, gloo on CPUs) and picks this process's device.
The rest is what the engine needs to keep the processes in step:

- :class:`World` says who this process is; rank 0 writes every file;
- :func:`steps_per_epoch` and :func:`shard_rows`: each global batch is split across ranks;
- :class:`Replicas` wraps the model in ``DistributedDataParallel``, and wraps it anew when
  fine-tuning unfreezes layers (DDP only synchronizes what was trainable when it was built);
- :func:`any_rank`, :func:`sum_over_ranks`, :func:`evaluate_shards`: the whole job's numbers;
- :func:`follow_rank_zero`: decisions taken from one rank's clock (stop now, a shortened
  schedule) become everyone's.

Outside torchrun (no ``RANK`` in the environment) none of this does anything.
"""

from __future__ import annotations

import gc
import hashlib
import json
import os
import re
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from datetime import timedelta
from typing import Any

import torch
import torch.distributed as dist
from torch import nn

from cnnkit.errors import CnnkitError, ConfigError, TrainingError
from cnnkit.evaluate import evaluate_tensors
from cnnkit.runtime import resolve_device

__all__ = [
    "DEFAULT_TIMEOUT",
    "LostPeerError",
    "SINGLE",
    "Replicas",
    "World",
    "any_rank",
    "broadcast_object",
    "check_same_length",
    "comm_device",
    "current",
    "evaluate_shards",
    "follow_rank_zero",
    "launched_by_torchrun",
    "max_restarts",
    "record_error",
    "restart_count",
    "run_id",
    "seed_epoch",
    "session",
    "shard_rows",
    "steps_per_epoch",
    "sum_over_ranks",
]

DEFAULT_TIMEOUT = 600.0  # seconds a collective may wait for a peer before the job is ended (NCCL's default)


@dataclass(frozen=True)
class World:
    """This process's place in the job: ``rank`` of ``size`` processes, ``local_rank`` on its machine."""

    rank: int = 0
    local_rank: int = 0
    size: int = 1

    @property
    def distributed(self) -> bool:
        """Whether there are other processes to keep in step with."""
        return self.size > 1

    @property
    def is_main(self) -> bool:
        """Rank 0: the one process that prints and writes files."""
        return self.rank == 0

    def __str__(self) -> str:
        return f"rank {self.rank} of {self.size}"


SINGLE = World()


class LostPeerError(TrainingError):
    """The process group failed here because another process died or hung (whose own error is the cause)."""


# -- torchrun's environment --------------------------------------------------------------------------
def launched_by_torchrun() -> bool:
    """Whether torchrun (or another launcher speaking its protocol) started this process."""
    return all(name in os.environ for name in ("RANK", "LOCAL_RANK", "WORLD_SIZE"))


def restart_count() -> int:
    """How many times torchrun has restarted the job's processes (0 on the first start)."""
    return int(os.environ.get("TORCHELASTIC_RESTART_COUNT", "0") or 0)


def max_restarts() -> int:
    """torchrun's ``--max-restarts`` (0 outside torchrun)."""
    return int(os.environ.get("TORCHELASTIC_MAX_RESTARTS", "0") or 0)


def run_id() -> str | None:
    """The job's rendezvous id (``--rdzv-id``, or a random one with ``--standalone``); None when unset."""
    value = os.environ.get("TORCHELASTIC_RUN_ID", "")
    return None if value in ("", "none") else value


def current() -> World:
    """The process group this process is in (the single-process world when there is none)."""
    if dist.is_available() and dist.is_initialized() and dist.get_world_size() > 1:
        return World(dist.get_rank(), int(os.environ.get("LOCAL_RANK", "0")), dist.get_world_size())
    return SINGLE


def _device_and_backend(requested: str, local_rank: int) -> tuple[torch.device, str]:
    """GPU ``cuda:LOCAL_RANK`` with NCCL, or the CPU with gloo."""
    device = resolve_device(requested)
    if device.type == "cuda":
        count = torch.cuda.device_count()
        if local_rank >= count:
            raise ConfigError(f"torchrun started a process with LOCAL_RANK {local_rank} but this machine has "
                              f"{count} GPU(s): use --nproc-per-node {count} or fewer")  # fmt: skip
        device = torch.device("cuda", local_rank)
        torch.cuda.set_device(device)
        return device, "nccl"
    if device.type == "cpu":
        return device, "gloo"
    raise ConfigError(f"torchrun training runs on CUDA GPUs (NCCL) or CPUs (gloo), not {device.type}: use --device cpu")


@contextmanager
def session(device: str = "auto", timeout: float = DEFAULT_TIMEOUT) -> Iterator[tuple[World, torch.device]]:
    """Join torchrun's process group for the block (outside torchrun: the single world); leave it after.

    A collective that waits longer than ``timeout`` seconds for a peer (a hung or dead process)
    fails, and comes out of the block as a one-line :class:`TrainingError`, as does a lost peer.
    A group that already exists (made by the caller) is used and left alone.
    """
    if not launched_by_torchrun():
        yield SINGLE, resolve_device(device)
        return
    local_rank, size = int(os.environ["LOCAL_RANK"]), int(os.environ["WORLD_SIZE"])
    device, backend = _device_and_backend(device, local_rank)
    owned = size > 1 and not dist.is_initialized()
    if owned:
        _init_process_group(backend, device, timedelta(seconds=timeout))
    world = World(int(os.environ["RANK"]), local_rank, size)
    try:
        yield world, device
    except RuntimeError as e:
        if not _lost_peer(e):
            raise
        raise LostPeerError(
            f"lost contact with the other processes ({_first_line(e)}). Another process failed or hung (its own "
            f"error is above, or in torchrun's summary); every process stops, and a run's last checkpoint stays for "
            f"--resume or torchrun --max-restarts"
        ) from None
    finally:
        if owned:
            # DDP's wrapper sits in reference cycles that keep its reducer, and with it this group's gloo
            # threads, alive until the cyclic collector runs: at interpreter exit that aborted a process
            # ("terminate called without an active exception") in 3 of 43 runs. Free them now.
            gc.collect()
            dist.destroy_process_group()


def _init_process_group(backend: str, device: torch.device, timeout: timedelta) -> None:
    """``init_process_group`` from torchrun's environment, in a namespace of its own for each restart.

    torchrun keeps one key-value store for the whole job, across restarts; a restarted group
    reading the keys its predecessor left (gloo's peer addresses, NCCL's ids) would connect to
    dead processes. A prefix per restart keeps each generation's keys apart.
    """
    store, rank, size = next(dist.rendezvous("env://", timeout=timeout))  # torchrun's store (or rank 0's)
    store = dist.PrefixStore(f"cnnkit/restart-{restart_count()}", store)
    dist.init_process_group(backend, store=store, rank=rank, world_size=size, timeout=timeout,
                            device_id=device if device.type == "cuda" else None)  # fmt: skip


def _lost_peer(error: BaseException) -> bool:
    """Whether ``error`` is the process group failing (gloo and NCCL raise plain RuntimeErrors too)."""
    text = str(error)
    return isinstance(error, dist.DistError) or any(
        word in text for word in ("gloo", "NCCL", "Connection reset", "Connection closed", "Timed out", "timed out")
    )


def _first_line(error: BaseException) -> str:
    """``Connection closed by peer [10.0.0.2]:4711`` out of gloo's ``[.../pair.cc:561] Connection ... GLHF!``."""
    line = (str(error).strip().splitlines() or [type(error).__name__])[0]
    line = re.sub(r"^\[[^\]]*\]\s*", "", line)  # the C++ source location
    return line.split(". ")[0][:200]


def record_error(world: World, error: BaseException, details: str | None = None) -> None:
    """Leave ``error`` where torchrun reads a failed worker's error, so its summary names the cause.

    ``details`` (e.g. a traceback) is what torchrun prints; by default the message. torchrun
    calls the earliest error the root cause (to the second): a lost peer is a consequence of
    another process's failure, so it is dated a second later and a real cause wins the tie.
    """
    path = os.environ.get("TORCHELASTIC_ERROR_FILE")
    if not path or not launched_by_torchrun():
        return
    message = f"[{world}] {error}" if isinstance(error, CnnkitError) else f"[{world}] {type(error).__name__}: {error}"
    when = int(time.time()) + isinstance(error, LostPeerError)
    data = {"message": {"message": message, "extraInfo": {"py_callstack": details or message, "timestamp": str(when)}}}
    try:
        with open(path, "w") as f:  # torchrun's own file in its temporary folder, never the run folder
            json.dump(data, f)
    except OSError as e:
        print(f"cnnkit: could not write torchrun's error file {path}: {e}", file=sys.stderr)


# -- splitting the data ------------------------------------------------------------------------------
def steps_per_epoch(images: int, batch_size: int, world_size: int = 1) -> int:
    """Steps in an epoch of ``images`` in global batches of ``batch_size``, split over ``world_size`` ranks.

    Every rank takes the same number of images from each batch, so a last batch of ``r``
    images keeps ``r - r % world_size`` of them (none when ``r < world_size``). One process:
    ``ceil(images / batch_size)``.
    """
    full, rest = divmod(images, batch_size)
    return full + (rest >= world_size)


def shard_rows(tensor: torch.Tensor, world: World) -> torch.Tensor:
    """This rank's contiguous share of the rows (for validation: every row is evaluated exactly once)."""
    return tensor.tensor_split(world.size)[world.rank] if world.distributed else tensor


def seed_epoch(generator: torch.Generator | None, epoch: int, world: World) -> None:
    """Seed this rank's augmentation and dropout for ``epoch`` from the data order's state and the rank.

    Ranks must not draw the same random crops for their shards; seeding from the
    (checkpointed) data-order generator makes a resumed run draw what an uninterrupted one would.
    """
    state = generator.get_state().numpy().tobytes() if generator is not None else str(torch.initial_seed()).encode()
    digest = hashlib.sha256(state + f"/{epoch}/{world.rank}".encode()).digest()
    torch.manual_seed(int.from_bytes(digest[:8], "little") >> 1)


# -- keeping the replicas in step --------------------------------------------------------------------
class Replicas:
    """The model wrapped in ``DistributedDataParallel``, rebuilt whenever the trainable parameters change.

    DDP registers gradient hooks only on parameters that require gradients when it is built;
    fine-tuning unfreezes the body at an epoch boundary, so the wrapper is built again then
    (DDP's constructor also re-broadcasts rank 0's weights, which are equal on every rank).
    """

    def __init__(self, model: nn.Module, device: torch.device, *, compile: bool = False) -> None:
        self.model, self.device, self.compile = model, device, compile
        self._trainable: tuple[bool, ...] | None = None
        self._forward: Callable[[torch.Tensor], torch.Tensor] | None = None

    def forward(self) -> Callable[[torch.Tensor], torch.Tensor]:
        """The module to run the training forward pass through (call at the start of each epoch)."""
        trainable = tuple(p.requires_grad for p in self.model.parameters())
        if trainable != self._trainable:
            self._forward = None  # drop the old wrapper (and its gradient hooks) before building a new one
            ddp = nn.parallel.DistributedDataParallel(
                self.model, device_ids=[self.device.index] if self.device.type == "cuda" else None
            )
            self._forward = torch.compile(ddp) if self.compile else ddp
            self._trainable = trainable
        return self._forward


def comm_device() -> torch.device:
    """Where collective buffers live: the current GPU for NCCL, the CPU for gloo."""
    if dist.get_backend() == "nccl":
        return torch.device("cuda", torch.cuda.current_device())
    return torch.device("cpu")


def any_rank(flag: torch.Tensor) -> torch.Tensor:
    """True on every rank when ``flag`` (a 0-d bool tensor on the device) is true on any: no host sync."""
    flag = flag.to(torch.int32)
    dist.all_reduce(flag, op=dist.ReduceOp.MAX)
    return flag.bool()


def sum_over_ranks(*tensors: torch.Tensor) -> list[torch.Tensor]:
    """Each tensor (0-d, any dtype) summed over all ranks, as float64 tensors on the device."""
    total = torch.stack([t.detach().to(torch.float64) for t in tensors])
    dist.all_reduce(total)
    return list(total.unbind())


def broadcast_object(obj: Any, world: World) -> Any:
    """Rank 0's ``obj`` (anything picklable, e.g. the run folder's name), on every rank."""
    if not world.distributed:
        return obj
    holder = [obj]
    dist.broadcast_object_list(holder, src=0, device=comm_device())
    return holder[0]


def check_same_length(steps: int, world: World) -> None:
    """Every rank must take the same number of steps per epoch, or one would wait for the others forever."""
    counts = torch.tensor([steps, -steps], dtype=torch.int64, device=comm_device())
    dist.all_reduce(counts, op=dist.ReduceOp.MAX)
    most, fewest = int(counts[0]), -int(counts[1])
    if most != fewest:
        raise ConfigError(
            f"the processes have between {fewest} and {most} batches per epoch: each needs the same number; "
            f"give a DataLoader a DistributedSampler(..., drop_last=True)"
        )


@torch.inference_mode()
def evaluate_shards(model: nn.Module, x: torch.Tensor, y: torch.Tensor, loss_fn: Callable, metrics: dict[str, int],
                    batch_size: int = 256) -> dict[str, float]:  # fmt: skip
    """:func:`~cnnkit.evaluate.evaluate_tensors` over each rank's shard ``(x, y)``: the whole set's means."""
    n = len(y)
    local = evaluate_tensors(model, x, y, loss_fn, metrics, batch_size) if n else dict.fromkeys(["loss", *metrics], 0.0)
    # Sums and counts, added up over ranks, then divided: the mean over every image.
    counts = [round(local[name] * n) for name in metrics]  # accuracy * n is a whole number of hits
    totals = torch.tensor([n, local["loss"] * n, *counts], dtype=torch.float64, device=comm_device())
    dist.all_reduce(totals)
    images = max(float(totals[0]), 1.0)
    means = {name: float(totals[2 + i]) / images for i, name in enumerate(metrics)}
    return {"loss": float(totals[1]) / images, **means}


def follow_rank_zero(model: nn.Module, scheduler: Any, world: World) -> None:
    """Every rank takes rank 0's ``stop_training`` and learning-rate schedule (once per epoch).

    Rank 0 alone runs the callbacks that decide from the clock (a time budget) or write files;
    its decisions must be everyone's, or one rank would stop while the others wait for it.
    """
    state = broadcast_object([bool(getattr(model, "stop_training", False)),
                              scheduler.state_dict() if scheduler is not None else None], world)  # fmt: skip
    model.stop_training = state[0]
    if scheduler is not None and not world.is_main:
        scheduler.load_state_dict(state[1])
