"""What a user would otherwise run to serve the same model: the anchors of ``serve_bench.py``.

- ``fastapi``: a plain FastAPI + uvicorn endpoint as its tutorials write one: the upload as an
  ``UploadFile``, decoded with Pillow, one forward pass per request under ``torch.no_grad()``,
  the top 5 classes as JSON.
- ``litserve``: LitServe with batching (``max_batch_size=32``, ``batch_timeout=0.002``), its
  decoding and model in its inference worker process, on the CPU.

Both load the model with :func:`cnnkit.models.load_model` (a ``torch.nn.Module`` whose forward
pass normalizes as training did), so all three servers answer the same probabilities for the
same PNG. Each is started as ``python benchmarks/_serve_anchors.py KIND MODEL THREADS`` and prints
its port on stdout once it answers. THREADS is torch's intra-op threads (``torch.set_num_threads``;
0 leaves torch's default, one per core, what a user's script gets): ``serve_bench.py`` gives the
anchors cnnkit's own count by default, so the comparison is of the serving, not of thread contention.
"""

# No `from __future__ import annotations`: FastAPI and LitServe read these signatures' types at run time.

import io
import os
import socket
import sys
import threading
import time
import urllib.request

import numpy as np
import torch
from PIL import Image

TOP_K = 5


def load(path: str):
    """The model as a plain ``nn.Module`` in eval mode, its (H, W, C) and its class names."""
    from cnnkit.models import load_model

    threads = int(os.environ.get("ANCHOR_THREADS", "0"))  # set by main(), read in LitServe's worker process too
    if threads:
        torch.set_num_threads(threads)

    model = load_model(path).eval()
    return model, tuple(model.image_shape), list(model.class_names)


def to_tensor(data: bytes, shape: tuple[int, int, int]) -> torch.Tensor:
    """PNG bytes -> a ``(C, H, W)`` float tensor in [0, 1], with Pillow, as a user writes it."""
    height, width, channels = shape
    image = Image.open(io.BytesIO(data)).convert("L" if channels == 1 else "RGB").resize((width, height))
    array = np.asarray(image, dtype=np.float32) / 255.0
    return torch.from_numpy(array).unsqueeze(0) if channels == 1 else torch.from_numpy(array).permute(2, 0, 1)


def top_k(probabilities: torch.Tensor, classes: list[str]) -> dict:
    values, indices = probabilities.topk(TOP_K)
    return {"labels": [classes[int(i)] for i in indices], "probabilities": [round(float(p), 6) for p in values]}


def fastapi_app(path: str):
    from fastapi import FastAPI, UploadFile

    model, shape, classes = load(path)
    app = FastAPI()

    @app.post("/predict")
    async def predict(content: UploadFile) -> dict:
        x = to_tensor(await content.read(), shape).unsqueeze(0)  # (1, C, H, W)
        with torch.no_grad():
            probabilities = torch.softmax(model(x), dim=1)[0]
        return top_k(probabilities, classes)

    return app


try:  # LitServe's worker processes are spawned: its API class must be importable by name, from here
    import litserve as ls
except ImportError:  # the fastapi anchor still runs
    ls = None

if ls is not None:
    from fastapi import Request

    class CnnAPI(ls.LitAPI):
        def __init__(self, path: str, **options) -> None:
            super().__init__(**options)
            self.path = path

        def setup(self, device: str) -> None:
            self.model, self.shape, self.classes = load(self.path)

        def decode_request(self, request: Request) -> torch.Tensor:
            return to_tensor(request["content"].file.read(), self.shape)  # (C, H, W)

        def batch(self, inputs: list[torch.Tensor]) -> torch.Tensor:
            return torch.stack(inputs)  # (B, C, H, W)

        def predict(self, x: torch.Tensor) -> torch.Tensor:
            with torch.no_grad():
                return torch.softmax(self.model(x), dim=1)

        def unbatch(self, output: torch.Tensor) -> list[torch.Tensor]:
            return list(output)

        def encode_response(self, probabilities: torch.Tensor) -> dict:
            return top_k(probabilities, self.classes)


def litserve_server(path: str):
    if ls is None:
        raise SystemExit("the litserve anchor needs litserve: pip install litserve")
    api = CnnAPI(path, max_batch_size=32, batch_timeout=0.002)
    return ls.LitServer(api, accelerator="cpu", workers_per_device=1, timeout=120)


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def announce_when_up(port: int) -> None:
    """Print the port once the server answers (LitServe's /health says its workers are ready)."""
    while True:
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/health", timeout=2) as answer:
                if answer.status == 200:
                    break
        except OSError:
            pass
        time.sleep(0.1)
    print(port, flush=True)


def main() -> None:
    kind, path, threads = sys.argv[1], sys.argv[2], sys.argv[3]
    os.environ["ANCHOR_THREADS"] = threads
    port = free_port()
    threading.Thread(target=announce_when_up, args=(port,), daemon=True).start()
    if kind == "fastapi":
        import uvicorn

        app = fastapi_app(path)
        app.get("/health")(lambda: "ok")
        uvicorn.run(app, host="127.0.0.1", port=port, log_level="warning", access_log=False)
    elif kind == "litserve":
        litserve_server(path).run(host="127.0.0.1", port=port, log_level="warning", generate_client_file=False)
    else:
        raise SystemExit(f"unknown anchor {kind!r}")


if __name__ == "__main__":
    main()
