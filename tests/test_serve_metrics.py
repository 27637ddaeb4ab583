"""``GET /metrics``: scrape, send requests, scrape again: the counts moved by exactly those requests,
in one process and summed over ``cnnkit serve --workers 2``; and uvicorn runs uvloop and httptools."""

from __future__ import annotations

import asyncio
import os
import signal
import time
import warnings

import httpx
import numpy as np
import pytest
from prometheus_client.parser import text_string_to_metric_families

from _serve_util import GatedNet, png_bytes, raw_burst
from cnnkit.models import Model
from cnnkit.serve import ServeConfig, create_app
from cnnkit.serve.metrics import ENV_DIR, OTHER_ROUTE, multiprocess_dir
from cnnkit.serve.server import server_stack

with warnings.catch_warnings():
    warnings.simplefilter("ignore")  # starlette's note that TestClient will move to httpx2
    from fastapi.testclient import TestClient

IMAGE = png_bytes(np.zeros((8, 8), np.uint8))


def samples(text: str) -> dict[tuple[str, tuple[tuple[str, str], ...]], float]:
    """A scrape as {(sample name, sorted labels): value}, parsed by prometheus-client's own parser."""
    return {
        (s.name, tuple(sorted(s.labels.items()))): s.value
        for family in text_string_to_metric_families(text)
        for s in family.samples
    }


def value(scrape: dict, name: str, **labels: str) -> float:
    return scrape.get((name, tuple(sorted(labels.items()))), 0.0)


def requests_of(scrape: dict, route: str, status: str, method: str = "POST") -> float:
    return value(scrape, "cnnkit_http_requests_total", route=route, method=method, status=status)


def test_scrape_send_scrape_counts_exactly_the_requests_sent():
    model = Model(GatedNet(classes=3), input_shape=(8, 8, 1), name="gated", class_names=["a", "b", "c"])
    with TestClient(create_app(model, ServeConfig(backend="torch"))) as client:
        first = client.get("/metrics")
        assert first.status_code == 200 and first.headers["content-type"].startswith("text/plain; version=")
        before = samples(first.text)
        for _ in range(5):
            assert client.post("/v1/predict", content=IMAGE, headers={"content-type": "image/png"}).status_code == 200
        assert client.post("/v1/predict", content=b"text", headers={"content-type": "text/plain"}).status_code == 415
        assert client.get("/no/such/page").status_code == 404
        assert client.get("/v1/predict").status_code == 405  # a known route, the wrong method
        assert client.get("/inside").status_code == 200  # a route of an included router
        after = samples(client.get("/metrics").text)

    def moved(name: str, **labels: str) -> float:
        return value(after, name, **labels) - value(before, name, **labels)

    assert requests_of(after, "/v1/predict", "200") - requests_of(before, "/v1/predict", "200") == 5
    assert requests_of(after, "/v1/predict", "415") - requests_of(before, "/v1/predict", "415") == 1
    assert moved("cnnkit_http_requests_total", route=OTHER_ROUTE, method="GET", status="404") == 1
    assert moved("cnnkit_http_requests_total", route="/v1/predict", method="GET", status="405") == 1
    assert moved("cnnkit_http_requests_total", route="/metrics", method="GET", status="200") == 1  # the first scrape
    assert moved("cnnkit_http_requests_total", route="/inside", method="GET", status="200") == 1
    assert moved("cnnkit_http_request_duration_seconds_count", route="/v1/predict") == 7
    assert moved("cnnkit_http_request_duration_seconds_bucket", route="/v1/predict", le="+Inf") == 7
    # One image per request, one request at a time: five passes of one image (the warm-up is not counted).
    assert moved("cnnkit_batch_size_count") == 5 and moved("cnnkit_batch_size_sum") == 5
    assert value(before, "cnnkit_batch_size_count") == 0
    assert moved("cnnkit_batch_size_bucket", le="1.0") == 5
    assert value(after, "cnnkit_http_requests_in_flight") == 0  # the scrape does not count itself
    assert value(after, "cnnkit_model_info", model="gated", backend="torch", runtime=_runtime(after)) == 1


def _runtime(scrape: dict) -> str:
    (labels,) = [dict(labels) for name, labels in scrape if name == "cnnkit_model_info"]
    assert labels["runtime"].startswith("PyTorch ")
    return labels["runtime"]


def test_requests_in_flight_counts_a_request_waiting_on_the_model():
    net = GatedNet(classes=3)
    model = Model(net, input_shape=(8, 8, 1), name="gated", class_names=["a", "b", "c"])
    with TestClient(create_app(model, ServeConfig(backend="torch"))) as client:
        from concurrent.futures import ThreadPoolExecutor

        net.gate.clear()  # the model is stuck: the request stays in flight
        with ThreadPoolExecutor(1) as pool:
            held = pool.submit(client.post, "/v1/predict", content=IMAGE, headers={"content-type": "image/png"})
            for _ in range(500):
                if value(samples(client.get("/metrics").text), "cnnkit_http_requests_in_flight") == 1:
                    break
                asyncio.run(asyncio.sleep(0.01))
            else:
                raise AssertionError("the held request never showed in flight")
            net.gate.set()
            assert held.result().status_code == 200
        assert value(samples(client.get("/metrics").text), "cnnkit_http_requests_in_flight") == 0


def test_multiprocess_dir_is_made_for_the_run_and_removed(monkeypatch):
    monkeypatch.delenv(ENV_DIR, raising=False)
    with multiprocess_dir() as path:
        assert os.environ[ENV_DIR] == str(path) and path.is_dir()
    assert ENV_DIR not in os.environ and not path.exists()


def test_a_given_multiprocess_dir_loses_only_its_stale_metric_files(monkeypatch, tmp_path):
    (tmp_path / "counter_4242.db").write_bytes(b"from an earlier run")
    (tmp_path / "notes.txt").write_text("the user's")
    monkeypatch.setenv(ENV_DIR, str(tmp_path))
    with multiprocess_dir() as path:
        assert path == tmp_path and not (tmp_path / "counter_4242.db").exists()
    assert (tmp_path / "notes.txt").read_text() == "the user's" and os.environ[ENV_DIR] == str(tmp_path)


def test_uvicorn_runs_uvloop_and_httptools():
    assert server_stack() == {"loop": "uvloop", "http": "httptools"}  # uvicorn[standard] is a dependency


def test_workers_default_to_two_on_a_multicore_cpu_and_one_on_one_core_or_a_gpu(monkeypatch):
    import cnnkit.runtime
    from cnnkit.serve import server

    monkeypatch.setattr(server, "_cores", lambda: 2)
    assert server.resolve_workers(ServeConfig(backend="onnx")) == 2
    assert server.resolve_workers(ServeConfig(backend="torch", device="cpu")) == 2
    assert server.resolve_workers(ServeConfig(backend="onnx", workers=3)) == 3  # asked for: kept
    assert server._threads_per_worker(ServeConfig(backend="onnx")) == 1  # 2 cores / 2 workers - 1, at least 1
    monkeypatch.setattr(server, "_cores", lambda: 16)
    assert server._threads_per_worker(ServeConfig(backend="onnx")) == 7  # each worker's share, less its loop
    monkeypatch.setattr(cnnkit.runtime.torch.cuda, "is_available", lambda: True)
    monkeypatch.setattr(server, "surely_cpu_only", lambda: False)  # a GPU machine shows its driver
    assert server.resolve_workers(ServeConfig(backend="auto")) == 1  # auto on a GPU: torch there, one process
    monkeypatch.setattr(server, "_cores", lambda: 1)
    assert server.resolve_workers(ServeConfig(backend="onnx")) == 1


@pytest.mark.slow
@pytest.mark.skipif(not hasattr(signal, "SIGTERM") or os.name != "posix", reason="POSIX server processes")
@pytest.mark.parametrize("workers", ["2", "default"])
def test_two_workers_sum_their_counts(tmp_path, monkeypatch, workers):
    from cnnkit import models
    from test_serve_server import _start_cli_server

    model = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
    model.build((28, 28, 1))
    model.save(tmp_path / "model.safetensors")
    metrics_dir = tmp_path / "metrics"
    metrics_dir.mkdir()
    (metrics_dir / "counter_4242.db").write_bytes(b"stale: would break the sum if read")
    monkeypatch.setenv(ENV_DIR, str(metrics_dir))  # the subprocess inherits it: its files can be looked at
    if workers == "default" and len(os.sched_getaffinity(0)) < 2:
        pytest.skip("one core: cnnkit serve runs one worker by default")
    flags = ("--workers", workers) if workers != "default" else ()  # the default: 2 on this machine
    proc, url, log = _start_cli_server(tmp_path / "model.safetensors", *flags, "--backend", "torch")
    try:
        assert "event loop uvloop, HTTP parser httptools, 2 workers" in "".join(log)
        port = int(url.rsplit(":", 1)[1])
        body = png_bytes(np.zeros((28, 28), np.uint8))
        deadline = time.monotonic() + 120  # until both workers have started (one after the other; slow when busy)
        while "".join(log).count("Application startup complete") < 2:
            assert time.monotonic() < deadline and proc.poll() is None, "".join(log)
            time.sleep(0.1)
        pids = {p.stem.rsplit("_", 1)[1] for p in metrics_dir.glob("gauge_livesum_*.db")}
        assert len(pids) == 2, sorted(p.name for p in metrics_dir.iterdir())  # each worker keeps its own file
        before = samples(httpx.get(f"{url}/metrics").text)
        statuses = asyncio.run(raw_burst(port, body, clients=8, per_client=5))  # 8 connections: both workers serve
        after = samples(httpx.get(f"{url}/metrics").text)
        assert statuses == [200] * 40
        assert requests_of(after, "/v1/predict", "200") - requests_of(before, "/v1/predict", "200") == 40
        assert value(after, "cnnkit_batch_size_sum") - value(before, "cnnkit_batch_size_sum") == 40
        assert value(after, "cnnkit_http_requests_in_flight") == 0
        infos = [dict(labels) for name, labels in after if name == "cnnkit_model_info"]
        assert [(i["model"], i["backend"]) for i in infos] == [(model.name, "torch")]
        proc.send_signal(signal.SIGTERM)
        assert proc.wait(timeout=60) == 0, "".join(log)
        assert not list(metrics_dir.glob("gauge_livesum_*.db"))  # each worker marked itself dead at exit
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
