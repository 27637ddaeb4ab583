"""Dynamic batching: concurrent requests share one forward pass on a single model thread.

Every request puts its images on a queue and awaits a future. One worker thread owns the
model: it takes the first job, then keeps collecting queued jobs until the batch holds
``max_batch`` images or the wait window closes, runs one forward pass and hands each job
its rows. The window is only waited out while more requests are on their way (the
``pending`` callable counts the requests being read and decoded): a lone request runs at
once, so batching costs nothing at one client and pays off as load grows.

A lone one-image request to a fast model (its last one-image pass under ``inline_ms``) runs on
the caller's thread instead, when the model thread has nothing in hand: the two thread hand-offs
cost ~180 us, more than such a model's forward pass (~100 us for the article's CNN in ONNX
Runtime), and nothing else can be waiting for the event loop that long. A lock makes the
model thread and such a caller take turns, so the model is still never run twice at once.

A single model thread also means no two forward passes compete for the same cores, and
work that must have the model to itself (Grad-CAM hooks) runs there too, between batches.
"""

from __future__ import annotations

import asyncio
import contextlib
import queue
import threading
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["BatchResult", "BatchStats", "Batcher", "BatcherStopped"]


class BatcherStopped(RuntimeError):
    """The batcher was stopped; no more work is accepted."""


@dataclass(frozen=True)
class BatchResult:
    """One job's share of a forward pass."""

    outputs: torch.Tensor  # (n, ...) rows for this job's n images
    batch_size: int  # images in the forward pass this job shared
    model_ms: float  # time of that forward pass


@dataclass
class _Job:
    future: asyncio.Future
    loop: asyncio.AbstractEventLoop
    images: torch.Tensor | None = None  # (n, C, H, W)
    call: Callable[[], Any] | None = None

    @property
    def size(self) -> int:
        return 0 if self.images is None else len(self.images)


_STOP = object()


@dataclass
class BatchStats:
    """What the batcher has done since it started: how many forward passes, of how many images."""

    batches: int = 0
    images: int = 0
    largest: int = 0
    sizes: dict[int, int] = field(default_factory=dict)  # batch size -> how many batches had it

    def to_dict(self) -> dict[str, float]:
        mean = self.images / self.batches if self.batches else 0.0
        return {"batches": self.batches, "images": self.images, "mean_batch": round(mean, 2), "largest": self.largest}


class Batcher:
    """Run ``forward`` on batches of images gathered from concurrent callers.

    Args:
        forward: ``(B, C, H, W)`` tensor -> ``(B, ...)`` tensor; called on the worker thread only.
        max_batch: most images in one forward pass (a single larger job runs alone).
        wait_ms: longest wait for more jobs once a batch has started, while ``pending() > 0``.
        pending: how many requests are on their way to ``submit`` (None: never wait, take what is queued).
        inline_ms: a lone one-image request runs on the caller's thread while the model's last one-image
            pass took less than this (0: never).
    """

    def __init__(
        self,
        forward: Callable[[torch.Tensor], torch.Tensor],
        *,
        max_batch: int = 32,
        wait_ms: float = 2.0,
        pending: Callable[[], int] | None = None,
        inline_ms: float = 1.0,
    ) -> None:
        self._forward = forward
        self.max_batch = max_batch
        self.wait_s = wait_ms / 1000.0
        self._pending = pending
        self._queue: queue.SimpleQueue = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stopped = False
        self.inline_s = inline_ms / 1000.0
        self._model_lock = threading.Lock()  # held by whoever runs the model: the model thread or a lone caller
        self._busy = False  # the model thread has a job in hand (batching it, or running it)
        self._hopeful = 0  # callers deciding whether to run their image here
        self._single_s: float | None = None  # how long the last one-image forward pass took
        self.stats = BatchStats()
        self.observe: Callable[[int], None] | None = None  # told each forward pass' size (the /metrics histogram)

    # -- callers (the event loop) -------------------------------------------------
    async def submit(self, images: torch.Tensor) -> BatchResult:
        """Run ``images`` ``(n, C, H, W)`` through ``forward`` as part of a batch; await their rows."""
        if self._fast_and_one(images):
            # Two turns of the event loop first, so that requests whose bytes have already reached the
            # server show themselves: one turn reads the sockets and makes their tasks, the next runs them
            # to their first wait (inside ``pending``) or to here (``_hopeful``). A small request is read,
            # decoded and submitted without ever waiting, so without this a burst of them ran here one by
            # one, each unaware of the next, and never shared a pass.
            self._hopeful += 1
            try:
                await asyncio.sleep(0)
                await asyncio.sleep(0)
                alone = self._hopeful == 1 and self._alone()
            finally:
                self._hopeful -= 1
            if alone:
                try:
                    return self._run_here(images)
                finally:
                    self._model_lock.release()
        return await self._put(images=images)

    async def call(self, fn: Callable[[], Any]) -> Any:
        """Run ``fn()`` on the model thread, alone, between batches; await its result."""
        return await self._put(call=fn)

    async def _put(self, **work: Any) -> Any:
        if self._stopped or self._thread is None:
            raise BatcherStopped("the model is not running (the server is starting or shutting down)")
        loop = asyncio.get_running_loop()
        future = loop.create_future()
        self._queue.put(_Job(future, loop, **work))
        return await future

    def _fast_and_one(self, images: torch.Tensor) -> bool:
        """Whether ``images`` is one image for a model whose last one-image pass was under ``inline_ms``."""
        return len(images) == 1 and self._single_s is not None and self._single_s < self.inline_s

    def _alone(self) -> bool:
        """Whether nothing else is waiting for the model, which is now ours (the lock taken: the caller
        releases it)."""
        quiet = not self._busy and self._queue.empty() and (self._pending is None or self._pending() <= 0)
        running = not self._stopped and self._thread is not None
        return quiet and running and self._model_lock.acquire(blocking=False)

    def _run_here(self, images: torch.Tensor) -> BatchResult:
        started = time.perf_counter()
        outputs = self._forward(images)  # (1, ...); an error is the caller's, as it would be from the thread
        self._single_s = time.perf_counter() - started
        self._count(1)
        return BatchResult(outputs, 1, self._single_s * 1000.0)

    # -- lifecycle ------------------------------------------------------------------
    def start(self) -> None:
        if self._thread is not None:
            return
        self._stopped = False
        self._thread = threading.Thread(target=self._work, name="cnnkit-model", daemon=True)
        self._thread.start()

    def stop(self, timeout: float | None = None) -> None:
        """Finish the jobs already queued, then end the worker thread."""
        if self._thread is None:
            return
        self._stopped = True
        self._queue.put(_STOP)
        self._thread.join(timeout)
        self._thread = None

    # -- the worker thread ------------------------------------------------------------
    def _work(self) -> None:
        carry: Any = None
        while True:
            self._busy = carry is not None
            job = carry if carry is not None else self._queue.get()
            self._busy, carry = True, None
            if job is _STOP:
                return
            if job.call is not None:
                self._run_call(job)
                continue
            batch, size = [job], job.size
            deadline = time.perf_counter() + self.wait_s
            while size < self.max_batch:
                nxt = self._next(deadline)
                if nxt is None:
                    break
                if nxt is _STOP or nxt.call is not None or size + nxt.size > self.max_batch:
                    carry = nxt  # runs next, after this batch
                    break
                batch.append(nxt)
                size += nxt.size
            self._busy = carry is not None  # the window has closed: a lone caller may run the model next
            self._run_batch(batch)

    def _next(self, deadline: float) -> Any:
        """The next queued job; waits for one (until ``deadline``) only while requests are on their way."""
        try:
            return self._queue.get_nowait()
        except queue.Empty:
            pass
        remaining = deadline - time.perf_counter()
        if remaining <= 0 or self._pending is None or self._pending() <= 0:
            return None
        try:
            return self._queue.get(timeout=remaining)
        except queue.Empty:
            return None

    def _run_batch(self, batch: list[_Job]) -> None:
        batch = [job for job in batch if not job.future.done()]  # skip requests that gave up (deadline)
        if not batch:
            return
        try:
            x = batch[0].images if len(batch) == 1 else torch.cat([job.images for job in batch])  # (B, C, H, W)
            with self._model_lock:  # released before the callers hear back, so the next lone one finds it free
                started = time.perf_counter()
                outputs = self._forward(x)  # (B, ...)
                elapsed = time.perf_counter() - started
                if len(x) == 1:
                    self._single_s = elapsed
                self._count(len(x))
        except Exception as e:  # handed to every waiting request, never lost
            for job in batch:
                _resolve(job, error=e)
            return
        results, start = [], 0
        for job in batch:
            results.append((job, BatchResult(outputs[start : start + job.size], len(x), elapsed * 1000.0)))
            start += job.size
        _resolve_all(results)

    def _run_call(self, job: _Job) -> None:
        if job.future.done():
            return
        try:
            with self._model_lock:
                result = job.call()
        except Exception as e:  # the caller gets it
            _resolve(job, error=e)
            return
        _resolve(job, result)

    def _count(self, size: int) -> None:
        stats = self.stats
        stats.batches += 1
        stats.images += size
        stats.largest = max(stats.largest, size)
        stats.sizes[size] = stats.sizes.get(size, 0) + 1
        if self.observe is not None:
            self.observe(size)


def _resolve(job: _Job, result: Any = None, error: BaseException | None = None) -> None:
    """Complete ``job``'s future on its event loop (futures are not thread-safe)."""

    def complete() -> None:
        if job.future.done():  # cancelled by its deadline meanwhile
            return
        if error is not None:
            job.future.set_exception(error)
        else:
            job.future.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
        job.loop.call_soon_threadsafe(complete)


def _resolve_all(results: list[tuple[_Job, Any]]) -> None:
    """Complete a batch's futures with one wake-up of each event loop, not one per job."""
    by_loop: dict[asyncio.AbstractEventLoop, list[tuple[_Job, Any]]] = {}
    for job, result in results:
        by_loop.setdefault(job.loop, []).append((job, result))

    def complete(jobs: list[tuple[_Job, Any]]) -> None:
        for job, result in jobs:
            if not job.future.done():  # not cancelled by its deadline meanwhile
                job.future.set_result(result)

    for loop, jobs in by_loop.items():
        with contextlib.suppress(RuntimeError):  # the loop closed: nobody is waiting any more
            loop.call_soon_threadsafe(complete, jobs)
