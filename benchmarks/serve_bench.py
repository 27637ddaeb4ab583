"""Serving benchmark: latency p50/p99 and requests/second at 1, 8 and 32 concurrent clients.

Two models (the article's CNN at 28x28x1 and a ResNet-18 at 32x32x3), each served by real
``cnnkit`` servers (uvicorn, 127.0.0.1), one per (backend, batching) pair: by default the
PyTorch and the ONNX Runtime backends side by side, batching on (``--max-batch 32``);
``--configs "on:32,off:1"`` compares batching on and off. The servers take turns,
``--repeats`` times (who goes first rotates), and the median of the repeats is printed.
Each model is saved to a file first, so every server serves the same weights and the ONNX
backend goes through its real path (exported, parity-checked and cached next to the file).

The clients are a small asyncio HTTP/1.1 client on raw sockets (keep-alive, one connection per
client, the request bytes built once) so that the client costs the shared CPU as little as
possible; on a 2-core machine client and server still share the cores, which is noted.
"model ms" is the median forward pass a request shared (the answer's ``timing_ms.model``).

    python benchmarks/serve_bench.py                 # torch vs onnx, both models (a few minutes)
    python benchmarks/serve_bench.py --models seed   # the article's model only
    python benchmarks/serve_bench.py --configs "on:32,off:1" --backends torch   # batching on vs off
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
import tempfile
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
    elif "resnet18" in models.list_models():  # the zoo's defaults to ImageNet's 224x224: ask for 32x32
        model = models.create_model("resnet18", num_classes=10, in_channels=3, input_size=32)
    else:
        import torchvision

        model = models.Model(torchvision.models.resnet18(num_classes=10), input_shape=(32, 32, 3), name="resnet18")
    model.class_names = [f"class{i}" for i in range(10)]
    return model.eval()


def serve(model_path: str, max_batch: int, threads: int, backend: str) -> None:
    """Run a server on a free port; print its port on stdout; serve until SIGTERM."""
    import signal

    import uvicorn

    from cnnkit.serve import ServeConfig, create_app

    # A long deadline: the benchmark measures queueing under load, it does not cut it short.
    config = ServeConfig(
        max_batch=max_batch, batch_wait_ms=2.0, max_in_flight=256, threads=threads, timeout_s=120,
        access_log=False, backend=backend,
    )  # fmt: skip
    app = create_app(model_path, config)
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
    def __init__(self, model_path: Path, max_batch: int, threads: int, backend: str) -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), os.environ.get("PYTHONPATH", "")])}
        self.proc = subprocess.Popen(
            [sys.executable, __file__, "--serve", str(model_path), str(max_batch), str(threads), backend],
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


async def _client(port: int, request: bytes, stop_at: float, latencies: list[float], model_ms: list[float],
                  errors: list[str]) -> None:  # fmt: skip
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        while time.perf_counter() < stop_at:
            started = time.perf_counter()
            writer.write(request)
            head = await reader.readuntil(b"\r\n\r\n")
            length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
            body = await reader.readexactly(length)
            if not head.startswith(b"HTTP/1.1 200"):
                errors.append(head.split(b"\r\n", 1)[0].decode())
                continue
            latencies.append((time.perf_counter() - started) * 1000)
            model_ms.append(float(re.search(rb'"model":([0-9.]+)', body).group(1)))  # timing_ms.model
    finally:
        writer.close()


async def _measure(port: int, body: bytes, clients: int, seconds: float
                   ) -> tuple[list[float], list[float], list[str], float]:  # fmt: skip
    request = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\n"
        f"Content-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    latencies: list[float] = []
    model_ms: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(_client(port, request, stop_at, latencies, model_ms, errors) for _ in range(clients)))
    return latencies, model_ms, errors, time.perf_counter() - started


def measure(port: int, body: bytes, clients: int, seconds: float) -> dict[str, float]:
    asyncio.run(_measure(port, body, clients, min(0.5, seconds)))  # warm the connections and the caches
    latencies, model_ms, errors, elapsed = asyncio.run(_measure(port, body, clients, seconds))
    if errors:
        print(f"  {len(errors)} failed requests, e.g. {errors[0]}", file=sys.stderr)
    latencies.sort() if latencies else latencies.append(float("nan"))
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "rps": len(latencies) / elapsed,
        "model_ms": statistics.median(model_ms) if model_ms else float("nan"),
        "errors": len(errors),
    }


def versions() -> str:
    import fastapi
    import onnxruntime
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
        f"onnxruntime {onnxruntime.__version__}, cnnkit {cnnkit.__version__}, fastapi {fastapi.__version__}, "
        f"uvicorn {uvicorn.__version__}"
    )


Spec = tuple[int, int, str]  # (max batch, threads, backend) of one server


def server_specs(configs: str, backends: str, threads: int) -> dict[str, Spec]:
    """The servers to compare: every batching config (NAME:MAX_BATCH[:THREADS]) on every backend."""
    parsed = {}
    for spec in configs.split(","):
        name, max_batch, *rest = spec.split(":")
        parsed[name] = (int(max_batch), int(rest[0]) if rest else threads)
    names = backends.split(",")
    specs = {}
    for config, (max_batch, t) in parsed.items():
        for backend in names:
            label = backend if len(parsed) == 1 else config if len(names) == 1 else f"{config}/{backend}"
            specs[label] = (max_batch, t, backend)
    return specs


def save_models(names: list[str], folder: Path) -> dict[str, Path]:
    """Each model saved once, so every server (and backend) serves the same weights."""
    paths = {}
    for name in names:
        paths[name] = folder / name / "model.safetensors"
        paths[name].parent.mkdir()
        build_model(name).save(paths[name])
    return paths


def run_cells(model_paths: dict[str, Path], specs: dict[str, Spec], seconds: float, repeats: int
              ) -> dict[tuple[str, str, int], list[dict[str, float]]]:  # fmt: skip
    """Every (model, server, clients) cell, ``repeats`` times, the servers of a model taking turns."""
    results: dict[tuple[str, str, int], list[dict[str, float]]] = {}
    for model_name, path in model_paths.items():
        body = image_bytes(model_name)
        servers = {}
        try:
            for name, (max_batch, t, backend) in specs.items():
                servers[name] = Server(path, max_batch, t, backend)  # one at a time: the first onnx one exports
            for repeat in range(repeats):
                for clients in CONCURRENCY:
                    turns = list(servers.items())
                    turns = turns[repeat % len(turns) :] + turns[: repeat % len(turns)]  # who goes first rotates
                    for name, server in turns:  # side by side: the servers take turns
                        cell = measure(server.port, body, clients, seconds)
                        results.setdefault((model_name, name, clients), []).append(cell)
                        line = f"{model_name} {name} {clients} clients (repeat {repeat + 1}): {cell['rps']:.0f}/s"
                        print("  " + line, file=sys.stderr, flush=True)
        finally:
            for server in servers.values():
                server.close()
    return results


def report(results: dict[tuple[str, str, int], list[dict[str, float]]], order: list[str]) -> list[dict]:
    """Print the table (medians of the repeats) and the ratios against the first server; return the rows."""
    print("| model | server | clients | p50 ms | p99 ms | requests/s | model ms | failed |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for (model_name, name, clients), cells in results.items():
        row = {k: statistics.median(c[k] for c in cells) for k in ("p50", "p99", "rps", "model_ms")}
        rows.append({"model": model_name, "server": name, "clients": clients, **row,
                     "errors": sum(c["errors"] for c in cells)})  # fmt: skip
    rows.sort(key=lambda r: (r["model"] != "seed", r["clients"], order.index(r["server"])))
    for r in rows:
        print(
            f"| {r['model']} | {r['server']} | {r['clients']} | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| {r['rps']:.0f} | {r['model_ms']:.2f} | {r['errors']} |"
        )
    print()

    def paired(model_name: str, a: str, b: str, clients: int, key: str) -> float:
        """Median over the repeats of a/b, each repeat's two cells measured back to back."""
        pairs = zip(results[(model_name, a, clients)], results[(model_name, b, clients)])
        return statistics.median(x[key] / y[key] for x, y in pairs)

    first, *others = order
    for model_name in dict.fromkeys(r["model"] for r in rows):
        for other in others:
            p50 = paired(model_name, first, other, 1, "p50")
            p99 = paired(model_name, first, other, 1, "p99")
            rps = ", ".join(f"{c} clients {paired(model_name, other, first, c, 'rps'):.2f}x" for c in CONCURRENCY)
            print(f"{model_name}: {other} vs {first}: 1 client p50 {p50:.2f}x faster, p99 {p99:.2f}x; throughput {rps}")
        one, many = results[(model_name, first, 1)], results[(model_name, first, 32)]
        growth = statistics.median(m["rps"] / o["rps"] for o, m in zip(one, many))
        print(f"{model_name}: {first}, 32 vs 1 client throughput {growth:.2f}x")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument(
        "--serve", nargs=4, metavar=("MODEL", "MAX_BATCH", "THREADS", "BACKEND"), help=argparse.SUPPRESS
    )
    parser.add_argument("--models", default="seed,resnet18")
    parser.add_argument("--seconds", type=float, default=3.0, help="measuring window per cell")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--threads", type=int, default=None, help="threads per server (default: as cnnkit serve)")
    parser.add_argument("--backends", default="torch,onnx", help="backends to compare (default torch,onnx)")
    parser.add_argument(
        "--configs",
        default="on:32",
        help="batching configs, NAME:MAX_BATCH[:THREADS],... (default: on:32); each runs on every backend",
    )
    parser.add_argument("--quick", action="store_true", help="one repeat of 1.5 s windows")
    parser.add_argument("--json", type=Path, help="also write the raw results here")
    args = parser.parse_args()
    if args.serve:
        serve(args.serve[0], int(args.serve[1]), int(args.serve[2]), args.serve[3])
        return
    if args.quick:
        args.seconds, args.repeats = 1.5, 1
    from cnnkit.serve.config import ServeConfig
    from cnnkit.serve.server import _threads_per_worker

    specs = server_specs(args.configs, args.backends, args.threads or _threads_per_worker(ServeConfig()))
    print(f"machine: {versions()}; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    described = (f"{n} ({backend}, max batch {b}, {t} threads)" for n, (b, t, backend) in specs.items())
    print(f"servers: {', '.join(described)}")
    with tempfile.TemporaryDirectory() as folder:
        model_paths = save_models(args.models.split(","), Path(folder))
        results = run_cells(model_paths, specs, args.seconds, args.repeats)
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print()
    rows = report(results, list(specs))
    if args.json:
        args.json.write_text(json.dumps({"machine": versions(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
