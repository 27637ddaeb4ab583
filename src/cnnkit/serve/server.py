"""Running the app under uvicorn: one process, or ``workers`` processes sharing the port (two on a multi-core CPU).

SIGTERM (or Ctrl+C) stops accepting connections, lets the requests in flight finish (up to
``drain_timeout_s``), stops the model thread and exits 0.
"""

from __future__ import annotations

import errno
import importlib.util
import json
import os
import signal
import socket
import sys
import warnings
from dataclasses import replace

import uvicorn
from fastapi import FastAPI

from cnnkit.errors import CnnkitError, ConfigError
from cnnkit.onnx_predictor import cpu_onnx_predictor, surely_cpu_only
from cnnkit.serve.config import ServeConfig, resolve_served_model

__all__ = ["ENV_SPEC", "app_from_env", "check_port", "resolve_workers", "run_server", "server_stack"]

ENV_SPEC = "CNNKIT_SERVE_SPEC"  # how worker processes learn the model and settings


def app_from_env() -> FastAPI:
    """The app factory each worker process calls (``--workers`` > 1)."""
    from cnnkit.serve.app import create_app

    spec = json.loads(os.environ[ENV_SPEC])
    return create_app(spec["model"], ServeConfig.from_dict(spec["config"]))


def _cores() -> int:
    return len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 1)


def resolve_workers(config: ServeConfig) -> int:
    """How many server processes: ``config.workers``, else 2 on a CPU with at least 2 cores, else 1.

    One process answers every request under one GIL: its event loop (HTTP, the multipart form,
    decoding the upload, the JSON) gets at most one core however many the machine has, and on a
    busy machine one runnable thread's share. For a small model that, not the forward pass, is
    what bounds the requests per second: on 2 cores two workers served 1.6-1.8x the requests of
    one at 32 clients (benchmarks/RESULTS.md). Each worker keeps its share of the cores for its
    passes (:func:`_threads_per_worker`). More than two is ``--workers N``: every worker is one
    more copy of the model, and the batches are split between them. On a GPU one process: there
    the passes are the work, batching pays most, and each worker would hold a CUDA context.
    """
    if config.workers is not None:
        return config.workers
    if _cores() < 2:
        return 1
    # onnx runs on the CPU; torch (and auto) on the device auto picks, which needs torch to tell
    # (2 s to import) unless the machine surely has no GPU.
    if config.backend != "onnx" and not (config.device in (None, "auto", "cpu") and surely_cpu_only()):
        from cnnkit.runtime import resolve_device

        if resolve_device(config.device).type != "cpu":
            return 1
    return 2


def _threads_per_worker(config: ServeConfig) -> int:
    """Compute threads per worker (torch's and ONNX Runtime's intra-op threads alike): its share
    of the cores, less one for its event loop and decoding.

    Oversubscribed intra-op threads are the worst case for serving: a forward pass waits at
    every operator for its slowest thread, and a thread that has lost its core to the event
    loop (or to another process) turns a 1 ms pass into tens of ms (benchmarks/RESULTS.md).
    ONNX Runtime's pool works the same way (one thread per core by default), so it gets the
    same number.
    """
    return config.threads or max(1, _cores() // resolve_workers(config) - 1)


def _resolve_backend(path: os.PathLike, config: ServeConfig) -> str:
    """The backend the workers will run, decided once: the ONNX export is built and cached here, so
    the workers find it (instead of each exporting it), and a model that does not export is one
    error (``onnx``) or one warning (``auto``: the workers run torch), not one per worker.

    ``path``: the model file (already resolved). Each worker then loads it once and builds its
    predictor from the model it loaded (:meth:`~cnnkit.serve.service.ModelService.load`).
    """
    if config.backend == "torch":
        return "torch"
    if cpu_onnx_predictor(path, config.backend, device=config.device, threads=1) is not None:
        return "onnx"  # its export is cached and valid, found without importing torch or onnx
    from cnnkit.inference import load_predictor
    from cnnkit.runtime import resolve_device

    if config.backend == "auto" and resolve_device(config.device).type != "cpu":
        return "torch"
    with warnings.catch_warnings(record=True) as caught:
        warnings.simplefilter("always")
        backend = load_predictor(path, config.backend, device=config.device, threads=1).backend
    for note in caught:
        print(f"cnnkit: warning: {note.message}", file=sys.stderr)
    return backend


def server_stack() -> dict[str, str]:
    """The event loop and HTTP parser uvicorn runs: uvloop and httptools (``uvicorn[standard]``) where installed.

    The choice uvicorn's ``auto`` makes, made here so the server can say which it runs.
    """
    found = importlib.util.find_spec
    return {
        "loop": "uvloop" if sys.platform != "win32" and found("uvloop") else "asyncio",
        "http": "httptools" if found("httptools") else "h11",
    }


def check_port(host: str, port: int) -> None:
    """Raise a one-line :class:`~cnnkit.errors.ConfigError` unless ``host:port`` can be listened on now.

    Checked by binding it (as uvicorn will, with ``SO_REUSEADDR``) before the model is loaded, so a
    port in use is said at once and plainly, not after the load as uvicorn's ``[Errno 98]``.
    """
    try:
        family, kind, proto, _, address = socket.getaddrinfo(host, port, type=socket.SOCK_STREAM)[0]
    except socket.gaierror as e:
        raise ConfigError(f"--host {host}: not an address of this machine ({e.strerror})") from None
    with socket.socket(family, kind, proto) as probe:
        probe.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        try:
            probe.bind(address)
        except OSError as e:
            if e.errno == errno.EADDRINUSE:
                raise ConfigError(f"port {port} on {host} is already in use (another server?): stop it, or "
                                  f"choose another with --port") from None  # fmt: skip
            raise ConfigError(f"cannot listen on {host}:{port}: {e.strerror}") from None


def run_server(model: str | os.PathLike, config: ServeConfig | None = None) -> None:
    """Serve ``model`` (a model file or run folder) until SIGTERM or Ctrl+C."""
    config = config or ServeConfig()
    check_port(config.host, config.port)  # before loading the model: a busy port is said at once
    config = replace(config, workers=resolve_workers(config), threads=_threads_per_worker(config))
    stack = server_stack()
    said = (
        f"cnnkit serve: uvicorn {uvicorn.__version__}, event loop {stack['loop']}, HTTP parser {stack['http']}, "
        f"{config.workers} worker{'s' if config.workers > 1 else ''} (--workers)"
    )
    options = {
        **stack,
        "host": config.host,
        "port": config.port,
        "access_log": config.access_log,
        "timeout_graceful_shutdown": config.drain_timeout_s,
        "lifespan": "on",
        "log_level": "info",
    }
    if config.workers > 1:
        path = resolve_served_model(model)  # resolved once, here: the workers get the file itself
        backend = _resolve_backend(path, config)  # ONNX Runtime: the file was read, or its valid export found
        if backend != "onnx":
            from cnnkit.models.loading import check_model_file

            check_model_file(path)  # a bad model file is one clear error here, not one per worker
        config = replace(config, backend=backend)
        os.environ[ENV_SPEC] = json.dumps({"model": str(path.resolve()), "config": config.to_dict()})
        from cnnkit.serve.metrics import multiprocess_dir
        from cnnkit.serve.workers import run_workers

        print(said, file=sys.stderr)  # once the model is known to load: a bad one is the only line
        with multiprocess_dir():  # /metrics sums every worker's counts (prometheus-client's multiprocess mode)
            run_workers("cnnkit.serve.server:app_from_env", config.workers, **options)  # a socket each (workers.py)
        return

    from cnnkit.serve.app import create_app

    app = create_app(model, config)  # loads the model: a bad file fails here, before binding
    print(said, file=sys.stderr)
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
