"""The server's fast paths answer what the plain paths answer: small uploads decoded on the event loop
give the same input as a worker thread's decoding, big ones still go to a thread, and top-k through
Python lists gives the labels and probabilities of the tensor path."""

from __future__ import annotations

import asyncio

import numpy as np
import pytest
import torch

import cnnkit.serve.service as service_module
from _serve_util import png_bomb, png_bytes
from cnnkit import models
from cnnkit.serve import ServeConfig
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
