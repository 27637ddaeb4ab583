"""The batcher: concurrent jobs share forward passes, each gets its own rows back, errors reach everyone."""

from __future__ import annotations

import asyncio
import threading

import pytest
import torch

from cnnkit.serve.batching import Batcher, BatcherStopped


class Recorder:
    """A forward pass that doubles its input and records each batch size; can be held shut."""

    def __init__(self) -> None:
        self.sizes: list[int] = []
        self.gate = threading.Event()
        self.gate.set()
        self.entered = threading.Event()  # set once a forward pass has begun

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        self.entered.set()
        self.gate.wait(10)
        self.sizes.append(len(x))
        return x * 2


def run(coro):
    return asyncio.run(coro)


def test_concurrent_jobs_share_a_batch_and_get_their_own_rows():
    forward = Recorder()

    async def scenario():
        batcher = Batcher(forward, max_batch=8, wait_ms=50, pending=lambda: 5)
        batcher.start()
        try:
            forward.gate.clear()  # hold the first job so the others queue behind it
            jobs = [torch.full((n, 1, 2, 2), float(i)) for i, n in enumerate([1, 2, 1, 3, 1, 1])]
            first = asyncio.ensure_future(batcher.submit(jobs[0]))
            # Wait for the first job's forward pass to begin (its window closed), not for a fixed
            # time: on a loaded machine a sleep as long as the window lets the others join it.
            assert await asyncio.to_thread(forward.entered.wait, 10)
            rest = [asyncio.ensure_future(batcher.submit(x)) for x in jobs[1:]]
            await asyncio.sleep(0.05)  # let them reach the queue behind the held pass
            forward.gate.set()
            results = await asyncio.gather(first, *rest)
        finally:
            batcher.stop()
        return jobs, results

    jobs, results = run(scenario())
    for x, result in zip(jobs, results):
        assert torch.equal(result.outputs, x * 2)  # each job's own rows, in order
    assert forward.sizes == [1, 8]  # the held job alone, then everything that queued meanwhile, up to max_batch
    assert results[1].batch_size == 8


def test_a_lone_request_does_not_wait_for_the_window():
    forward = Recorder()

    async def scenario():
        batcher = Batcher(forward, max_batch=32, wait_ms=10_000, pending=lambda: 0)
        batcher.start()
        try:
            return await asyncio.wait_for(batcher.submit(torch.ones(1, 1, 2, 2)), timeout=5)
        finally:
            batcher.stop()

    assert run(scenario()).batch_size == 1  # answered at once although the window is 10 s


def test_a_job_larger_than_max_batch_runs_alone_and_errors_reach_every_caller():
    calls: list[int] = []

    def forward(x: torch.Tensor) -> torch.Tensor:
        calls.append(len(x))
        if len(x) == 3:
            raise ValueError("boom")
        return x

    async def scenario():
        batcher = Batcher(forward, max_batch=4, wait_ms=0)
        batcher.start()
        try:
            big = await batcher.submit(torch.zeros(10, 1, 1, 1))
            with pytest.raises(ValueError, match="boom"):
                await batcher.submit(torch.zeros(3, 1, 1, 1))
            assert await batcher.call(lambda: "exclusive") == "exclusive"
        finally:
            batcher.stop()
        with pytest.raises(BatcherStopped):
            await batcher.submit(torch.zeros(1, 1, 1, 1))
        return big

    assert run(scenario()).outputs.shape == (10, 1, 1, 1)
    assert calls == [10, 3]
