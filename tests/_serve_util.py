"""Helpers for the server tests: images in real formats, a model that waits, a server in a thread."""

from __future__ import annotations

import io
import struct
import threading
import time
import zlib
from collections.abc import Iterator
from contextlib import contextmanager

import numpy as np
import torch
from PIL import Image
from torch import nn


def png_bytes(array: np.ndarray) -> bytes:
    """An (H, W) or (H, W, 3) uint8 array as PNG bytes."""
    buffer = io.BytesIO()
    Image.fromarray(array).save(buffer, format="PNG")
    return buffer.getvalue()


def digit_png(images: np.ndarray, index: int) -> bytes:
    """Image ``index`` of the built-in digits ((N, 28, 28, 1) floats) as a grey PNG."""
    return png_bytes((images[index, ..., 0] * 255).round().astype(np.uint8))


def png_bomb(width: int = 20_000, height: int = 20_000) -> bytes:
    """A valid 1-bit PNG of width x height black pixels that compresses to a few tens of KB."""
    row = b"\x00" + bytes((width + 7) // 8)  # filter byte, then the packed bits
    idat = zlib.compress(row * height, 9)

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    header = struct.pack(">IIBBBBB", width, height, 1, 0, 0, 0, 0)  # 1-bit greyscale
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", header) + chunk(b"IDAT", idat) + chunk(b"IEND", b"")


class GatedNet(nn.Module):
    """Logits that favour class 0; every forward pass first waits for ``gate`` (a test holds it shut).

    A pass takes at least 5 ms, as a real model's might: over the batcher's ``inline_ms``, so the server
    runs it on its model thread and a held pass never stops the event loop.
    """

    def __init__(self, classes: int = 3) -> None:
        super().__init__()
        self.bias = nn.Parameter(torch.linspace(1.0, 0.0, classes))
        self.gate = threading.Event()
        self.gate.set()
        self.calls = 0

    def forward(self, x: torch.Tensor) -> torch.Tensor:  # (B, C, H, W) -> (B, classes)
        self.calls += 1
        if not self.gate.wait(timeout=20):
            raise RuntimeError("the test never opened the gate")
        time.sleep(0.005)
        return x.mean(dim=(1, 2, 3))[:, None] * 0 + self.bias


@contextmanager
def threaded_server(app) -> Iterator[str]:
    """Run ``app`` under a real uvicorn on 127.0.0.1 (a free port) in a thread; yield its base URL."""
    import uvicorn

    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    deadline = time.monotonic() + 60
    while not server.started:
        if not thread.is_alive() or time.monotonic() > deadline:
            raise RuntimeError("the test server did not start")
        time.sleep(0.02)
    port = server.servers[0].sockets[0].getsockname()[1]
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        server.should_exit = True
        thread.join(30)


async def raw_burst(port: int, body: bytes, clients: int, per_client: int) -> list[int]:
    """``clients`` concurrent keep-alive connections, each POSTing ``body`` ``per_client`` times; the statuses.

    A bare asyncio HTTP/1.1 client: far lighter than httpx, so on two shared cores the server,
    not the client, is what gets measured and stressed.
    """
    import asyncio
    import re

    request = (
        f"POST /v1/predict HTTP/1.1\r\nHost: 127.0.0.1\r\nContent-Type: image/png\r\nContent-Length: {len(body)}\r\n\r\n"
    ).encode() + body
    statuses: list[int] = []

    async def one_client() -> None:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
        try:
            for _ in range(per_client):
                writer.write(request)
                head = await reader.readuntil(b"\r\n\r\n")
                length = int(re.search(rb"content-length: (\d+)", head, re.IGNORECASE).group(1))
                await reader.readexactly(length)
                statuses.append(int(head.split(b" ", 2)[1]))
                if b"connection: close" in head.lower():
                    break
        finally:
            writer.close()

    await asyncio.wait_for(asyncio.gather(*(one_client() for _ in range(clients))), timeout=120)
    return statuses
