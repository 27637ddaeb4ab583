"""``cnnkit serve``: the HTTP API and the page for a trained model."""

from __future__ import annotations

import argparse

from cnnkit.errors import ConfigError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from cnnkit.serve.config import ServeConfig

    d = ServeConfig()
    p = sub.add_parser(
        "serve",
        help="serve a model over HTTP: REST API, OpenAPI docs at /docs, a page at /",
        description="Serve a model: POST /v1/predict, POST /v1/explain, GET /v1/model, /healthz, /readyz, "
        "/metrics (Prometheus), the page at /. Binds 127.0.0.1 unless --host says otherwise.",
    )
    p.add_argument("model", help="model file, run folder, `latest` or a prefix of one run's name under runs/")
    p.add_argument("--host", default=d.host, help=f"interface to bind (default {d.host}; 0.0.0.0 for all)")
    p.add_argument("--port", type=int, default=d.port)
    p.add_argument("--workers", type=int, default=d.workers,
                   help="server processes, each with its own model and batcher (default: 2 on a CPU with 2 or "
                   "more cores, else 1)")  # fmt: skip
    p.add_argument(
        "--backend",
        choices=["auto", "torch", "onnx"],
        default=d.backend,
        help=f"what runs the model (default {d.backend}): auto: ONNX Runtime on a CPU (exported, checked and "
        "cached next to the model on first use), PyTorch on a GPU; torch: PyTorch; onnx: ONNX Runtime. "
        "Heat maps always use PyTorch",
    )
    p.add_argument("--threads", type=int, default=None,
                   help="compute threads per process, torch or ONNX Runtime (default: cores/workers - 1)")  # fmt: skip
    p.add_argument("--device", default=d.device, help="for the torch backend: auto, cpu, cuda or cuda:N")
    p.add_argument("--max-batch", type=int, default=d.max_batch, help="most images per forward pass")
    p.add_argument("--batch-wait-ms", type=float, default=d.batch_wait_ms,
                   help="how long a batch waits for more requests while others are arriving")  # fmt: skip
    p.add_argument("--inline-ms", type=float, default=d.inline_ms,
                   help="a lone image runs on the event loop while the model's one-image pass takes less "
                   "than this (default 1; 0: always on the model thread)")  # fmt: skip
    p.add_argument("--max-in-flight", type=int, default=d.max_in_flight, help="requests at once; more get 503")
    p.add_argument("--timeout", type=float, default=d.timeout_s, help="seconds per request; longer gets 504")
    p.add_argument("--max-body-mb", type=float, default=d.max_body_bytes / 2**20, help="largest request body")
    p.add_argument("--max-pixels", type=int, default=d.max_pixels, help="largest image, width x height")
    p.add_argument("--max-images", type=int, default=d.max_images, help="most images per request")
    p.add_argument("--drain-timeout", type=float, default=d.drain_timeout_s,
                   help="on SIGTERM, seconds the requests in flight get to finish")  # fmt: skip
    p.add_argument("--no-access-log", action="store_true", help="do not log one line per request")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.serve import ServeConfig, run_server

    if args.max_body_mb <= 0:
        raise ConfigError("--max-body-mb must be positive")
    config = ServeConfig(
        host=args.host, port=args.port, workers=args.workers, backend=args.backend, threads=args.threads,
        device=args.device,
        max_batch=args.max_batch, batch_wait_ms=args.batch_wait_ms, inline_ms=args.inline_ms,
        max_in_flight=args.max_in_flight,
        timeout_s=args.timeout, max_body_bytes=int(args.max_body_mb * 2**20), max_pixels=args.max_pixels,
        max_images=args.max_images, drain_timeout_s=args.drain_timeout, access_log=not args.no_access_log,
    )  # fmt: skip
    run_server(args.model, config)
    return 0
