"""A real uvicorn server on 127.0.0.1: overload gets fast 503s, deadlines 504s, 64 clients all get answers,
and SIGTERM lets the requests in flight finish before the process exits 0."""

from __future__ import annotations

import asyncio
import os
import re
import signal
import socket
import subprocess
import sys
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import httpx
import numpy as np
import pytest

from _serve_util import GatedNet, digit_png, png_bytes, raw_burst, threaded_server
from cnnkit.models import Model
from cnnkit.serve import ServeConfig, create_app
from cnnkit.serve.server import _threads_per_worker

SRC = Path(__file__).resolve().parents[1] / "src"


def gated_app(**config):
    net = GatedNet(classes=3)
    model = Model(net, input_shape=(8, 8, 1), name="gated", class_names=["a", "b", "c"])
    return create_app(model, ServeConfig(**config)), net


def wait_for(condition, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("condition not reached in time")
        time.sleep(0.01)


IMAGE = png_bytes(np.zeros((8, 8), np.uint8))


def post(url: str, timeout: float = 30) -> httpx.Response:
    return httpx.post(f"{url}/v1/predict", content=IMAGE, headers={"content-type": "image/png"}, timeout=timeout)


def test_overload_is_refused_at_once_while_admitted_requests_wait():
    app, net = gated_app(max_in_flight=2)
    admission = app.state.service.admission
    with threaded_server(app) as url, ThreadPoolExecutor(2) as pool:
        net.gate.clear()  # the model is stuck: admitted requests cannot finish
        held = [pool.submit(post, url) for _ in range(2)]
        wait_for(lambda: admission.in_flight == 2)
        refused = post(url)
        # Answered while both admitted requests are still waiting on the model: it did not queue.
        assert refused.status_code == 503 and not any(f.done() for f in held)
        assert refused.json()["code"] == "overloaded" and refused.headers["retry-after"] == "1"
        assert httpx.get(f"{url}/healthz").status_code == 200  # health is never refused
        net.gate.set()
        assert [f.result().status_code for f in held] == [200, 200]
        assert [f.result().json()["results"][0]["labels"][0] for f in held] == ["a", "a"]
        wait_for(lambda: admission.in_flight == 0)
        assert post(url).status_code == 200


def test_a_request_past_its_deadline_gets_504_and_the_server_goes_on():
    app, net = gated_app(timeout_s=0.3)
    with threaded_server(app) as url:
        net.gate.clear()
        late = post(url)
        assert late.status_code == 504 and late.json()["code"] == "timeout"
        net.gate.set()
        assert post(url).status_code == 200


def _start_cli_server(model_path: Path, *flags: str) -> tuple[subprocess.Popen, str, list[str]]:
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(SRC), os.environ.get("PYTHONPATH", "")])}
    proc = subprocess.Popen(
        [sys.executable, "-m", "cnnkit", "serve", str(model_path), "--port", "0", "--no-access-log", *flags],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, env=env,
    )  # fmt: skip
    lines: list[str] = []
    found = threading.Event()

    def read() -> None:  # keep draining stderr so the server never blocks on a full pipe
        for line in proc.stderr:
            lines.append(line)
            if "running on http://" in line:
                found.set()

    threading.Thread(target=read, daemon=True).start()
    if not found.wait(60):
        proc.kill()
        raise AssertionError("server did not start:\n" + "".join(lines))
    url = re.search(r"(http://127\.0\.0\.1:\d+)", "".join(lines)).group(1)
    return proc, url, lines


def _rss_mb(pid: int) -> float:
    status = Path(f"/proc/{pid}/status").read_text()
    return int(re.search(r"VmRSS:\s+(\d+) kB", status).group(1)) / 1024


@pytest.mark.skipif(not Path("/proc/self/status").exists(), reason="reads memory use from /proc")
def test_cli_server_under_64_concurrent_clients_then_sigterm_drains(trained_seed, digits):
    _, model_path = trained_seed
    (_, _), (images, _) = digits
    body = digit_png(images, 0)
    # One process: its memory, its card's batching and refusals are the whole server's.
    proc, url, log = _start_cli_server(model_path, "--workers", "1", "--max-in-flight", "16", "--backend", "onnx")
    try:
        assert httpx.get(f"{url}/readyz").json() == {"status": "ready"}
        port = int(url.rsplit(":", 1)[1])
        statuses = asyncio.run(raw_burst(port, body, clients=64, per_client=2))
        rss_before = _rss_mb(proc.pid)
        for _ in range(2):
            statuses += asyncio.run(raw_burst(port, body, clients=64, per_client=2))
        rss_after = _rss_mb(proc.pid)
        assert len(statuses) == 3 * 64 * 2  # every request answered
        assert set(statuses) <= {200, 503} and statuses.count(200) >= 64  # no 500s; overflow is 503
        assert rss_after - rss_before < 50, (rss_before, rss_after)  # memory stable across 256 more requests
        card = httpx.get(f"{url}/v1/model").json()
        threads = int(re.search(r", (\d+) threads?$", card["runtime"]).group(1))
        assert card["backend"] == "onnx" and threads == _threads_per_worker(ServeConfig())  # cores - 1, at least 1
        batching = card["batching"]
        assert batching["largest"] > 1 and batching["refused"] == statuses.count(503)  # requests shared passes

        # SIGTERM while a request is half-sent: the server stops listening, waits for it, then exits 0.
        header = (
            f"POST /v1/predict HTTP/1.1\r\nHost: x\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
        )
        with socket.create_connection(("127.0.0.1", int(url.rsplit(":", 1)[1]))) as sock:
            sock.sendall(header.encode() + body[:10])
            time.sleep(0.2)
            proc.send_signal(signal.SIGTERM)
            wait_for(lambda: any("Shutting down" in line for line in log))
            sock.sendall(body[10:])
            sock.settimeout(30)
            answer = b""
            while b"\r\n\r\n" not in answer or not answer.rstrip().endswith(b"}"):
                chunk = sock.recv(65536)
                if not chunk:
                    break
                answer += chunk
        assert answer.startswith(b"HTTP/1.1 200"), answer[:200]
        assert b'"labels"' in answer
        assert proc.wait(timeout=60) == 0, "".join(log)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
