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


class Timed:
    """A forward pass that takes ``seconds``, records the thread it ran on, and notices two passes at once."""

    def __init__(self, seconds: float = 0.0) -> None:
        self.seconds, self.threads, self.running, self.overlapped = seconds, [], 0, False
        self.lock = threading.Lock()

    def __call__(self, x: torch.Tensor) -> torch.Tensor:
        with self.lock:
            self.running += 1
            self.overlapped |= self.running > 1
        threading.Event().wait(self.seconds)
        self.threads.append(threading.current_thread().name)
        with self.lock:
            self.running -= 1
        return x + 1


def test_a_lone_image_of_a_fast_model_runs_on_the_callers_thread():
    """The first pass (on the model thread) measures the model; after it, a lone image skips the two hand-offs,
    with the same answer; several images, a slow model, a request on its way, or inline_ms=0 keep the model
    thread."""
    fast, slow, off = Timed(), Timed(seconds=0.01), Timed()
    waiting = [0]

    async def scenario():
        results = {}
        for name, forward, inline_ms in (("fast", fast, 5), ("slow", slow, 5), ("off", off, 0)):
            batcher = Batcher(forward, max_batch=8, wait_ms=0, pending=lambda: waiting[0], inline_ms=inline_ms)
            batcher.start()
            try:
                results[name] = [await batcher.submit(torch.full((1, 1, 2, 2), float(i))) for i in range(3)]
                await batcher.submit(torch.zeros(2, 1, 2, 2))  # two images: batched on the model thread
                waiting[0] = 1
                await batcher.submit(torch.zeros(1, 1, 2, 2))  # another request on its way: it may join
                waiting[0] = 0
            finally:
                batcher.stop()
            assert batcher.stats.images == 3 + 2 + 1 and batcher.stats.batches == 5
        return results

    results = run(scenario())
    here = threading.current_thread().name
    assert fast.threads == ["cnnkit-model", here, here, "cnnkit-model", "cnnkit-model"]
    assert slow.threads == off.threads == ["cnnkit-model"] * 5  # 10 ms a pass, or told not to: never here
    for name in results:
        for i, result in enumerate(results[name]):
            assert torch.equal(result.outputs, torch.full((1, 1, 2, 2), i + 1.0)) and result.batch_size == 1


def test_a_caller_never_runs_the_model_while_the_model_thread_does():
    """Many concurrent callers of a fast model: some run on their thread, some on the model thread, never two
    passes at once (the batcher's lock), and every caller gets its own rows."""
    forward = Timed()

    async def one(batcher, i):
        await asyncio.sleep(0)
        return await asyncio.to_thread(lambda: asyncio.run(batcher.submit(torch.full((1, 1, 1, 1), float(i)))))

    async def scenario():
        batcher = Batcher(forward, max_batch=4, wait_ms=0, inline_ms=50)
        batcher.start()
        try:
            await batcher.submit(torch.zeros(1, 1, 1, 1))  # measured: fast
            gate = threading.Event()
            held = asyncio.ensure_future(batcher.call(lambda: gate.wait(10)))  # the model thread, busy
            await asyncio.sleep(0.05)
            answers = asyncio.ensure_future(asyncio.gather(*(one(batcher, i) for i in range(40))))
            await asyncio.sleep(0.05)
            gate.set()
            await held
            return await answers
        finally:
            batcher.stop()

    answers = run(scenario())
    assert [a.outputs.item() for a in answers] == [i + 1.0 for i in range(40)]
    assert not forward.overlapped
    assert {"cnnkit-model"} < set(forward.threads)  # the busy model thread took some; callers ran others


def test_a_burst_of_lone_images_still_shares_passes():
    """Requests that reach the server together each look alone when they submit (a small one is read and
    decoded without waiting): they must find each other and go to the model thread to be batched."""
    forward = Timed()

    async def scenario():
        batcher = Batcher(forward, max_batch=32, wait_ms=0, pending=lambda: 0, inline_ms=50)
        batcher.start()
        try:
            await batcher.submit(torch.zeros(1, 1, 1, 1))  # measured: fast
            burst = [batcher.submit(torch.full((1, 1, 1, 1), float(i))) for i in range(16)]
            return await asyncio.gather(*burst), batcher.stats
        finally:
            batcher.stop()

    answers, stats = run(scenario())
    assert [a.outputs.item() for a in answers] == [i + 1.0 for i in range(16)]
    assert stats.largest > 1 and max(a.batch_size for a in answers) > 1
    assert set(forward.threads) == {"cnnkit-model"}  # none ran on the event loop
