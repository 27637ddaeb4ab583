"""Serving benchmark: latency p50/p99 and requests/second at 1, 8 and 32 concurrent clients.

Two models (the article's CNN at 28x28x1 and a ResNet-18 at 32x32x3), each served by a real
``cnnkit`` server (uvicorn, 127.0.0.1) with dynamic batching on (``--max-batch 32``) and off
(``--max-batch 1``), measured side by side in one run: the configurations take turns,
``--repeats`` times (who goes first rotates), and the median of the repeats is printed.

The clients are a small asyncio HTTP/1.1 client on raw sockets (keep-alive, one connection per
client, the request bytes built once) so that the client costs the shared CPU as little as
possible; on a 2-core machine client and server still share the cores, which is noted.

    python benchmarks/serve_bench.py                 # the full table (a few minutes)
    python benchmarks/serve_bench.py --quick         # one repeat, shorter windows
"""

from __future__ import annotations

import argparse
import asyncio
import io
import json
import os
import platform
import re
import statistics
import subprocess
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
CONCURRENCY = (1, 8, 32)


# -- the server side: one subprocess per (model, batching) -------------------------------------
def build_model(name: str):
    """The article's CNN, or ResNet-18 for 32x32 RGB images (the zoo's if registered, else torchvision's)."""
    from cnnkit import models

    if name == "seed":
        model = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
        model.build((28, 28, 1))
    elif "resnet18" in models.list_models():
        model = models.create_model("resnet18", num_classes=10)
    else:
        import torchvision

        model = models.Model(torchvision.models.resnet18(num_classes=10), input_shape=(32, 32, 3), name="resnet18")
    model.class_names = [f"class{i}" for i in range(10)]
    return model.eval()


def serve(model_name: str, max_batch: int, threads: int) -> None:
    """Run a server on a free port; print its port on stdout; serve until SIGTERM."""
    import signal

    import uvicorn

    from cnnkit.serve import ServeConfig, create_app

    # A long deadline: the benchmark measures queueing under load, it does not cut it short.
    config = ServeConfig(
        max_batch=max_batch, batch_wait_ms=2.0, max_in_flight=256, threads=threads, timeout_s=120, access_log=False
    )
    app = create_app(build_model(model_name), config)
    server = uvicorn.Server(
        uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", access_log=False, lifespan="on")
    )
    signal.signal(signal.SIGTERM, lambda *_: None)

    def announce() -> None:
        while not server.started:
            time.sleep(0.01)
        print(server.servers[0].sockets[0].getsockname()[1], flush=True)

    threading.Thread(target=announce, daemon=True).start()
    server.run()


class Server:
    def __init__(self, model_name: str, max_batch: int, threads: int) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", model_name, str(max_batch), str(threads)],
            stdout=subprocess.PIPE, text=True, env=env,
        )  # fmt: skip
        self.port = int(self.proc.stdout.readline())

    def close(self) -> None:
        self.proc.terminate()
        self.proc.wait(30)


# -- the client side ------------------------------------------------------------------------------
def image_bytes(model_name: str) -> bytes:
    from PIL import Image

    rng = np.random.default_rng(0)
    if model_name == "seed":
        array, mode = (rng.random((28, 28)) * 255).astype(np.uint8), "L"
    else:
        array, mode = (rng.random((32, 32, 3)) * 255).astype(np.uint8), "RGB"
    buffer = io.BytesIO()
    Image.fromarray(array, mode).save(buffer, format="PNG")
    return buffer.getvalue()


async def _client(port: int, request: bytes, stop_at: float, latencies: list[float], errors: list[str]) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
            await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n", 1)[0].decode())
                continue
            latencies.append((time.perf_counter() - started) * 1000)
    finally:
        writer.close()


async def _measure(port: int, body: bytes, clients: int, seconds: float) -> tuple[list[float], list[str], float]:
    request = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(_client(port, request, stop_at, latencies, errors) for _ in range(clients)))
    return latencies, errors, time.perf_counter() - started


def measure(port: int, body: bytes, clients: int, seconds: float) -> dict[str, float]:
    asyncio.run(_measure(port, body, clients, min(0.5, seconds)))  # warm the connections and the caches
    latencies, errors, elapsed = asyncio.run(_measure(port, body, clients, seconds))
    if errors:
        print(f"  {len(errors)} failed requests, e.g. {errors[0]}", file=sys.stderr)
    latencies.sort() if latencies else latencies.append(float("nan"))
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "rps": len(latencies) / elapsed,
        "errors": len(errors),
    }


def versions() -> str:
    import fastapi
    import torch
    import uvicorn

    import cnnkit

    cpu = "unknown CPU"
    if Path("/proc/cpuinfo").exists():
        found = re.search(r"model name\s*:\s*(.+)", Path("/proc/cpuinfo").read_text())
        cpu = found.group(1) if found else cpu
    cores = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else os.cpu_count()
    return (
        f"{cpu}, {cores} cores; Python {platform.python_version()}, torch {torch.__version__}, "
        f"cnnkit {cnnkit.__version__}, fastapi {fastapi.__version__}, uvicorn {uvicorn.__version__}"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--serve", nargs=3, metavar=("MODEL", "MAX_BATCH", "THREADS"), help=argparse.SUPPRESS)
    parser.add_argument("--models", default="seed,resnet18")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring window per cell")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="torch threads per server (default: as cnnkit serve)")
    parser.add_argument(
        "--configs",
        default="on:32,off:1",
        help="servers to compare, NAME:MAX_BATCH[:THREADS],... (default: batching on (32) and off (1))",
    )
    parser.add_argument("--quick", action="store_true", help="one repeat of 1.5 s windows")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), int(args.serve[2]))
        return
    if args.quick:
        args.seconds, args.repeats = 1.5, 1
    from cnnkit.serve.config import ServeConfig
    from cnnkit.serve.server import _threads_per_worker

    threads = args.threads or _threads_per_worker(ServeConfig())
    configs = {}
    for spec in args.configs.split(","):
        name, max_batch, *rest = spec.split(":")
        configs[name] = (int(max_batch), int(rest[0]) if rest else threads)
    print(f"machine: {versions()}; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    print(f"servers: {', '.join(f'{n} (max batch {b}, {t} torch threads)' for n, (b, t) in configs.items())}")
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for model_name in args.models.split(","):
        body = image_bytes(model_name)
        servers = {name: Server(model_name, max_batch, t) for name, (max_batch, t) in configs.items()}
        try:
            for repeat in range(args.repeats):
                for clients in CONCURRENCY:
                    turns = list(servers.items())
                    turns = turns[repeat % len(turns) :] + turns[: repeat % len(turns)]  # who goes first rotates
                    for batching, server in turns:  # side by side: the servers take turns
                        cell = measure(server.port, body, clients, args.seconds)
                        results.setdefault((model_name, batching, clients), []).append(cell)
                        line = f"{model_name} {batching} {clients} clients (repeat {repeat + 1}): {cell['rps']:.0f}/s"
                        print("  " + line, file=sys.stderr, flush=True)
        finally:
            for server in servers.values():
                server.close()
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print()
    print("| model | server | clients | p50 ms | p99 ms | requests/s | failed |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for (model_name, batching, clients), cells in results.items():
        row = {k: statistics.median(c[k] for c in cells) for k in ("p50", "p99", "rps")}
        rows.append({"model": model_name, "batching": batching, "clients": clients, **row,
                     "errors": sum(c["errors"] for c in cells)})  # fmt: skip
    order = list(configs)
    rows.sort(key=lambda r: (r["model"] != "seed", r["clients"], order.index(r["batching"])))
    for r in rows:
        print(
            f"| {r['model']} | {r['batching']} | {r['clients']} | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| {r['rps']:.0f} | {r['errors']} |"
        )
    print()
    first, *others = order
    for model_name in args.models.split(","):
        by = {(r["batching"], r["clients"]): r["rps"] for r in rows if r["model"] == model_name}
        for other in others:
            ratios = ", ".join(f"{c} clients {by[(first, c)] / by[(other, c)]:.2f}x" for c in CONCURRENCY)
            print(f"{model_name}: throughput {first}/{other}: {ratios}")
        print(f"{model_name}: {first}, 32 vs 1 client throughput {by[(first, 32)] / by[(first, 1)]:.2f}x")
    if args.json:
        args.json.write_text(json.dumps({"machine": versions(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
