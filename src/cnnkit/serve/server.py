"""Running the app under uvicorn: one process, or ``workers`` processes sharing the port.

SIGTERM (or Ctrl+C) stops accepting connections, lets the requests in flight finish (up to
``drain_timeout_s``), stops the model thread and exits 0.
"""

from __future__ import annotations

import json
import os
import signal
import sys
from dataclasses import replace

import uvicorn
from fastapi import FastAPI

from cnnkit.errors import CnnkitError
from cnnkit.serve.config import ServeConfig

__all__ = ["ENV_SPEC", "app_from_env", "run_server"]

ENV_SPEC = "CNNKIT_SERVE_SPEC"  # how worker processes learn the model and settings


def app_from_env() -> FastAPI:
    """The app factory each worker process calls (``--workers`` > 1)."""
    from cnnkit.serve.app import create_app

    spec = json.loads(os.environ[ENV_SPEC])
    return create_app(spec["model"], ServeConfig.from_dict(spec["config"]))


def _threads_per_worker(config: ServeConfig) -> int:
    """Torch threads per worker: its share of the cores, less one for its event loop and decoding.

    Oversubscribed intra-op threads are the worst case for serving: a forward pass waits at
    every operator for its slowest thread, and a thread that has lost its core to the event
    loop (or to another process) turns a 1 ms pass into tens of ms (benchmarks/RESULTS.md).
    """
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)
    return config.threads or max(1, cores // config.workers - 1)


def run_server(model: str | os.PathLike, config: ServeConfig | None = None) -> None:
    """Serve ``model`` (a model file or run folder) until SIGTERM or Ctrl+C."""
    config = config or ServeConfig()
    config = replace(config, threads=_threads_per_worker(config))
    options = {
        "host": config.host,
        "port": config.port,
        "access_log": config.access_log,
        "timeout_graceful_shutdown": config.drain_timeout_s,
        "lifespan": "on",
        "log_level": "info",
    }
    if config.workers > 1:
        from cnnkit.modelfile import read_metadata
        from cnnkit.runs import resolve_model_path

        path = resolve_model_path(model)
        read_metadata(path)  # a bad model file is one clear error here, not one per worker
        os.environ[ENV_SPEC] = json.dumps({"model": str(path.resolve()), "config": config.to_dict()})
        uvicorn.run("cnnkit.serve.server:app_from_env", factory=True, workers=config.workers, **options)
        return

    from cnnkit.serve.app import create_app

    app = create_app(model, config)  # loads the model: a bad file fails here, before binding
    server = uvicorn.Server(uvicorn.Config(app, **options))
    # uvicorn re-raises the signal that stopped it once it has drained; with a handler of
    # ours in place that is a no-op and the process exits 0 instead of dying by SIGTERM.
    previous = signal.signal(signal.SIGTERM, lambda signum, frame: None)
    try:
        server.run()
    finally:
        signal.signal(signal.SIGTERM, previous)
    if not server.started:
        raise CnnkitError(f"the server did not start on {config.host}:{config.port} (see the log above)")
    print("cnnkit serve: stopped", file=sys.stderr)
