"""``GET /metrics``: the server's counters in Prometheus' text format, with prometheus-client.

- ``cnnkit_http_requests_total{route, method, status}``: requests answered, by route template.
- ``cnnkit_http_request_duration_seconds{route}``: time from a request's arrival to its answer's start.
- ``cnnkit_http_requests_in_flight``: requests being handled now (the scrape itself not counted).
- ``cnnkit_batch_size``: images per forward pass of the batcher (:mod:`cnnkit.serve.batching`).
- ``cnnkit_model_info{model, backend, runtime}``: what is served (always 1).

Under ``cnnkit serve --workers N`` the workers are separate processes, and any one of them answers
a scrape: prometheus-client's multiprocess mode (``PROMETHEUS_MULTIPROC_DIR``, set up by
:func:`multiprocess_dir` in the parent before the workers start) keeps each worker's values in a
file there and sums them all at each scrape, so the counts are the server's, not one worker's.
"""

from __future__ import annotations

import contextlib
import functools
import os
import shutil
import tempfile
import time
from collections.abc import Iterator, Sequence
from pathlib import Path

from prometheus_client import (
    CONTENT_TYPE_LATEST,
    CollectorRegistry,
    Counter,
    Gauge,
    Histogram,
    Info,
    generate_latest,
    multiprocess,
    values,
)
from starlette.routing import BaseRoute, Match
from starlette.types import ASGIApp, Message, Receive, Scope, Send

__all__ = ["CONTENT_TYPE_LATEST", "ENV_DIR", "MetricsMiddleware", "ServeMetrics", "multiprocess_dir"]

ENV_DIR = "PROMETHEUS_MULTIPROC_DIR"  # prometheus-client's own name for it
METRICS_PATH = "/metrics"
OTHER_ROUTE = "<other>"  # paths no route matches (404s): one label value, however many paths are tried
LATENCY_BUCKETS = (0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0)


def _multiprocess() -> bool:
    """Whether prometheus-client keeps values in files: it decided when it was imported, from ``ENV_DIR``."""
    return bool(getattr(values.ValueClass, "_multiprocess", False))


class ServeMetrics:
    """The metrics of one server process; :meth:`render` gives the whole server's (every worker's) text.

    Args:
        model: the served model's name.
        backend: what runs its forward passes (``onnx``, ``torch``).
        runtime: the runtime in words, as the model card says it.
        max_batch: the batcher's largest batch (the batch-size buckets go up to it).
    """

    def __init__(self, model: str, backend: str, runtime: str, max_batch: int) -> None:
        # A registry per app, not prometheus-client's global one: several apps in one process
        # (tests, a host embedding two models) each count their own requests.
        self.registry = CollectorRegistry()
        self.requests = Counter(
            "cnnkit_http_requests", "HTTP requests answered", ["route", "method", "status"], registry=self.registry
        )
        self.latency = Histogram(
            "cnnkit_http_request_duration_seconds", "Seconds from a request's arrival to the start of its answer",
            ["route"], buckets=LATENCY_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.in_flight = Gauge(
            "cnnkit_http_requests_in_flight", "HTTP requests being handled (scrapes of /metrics not counted)",
            registry=self.registry, multiprocess_mode="livesum",
        )  # fmt: skip
        buckets = sorted({1, *(2**i for i in range(1, max_batch.bit_length() + 1) if 2**i < max_batch), max_batch})
        self.batch_size = Histogram(
            "cnnkit_batch_size", "Images per forward pass of the batcher", buckets=buckets,
            registry=self.registry,
        )  # fmt: skip
        self.info = Info("cnnkit_model", "The served model and what runs it", registry=self.registry)
        self.info.info({"model": model, "backend": backend, "runtime": runtime})
        self._scrape_registry = self.registry
        if _multiprocess():
            # Counters, histograms and the gauge live in the workers' files; the info metric (the same
            # in every worker, and not kept in files by prometheus-client) comes from this one.
            self._scrape_registry = CollectorRegistry()
            multiprocess.MultiProcessCollector(self._scrape_registry)
            self._scrape_registry.register(self.info)

    def render(self) -> bytes:
        """The scrape: every metric in Prometheus' text format (``CONTENT_TYPE_LATEST``)."""
        return generate_latest(self._scrape_registry)

    def close(self) -> None:
        """At this process' exit: its live gauge (requests in flight) leaves the server's sum."""
        if _multiprocess():
            multiprocess.mark_process_dead(os.getpid())


class MetricsMiddleware:
    """Count every HTTP request by route template and status, time it, and keep the in-flight gauge.

    A request is counted when its answer starts, before the client can have read any of it, so a
    scrape made after an answer arrived always includes it (in every worker's sum too).

    Args:
        app: the ASGI app inside.
        metrics: where to count.
        routes: the app's routes (``app.routes``, filled in later), to label a request by its route's template.
    """

    def __init__(self, app: ASGIApp, metrics: ServeMetrics, routes: Sequence[BaseRoute]) -> None:
        self.app = app
        self.metrics = metrics
        self.routes = routes
        self._route_of = functools.lru_cache(maxsize=1024)(self._match)  # the paths served are few

    def _match(self, path: str, method: str) -> str:
        """The template of the route ``path`` goes to, for a request the router never saw (refused before it)."""
        scope = {"type": "http", "path": path, "method": method, "root_path": ""}
        partial = None
        for route in self.routes:
            match, child = route.matches(scope)
            template = getattr(route, "path", None) or getattr(child.get("route"), "path", None) or path
            if match is Match.FULL:
                return template
            if match is Match.PARTIAL and partial is None:
                partial = template  # e.g. GET on a POST route: its 405 is still that route's
        return partial or OTHER_ROUTE

    def _route(self, scope: Scope) -> str:
        """The request's route template: the one the router chose, else the one it would have."""
        chosen = getattr(scope.get("route"), "path", None)  # set by the router (an included one's too)
        return chosen if isinstance(chosen, str) else self._route_of(scope["path"], scope["method"])

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        metrics = self.metrics
        method = scope["method"]
        started = time.perf_counter()
        answered = False
        flying = scope["path"] != METRICS_PATH  # a scrape does not count itself in flight
        if flying:
            metrics.in_flight.inc()

        def answer(status: int) -> None:
            nonlocal answered
            if not answered:
                answered = True
                route = self._route(scope)
                metrics.requests.labels(route, method, str(status)).inc()
                metrics.latency.labels(route).observe(time.perf_counter() - started)

        def land() -> None:
            nonlocal flying
            if flying:
                flying = False
                metrics.in_flight.dec()

        async def counted_send(message: Message) -> None:
            if message["type"] == "http.response.start":
                answer(message["status"])
            elif message["type"] == "http.response.body" and not message.get("more_body", False):
                land()  # its last bytes are on their way
            await send(message)

        try:
            await self.app(scope, receive, counted_send)
        finally:
            answer(500)  # only if nothing was answered: an error the handler outside this middleware answers 500
            land()


@contextlib.contextmanager
def multiprocess_dir() -> Iterator[Path]:
    """Set up ``PROMETHEUS_MULTIPROC_DIR`` for the workers of one ``cnnkit serve --workers N`` run.

    If the environment already names one (a deployment that keeps it on a RAM disk, say), it is
    used, and its stale ``*.db`` files (from an earlier run: they would add old counts to the new
    server's) are removed at start, as prometheus-client asks; nothing else in it is touched.
    Otherwise a temporary folder is made, and removed at the end.
    """
    given = os.environ.get(ENV_DIR)
    if given:
        path = Path(given)
        path.mkdir(parents=True, exist_ok=True)
        for stale in path.glob("*.db"):
            stale.unlink(missing_ok=True)
        yield path
        return
    path = Path(tempfile.mkdtemp(prefix="cnnkit-metrics-"))
    os.environ[ENV_DIR] = str(path)
    try:
        yield path
    finally:
        os.environ.pop(ENV_DIR, None)
        shutil.rmtree(path, ignore_errors=True)
