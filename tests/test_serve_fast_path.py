"""The server's fast paths answer what the plain paths answer: small uploads decoded on the event loop
give the same input as a worker thread's decoding, big ones still go to a thread, top-k through
Python lists gives the labels and probabilities of the tensor path, and POST /v1/predict answered
before FastAPI's router gives the answers and errors of the FastAPI route."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

import cnnkit.serve.service as service_module
from _serve_util import png_bomb, png_bytes
from cnnkit import models
from cnnkit.serve import ServeConfig, create_app
from cnnkit.serve.fast_path import plain_query
from cnnkit.serve.limits import ApiError
from cnnkit.serve.service import ModelService
from cnnkit.serve.uploads import Upload


@pytest.fixture(scope="module")
def service():
    model = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
    model.build((28, 28, 1))
    model.class_names = [f"c{i}" for i in range(10)]
    service = ModelService.load(model, ServeConfig(backend="torch"))
    service._decode_slots = asyncio.Semaphore(2)  # what start() makes; no model thread needed here
    return service


def threads_used(monkeypatch) -> list[int]:
    """Count the hand-overs to a worker thread that prepare_all makes."""
    calls: list[int] = []
    real = service_module.anyio.to_thread.run_sync

    async def counted(fn, *args, **kwargs):
        calls.append(1)
        return await real(fn, *args, **kwargs)

    monkeypatch.setattr(service_module.anyio.to_thread, "run_sync", counted)
    return calls


def test_a_small_upload_is_decoded_on_the_loop_to_the_same_input(service, monkeypatch, rng):
    uploads = [Upload(f"u{i}.png", png_bytes((rng.random((40, 30)) * 255).astype(np.uint8))) for i in range(3)]
    calls = threads_used(monkeypatch)
    inline, sizes = asyncio.run(service.prepare_all(uploads))
    assert calls == []  # no thread: decoded on the event loop
    monkeypatch.setattr(service_module, "INLINE_BYTES", 0)  # the plain path: every upload to a worker thread
    threaded, threaded_sizes = asyncio.run(service.prepare_all(uploads))
    assert calls == [1]
    assert (
        inline.shape == (3, 1, 28, 28) and torch.equal(inline, threaded) and sizes == threaded_sizes == [(30, 40)] * 3
    )


def test_a_big_image_is_decoded_in_a_worker_thread(service, monkeypatch):
    calls = threads_used(monkeypatch)
    small_file_big_image = Upload("wide.png", png_bytes(np.zeros((300, 300), np.uint8)))  # a few hundred bytes
    assert len(small_file_big_image.data) < service_module.INLINE_BYTES
    asyncio.run(service.prepare_all([small_file_big_image]))
    assert calls == [1]  # its header says 90,000 pixels: not on the event loop


def test_a_bad_upload_on_the_fast_path_gets_the_same_error(service):
    with pytest.raises(ApiError) as not_image:
        asyncio.run(service.prepare_all([Upload("x.png", b"not an image")]))
    assert not_image.value.status == 415
    service.config = ServeConfig(backend="torch", max_pixels=1000)
    try:
        with pytest.raises(ApiError) as bomb:
            asyncio.run(service.prepare_all([Upload("bomb.png", png_bomb(100, 100))]))
    finally:
        service.config = ServeConfig(backend="torch")
    assert bomb.value.status == 413


def test_top_k_through_lists_matches_the_tensor_path(service, rng):
    probabilities = torch.softmax(torch.from_numpy(rng.normal(size=(4, 10)).astype(np.float32)), dim=1)
    top = probabilities.topk(3, dim=1)
    expected = [
        ([service.class_names[int(i)] for i in indices], [round(float(p), 6) for p in values])
        for values, indices in zip(top.values, top.indices)
    ]
    assert service.top_k(probabilities, 3) == expected


# -- POST /v1/predict without FastAPI's machinery (cnnkit.serve.fast_path) ------------------------


@pytest.mark.parametrize(
    "query, read",
    [
        (b"", (5, False)),
        (b"top_k=3", (3, False)),
        (b"top_k=007&include_input=true", (7, True)),
        (b"include_input=0&other=x&top_k=2&", (2, False)),  # unknown parameters ignored, as FastAPI does
        (b"include_input=TRUE", (5, True)),
        (b"top_k=0", None),  # FastAPI's ge=1 message
        (b"top_k=-1", None),
        (b"top_k=3.0", None),
        (b"top_k=1234567", None),
        (b"top_k=", None),
        (b"top_k", None),
        (b"top_k=2&top_k=3", None),  # repeated
        (b"top%5Fk=3", None),  # percent-encoded: FastAPI decodes it
        (b"top_k=+3", None),
        (b"include_input=yes", None),  # pydantic reads it; the fast path leaves it to pydantic
        (b"include_input=maybe", None),
    ],
)
def test_plain_query_reads_what_fastapi_reads_or_leaves_it_to_fastapi(query, read):
    assert plain_query(query) == read


@pytest.fixture(scope="module")
def app_client():
    from fastapi.testclient import TestClient

    model = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
    model.build((28, 28, 1))
    model.class_names = [f"c{i}" for i in range(10)]
    app = create_app(model, ServeConfig(backend="torch", max_top_k=8))
    with TestClient(app) as client:
        yield app, client


def router_calls(app) -> list[str]:
    """The requests that reached FastAPI's router (the fast path's never do)."""
    calls: list[str] = []
    inner = app.router.middleware_stack

    async def counted(scope, receive, send):
        calls.append(scope["path"])
        await inner(scope, receive, send)

    app.router.middleware_stack = counted
    return calls


def without_timing(response) -> tuple[int, str, dict]:
    body = response.json()
    body.pop("timing_ms", None)
    return response.status_code, response.headers["content-type"], body


@pytest.mark.parametrize(
    "plain, routed",  # the same request, a query the fast path reads and one only FastAPI reads
    [("", "top_k=%35"), ("top_k=3&include_input=true", "top_k=%33&include_input=yes"), ("top_k=9", "top_k=%39")],
)
@pytest.mark.parametrize("body", ["png", "form", "not an image", "empty", "text body"])
def test_the_fast_path_answers_what_the_fastapi_route_answers(app_client, rng, plain, routed, body):
    app, client = app_client
    png = png_bytes((rng.random((40, 30)) * 255).astype(np.uint8))
    requests = {
        "png": {"content": png, "headers": {"content-type": "image/png"}},
        "form": {"files": [("files", ("a.png", png, "image/png")), ("files", ("b.png", png, "image/png"))]},
        "not an image": {"content": b"not an image", "headers": {"content-type": "image/png"}},
        "empty": {"content": b"", "headers": {"content-type": "image/png"}},
        "text body": {"content": b"hello", "headers": {"content-type": "text/plain"}},
    }
    calls = router_calls(app)
    fast = client.post(f"/v1/predict?{plain}", **requests[body])
    assert calls == []  # answered before FastAPI's router
    routed_answer = client.post(f"/v1/predict?{routed}", **requests[body])
    assert calls == ["/v1/predict"]
    assert without_timing(fast) == without_timing(routed_answer)
    if fast.status_code == 200:
        assert set(fast.json()["timing_ms"]) == set(routed_answer.json()["timing_ms"])


def test_queries_the_fast_path_leaves_get_fastapis_own_errors(app_client):
    app, client = app_client
    png = png_bytes(np.zeros((28, 28), np.uint8))
    calls = router_calls(app)
    answer = client.post("/v1/predict?top_k=0", content=png, headers={"content-type": "image/png"})
    assert calls == ["/v1/predict"]
    assert answer.status_code == 422 and answer.json()["code"] == "bad_parameter"
    assert answer.json()["detail"].startswith("top_k: Input should be greater than or equal to 1")


def test_a_bug_behind_the_fast_path_is_a_500_as_on_any_route(app_client, monkeypatch):
    from fastapi.testclient import TestClient

    app, _ = app_client

    async def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(app.state.service, "predict", broken)
    client = TestClient(app, raise_server_exceptions=False)
    png = png_bytes(np.zeros((28, 28), np.uint8))
    for query in ("", "top_k=%35"):  # the fast path, then the FastAPI route
        answer = client.post(f"/v1/predict?{query}", content=png, headers={"content-type": "image/png"})
        assert answer.status_code == 500 and answer.json()["code"] == "internal_error"
