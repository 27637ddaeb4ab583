"""Serving benchmark: latency p50/p99 and requests/second at 1, 8 and 32 concurrent clients.

Two models (the article's CNN at 28x28x1 and a ResNet-18 at 32x32x3), each served by real
``cnnkit`` servers (uvicorn, 127.0.0.1), one per (backend, batching) pair: by default the
PyTorch and the ONNX Runtime backends side by side, batching on (``--max-batch 32``);
``--configs "on:32,off:1"`` compares batching on and off. Beside them, the anchors (``--anchors``,
:mod:`_serve_anchors`): what a user would otherwise run for the same model, a plain FastAPI +
uvicorn endpoint (Pillow, one forward pass per request) and LitServe with batching (max batch
32, 2 ms). The servers take turns, ``--repeats`` times (who goes first rotates), and the median
of the repeats is printed, with each server's ratios to the first, paired per repeat.
Each model is saved to a file first, so every server serves the same weights and the ONNX
backend goes through its real path (exported, parity-checked and cached next to the file).

The clients are a small asyncio HTTP/1.1 client on raw sockets (keep-alive, one connection per
client, the request bytes built once) so that the client costs the shared CPU as little as
possible; on a 2-core machine client and server still share the cores, which is noted. Each
request is a multipart form holding one PNG (what every server takes; ``--client raw`` sends
the PNG as the body, which only cnnkit takes).
"model ms" is the median forward pass a request shared (the answer's ``timing_ms.model``).
"CPU ms/request" is the CPU time (user + system) all the server's processes used in the window,
per answer: what a request costs the machine, which shares of a busy machine do not change much.

    python benchmarks/serve_bench.py                 # torch vs onnx, both models (a few minutes)
    python benchmarks/serve_bench.py --models seed   # the article's model only
    python benchmarks/serve_bench.py --configs "on:32,off:1" --backends torch   # batching on vs off
    python benchmarks/serve_bench.py --quick         # one repeat, shorter windows
    python benchmarks/serve_bench.py --models seed --backends onnx   # cnnkit's default vs the anchors
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import io
import json
import os
import platform
import re
import signal
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
    """One server in a subprocess (its own session, so LitServe's worker processes stop with it)."""

    def __init__(self, argv: list[str], path: str, workers: int = 0, src: Path = ROOT / "src") -> None:
        env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(src), os.environ.get("PYTHONPATH", "")])}
        self.path = path  # where it answers predictions
        self.proc = subprocess.Popen(
            [sys.executable, *argv], stdout=subprocess.PIPE, stderr=subprocess.PIPE if workers else None, text=True,
            env=env, start_new_session=True,
        )  # fmt: skip
        self.port = int(self.proc.stdout.readline()) if not workers else self._read_cli_log(workers)

    def _read_cli_log(self, workers: int) -> int:
        """``cnnkit serve --workers N``: its port from uvicorn's log, once all N workers have started."""
        port, started = None, 0
        for line in self.proc.stderr:
            found = re.search(r"running on http://127\.0\.0\.1:(\d+)", line)
            port = int(found.group(1)) if found else port
            started += "Application startup complete" in line
            if port and started == workers:
                break
        else:
            raise RuntimeError(f"cnnkit serve --workers {workers} did not start")
        threading.Thread(target=lambda: [None for _ in self.proc.stderr], daemon=True).start()  # keep draining it
        return port

    @classmethod
    def cnnkit(cls, model_path: Path, max_batch: int, threads: int, backend: str, workers: int = 1,
               src: Path = ROOT / "src") -> Server:  # fmt: skip
        if workers == 1:  # the app under uvicorn in this script (see serve()), as the table has always measured
            argv = [__file__, "--serve", str(model_path), str(max_batch), str(threads), backend]
            return cls(argv, "/v1/predict", src=src)
        command = ["-m", "cnnkit", "serve", str(model_path), "--port", "0", "--workers", str(workers), "--backend",
                   backend, "--max-batch", str(max_batch), "--threads", str(threads), "--max-in-flight", "256",
                   "--timeout", "120", "--no-access-log"]  # fmt: skip
        return cls(command, "/v1/predict", workers=workers, src=src)  # src: a baseline's too

    @classmethod
    def anchor(cls, kind: str, model_path: Path, threads: int) -> Server:
        return cls([str(ROOT / "benchmarks" / "_serve_anchors.py"), kind, str(model_path), str(threads)], "/predict")

    def cpu_seconds(self) -> float:
        """CPU time (user + system) used so far by every process of the server (LitServe runs several)."""
        total = 0
        for stat in Path("/proc").glob("[0-9]*/stat"):
            with contextlib.suppress(OSError):
                fields = stat.read_text().rsplit(")", 1)[1].split()
                if int(fields[3]) == self.proc.pid:  # its session: the server and its children
                    total += int(fields[11]) + int(fields[12])  # utime, stime in clock ticks
        return total / os.sysconf("SC_CLK_TCK")

    def close(self) -> None:
        with contextlib.suppress(ProcessLookupError):
            os.killpg(self.proc.pid, signal.SIGTERM)
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.proc.pid, signal.SIGKILL)
            self.proc.wait()


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
            timing = re.search(rb'"model":([0-9.]+)', body)  # cnnkit's timing_ms.model (the anchors have none)
            if timing:
                model_ms.append(float(timing.group(1)))
    finally:
        writer.close()


BOUNDARY = "cnnkitbenchboundary7MA4YWxkTrZu0gW"


def http_request(path: str, png: bytes, client: str) -> bytes:
    """The bytes of one POST of ``png``: a multipart form with one file (field ``content``), or the raw body."""
    if client == "raw":
        content_type, body = "image/png", png
    else:
        content_type = f"multipart/form-data; boundary={BOUNDARY}"
        body = (
            (
                f'--{BOUNDARY}\r\nContent-Disposition: form-data; name="content"; filename="image.png"\r\n'
                f"Content-Type: image/png\r\n\r\n"
            ).encode()
            + png
            + f"\r\n--{BOUNDARY}--\r\n".encode()
        )
    head = f"POST {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: {content_type}\r\n"
    head += f"Content-Length: {len(body)}\r\n\r\n"
    return head.encode() + body


async def _measure(port: int, request: bytes, clients: int, seconds: float
                   ) -> tuple[list[float], list[float], list[str], float]:  # fmt: skip
    latencies: list[float] = []
    model_ms: list[float] = []
    errors: list[str] = []
    started = time.perf_counter()
    stop_at = started + seconds
    await asyncio.gather(*(_client(port, request, stop_at, latencies, model_ms, errors) for _ in range(clients)))
    return latencies, model_ms, errors, time.perf_counter() - started


def measure(server: Server, request: bytes, clients: int, seconds: float) -> dict[str, float]:
    asyncio.run(_measure(server.port, request, clients, min(0.5, seconds)))  # warm the connections and the caches
    cpu = server.cpu_seconds()
    latencies, model_ms, errors, elapsed = asyncio.run(_measure(server.port, request, clients, seconds))
    cpu = server.cpu_seconds() - cpu
    if errors:
        print(f"  {len(errors)} failed requests, e.g. {errors[0]}", file=sys.stderr)
    latencies.sort() if latencies else latencies.append(float("nan"))
    return {
        "p50": latencies[len(latencies) // 2],
        "p99": latencies[min(len(latencies) - 1, int(len(latencies) * 0.99))],
        "rps": len(latencies) / elapsed,
        "model_ms": statistics.median(model_ms) if model_ms else float("nan"),
        "cpu_ms": cpu * 1000 / max(1, len(latencies)),  # the server's CPU time per answer, all its processes
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


Spec = tuple[int, int, str, int]  # (max batch, threads, backend, worker processes) of one server


def server_specs(configs: str, backends: str, threads: int, workers: str = "1") -> dict[str, Spec]:
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
            for n in (_workers(w, backend) for w in workers.split(",")):
                specs[label if n == 1 else f"{label} x{n}"] = (max_batch, t, backend, n)
    return specs


def _workers(given: str, backend: str) -> int:
    """A ``--workers`` entry as a number: ``auto`` is what ``cnnkit serve`` runs by default on this machine."""
    if given != "auto":
        return int(given)
    from cnnkit.serve.config import ServeConfig
    from cnnkit.serve.server import resolve_workers

    return resolve_workers(ServeConfig(backend=backend))


def save_models(names: list[str], folder: Path) -> dict[str, Path]:
    """Each model saved once, so every server (and backend) serves the same weights."""
    paths = {}
    for name in names:
        paths[name] = folder / name / "model.safetensors"
        paths[name].parent.mkdir()
        build_model(name).save(paths[name])
    return paths


def baseline_name(specs: dict[str, Spec], workers: int | None) -> str:
    """The baseline's label: the first server's, with its own worker count where ``--baseline-workers`` gives one."""
    name, (_, _, backend, first) = next(iter(specs.items()))
    if workers is None or workers == first:
        return f"{name} before"
    return f"{backend}{f' x{workers}' if workers > 1 else ''} before"


def start_servers(path: Path, specs: dict[str, Spec], anchors: list[str], threads: int,
                  baseline: Path | None = None, baseline_workers: int | None = None) -> dict[str, Server]:  # fmt: skip
    """cnnkit's servers (one at a time: the first onnx one exports), the baseline's, then the anchors."""
    servers = {}
    try:
        for name, (max_batch, t, backend, workers) in specs.items():
            servers[name] = Server.cnnkit(path, max_batch, t, backend, workers)
        if baseline is not None:  # the first server's settings, on another source tree (cnnkit before a change)
            max_batch, t, backend, workers = next(iter(specs.values()))
            workers = baseline_workers or workers
            servers[baseline_name(specs, workers)] = Server.cnnkit(path, max_batch, t, backend, workers, src=baseline)
        for kind in anchors:
            servers[kind] = Server.anchor(kind, path, threads)
    except BaseException:
        for server in servers.values():
            server.close()
        raise
    return servers


def check_answers(servers: dict[str, Server], png: bytes) -> None:
    """One request to each: the same model, so the same top classes and probabilities (to 1e-4)."""
    answers = {}
    for name, server in servers.items():
        reader_writer = asyncio.run(_one(server.port, http_request(server.path, png, "multipart")))
        answer = json.loads(reader_writer)
        answer = answer["results"][0] if "results" in answer else answer
        answers[name] = (answer["labels"], np.array(answer["probabilities"]))
    (first, (labels, probs)), *others = answers.items()
    for name, (other_labels, other_probs) in others:
        if other_labels != labels or not np.allclose(other_probs, probs, atol=1e-4):
            print(f"  warning: {name} answers {other_labels} {other_probs}, {first} {labels} {probs}", file=sys.stderr)
    print(f"answers: every server gives the same top {len(labels)} ({', '.join(labels)}) to 1e-4", flush=True)


async def _one(port: int, request: bytes) -> bytes:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    try:
        writer.write(request)
        head = await reader.readuntil(b"\r\n\r\n")
        length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
        return await reader.readexactly(length)
    finally:
        writer.close()


Results = dict[tuple[str, str, int], list[dict[str, float]]]  # (model, server, clients) -> one cell per repeat


def run_cells(model_paths: dict[str, Path], specs: dict[str, Spec], anchors: list[str], anchor_threads: int,
              seconds: float, repeats: int, client: str, baseline: Path | None = None,
              baseline_workers: int | None = None) -> Results:  # fmt: skip
    """Every (model, server, clients) cell, ``repeats`` times, the servers of a model taking turns."""
    results: Results = {}
    for model_name, path in model_paths.items():
        png = image_bytes(model_name)
        servers = start_servers(path, specs, anchors, anchor_threads, baseline, baseline_workers)
        try:
            check_answers(servers, png)
            requests = {name: http_request(server.path, png, client) for name, server in servers.items()}
            for repeat in range(repeats):
                for clients in CONCURRENCY:
                    turns = list(servers.items())
                    turns = turns[repeat % len(turns) :] + turns[: repeat % len(turns)]  # who goes first rotates
                    for name, server in turns:  # side by side: the servers take turns
                        cell = measure(server, requests[name], clients, seconds)
                        results.setdefault((model_name, name, clients), []).append(cell)
                        line = f"{model_name} {name} {clients} clients (repeat {repeat + 1}): {cell['rps']:.0f}/s"
                        print("  " + line, file=sys.stderr, flush=True)
        finally:
            for server in servers.values():
                server.close()
    return results


def report(results: dict[tuple[str, str, int], list[dict[str, float]]], order: list[str]) -> list[dict]:
    """Print the table (medians of the repeats) and the ratios against the first server; return the rows."""
    print("| model | server | clients | p50 ms | p99 ms | requests/s | model ms | CPU ms/request | failed |")
    print("| --- | --- | ---: | ---: | ---: | ---: | ---: | ---: | ---: |")
    rows = []
    for (model_name, name, clients), cells in results.items():
        row = {k: statistics.median(c[k] for c in cells) for k in ("p50", "p99", "rps", "model_ms", "cpu_ms")}
        rows.append({"model": model_name, "server": name, "clients": clients, **row,
                     "errors": sum(c["errors"] for c in cells)})  # fmt: skip
    rows.sort(key=lambda r: (r["model"] != "seed", r["clients"], order.index(r["server"])))
    for r in rows:
        print(
            f"| {r['model']} | {r['server']} | {r['clients']} | {r['p50']:.2f} | {r['p99']:.2f} "
            f"| {r['rps']:.0f} | {r['model_ms']:.2f} | {r['cpu_ms']:.2f} | {r['errors']} |"
        )
    print()

    def paired(model_name: str, a: str, b: str, clients: int, key: str) -> float:
        """Median over the repeats of a/b, each repeat's two cells measured back to back."""
        pairs = zip(results[(model_name, a, clients)], results[(model_name, b, clients)])
        return statistics.median(x[key] / y[key] for x, y in pairs)

    first, *others = order
    for model_name in dict.fromkeys(r["model"] for r in rows):
        for other in others:
            rps = ", ".join(f"{paired(model_name, first, other, c, 'rps'):.2f}x" for c in CONCURRENCY)
            p50 = paired(model_name, first, other, 1, "p50")
            p99 = paired(model_name, first, other, 32, "p99")
            print(f"{model_name}: {first} / {other}: requests/s {rps} at {', '.join(map(str, CONCURRENCY))} clients; "
                  f"p50 at 1 client {p50:.2f}x, p99 at 32 clients {p99:.2f}x")  # fmt: skip
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
    parser.add_argument(
        "--workers",
        default="auto",
        help="cnnkit's worker processes, a list (default auto: as `cnnkit serve` chooses, 2 on 2+ cores; "
        "'auto,1' adds a one-process server)",
    )
    parser.add_argument(
        "--anchors",
        default="fastapi,litserve",
        help="what a user would otherwise run, beside cnnkit: fastapi, litserve (default both; '' none)",
    )
    parser.add_argument(
        "--baseline-src",
        type=Path,
        help="also serve the first server's settings from this src/ folder (e.g. main's), for before/after",
    )
    parser.add_argument(
        "--baseline-workers", type=int, help="the baseline's worker processes (default: the first server's)"
    )
    parser.add_argument(
        "--anchor-threads",
        type=int,
        default=None,
        help="torch threads of the anchors (default: cnnkit's; 0: torch's default, one per core)",
    )
    parser.add_argument(
        "--client",
        choices=["multipart", "raw"],
        default="multipart",
        help="each request a multipart form with one PNG (default), or the PNG as the body",
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

    threads = args.threads or _threads_per_worker(ServeConfig())
    specs = server_specs(args.configs, args.backends, threads, args.workers)
    print(f"machine: {versions()}; load average before: {os.getloadavg()[0]:.1f}", flush=True)
    described = (
        f"{n} ({backend}, max batch {b}, {t} threads{f', {w} workers' if w > 1 else ''})"
        for n, (b, t, backend, w) in specs.items()
    )
    anchors = [a for a in args.anchors.split(",") if a]
    if anchors and args.client == "raw":
        parser.error("the anchors take multipart forms only: --client raw needs --anchors ''")
    anchor_threads = threads if args.anchor_threads is None else args.anchor_threads
    shown = [f"{a} ({anchor_threads or 'default'} threads)" for a in anchors]
    before = [f"{baseline_name(specs, args.baseline_workers)} ({args.baseline_src})"] if args.baseline_src else []
    print(f"servers: {', '.join([*described, *before, *shown])}; client: {args.client}")
    with tempfile.TemporaryDirectory() as folder:
        model_paths = save_models(args.models.split(","), Path(folder))
        results = run_cells(
            model_paths,
            specs,
            anchors,
            anchor_threads,
            args.seconds,
            args.repeats,
            args.client,
            args.baseline_src,
            args.baseline_workers,
        )
    print(f"load average after: {os.getloadavg()[0]:.1f}")
    print()
    before = [baseline_name(specs, args.baseline_workers)] if args.baseline_src else []
    rows = report(results, [*specs, *before, *anchors])
    if args.json:
        args.json.write_text(json.dumps({"machine": versions(), "rows": rows}, indent=2))


if __name__ == "__main__":
    main()
