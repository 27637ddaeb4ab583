"""What ``cnnkit serve`` can be told: where to listen, how to batch, and the limits on a request."""

from __future__ import annotations

import dataclasses
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cnnkit.errors import ConfigError
from cnnkit.runs import resolve_model

BACKENDS = ("auto", "torch", "onnx")  # as cnnkit.inference.BACKENDS, without importing torch here

__all__ = ["ServeConfig", "resolve_served_model"]


@dataclass(frozen=True)
class ServeConfig:
    """Server settings; the defaults are what ``cnnkit serve MODEL`` uses.

    Attributes:
        host: interface to bind; loopback by default so nothing is exposed by accident.
        port: TCP port.
        workers: server processes, each with its own copy of the model and its own batcher (None:
            ``cnnkit serve`` decides, :func:`cnnkit.serve.server.resolve_workers`: 2 on a CPU with at
            least 2 cores, else 1).
        backend: what runs the forward passes (see :func:`cnnkit.inference.load_predictor`): ``auto``
            (ONNX Runtime on a CPU, exported, checked and cached next to the model file on first use;
            PyTorch on a GPU), ``torch`` or ``onnx``. Heat maps (``/v1/explain``) always use PyTorch.
        threads: compute threads per process, for PyTorch and ONNX Runtime alike (None: leave their
            defaults; ``cnnkit serve`` then uses each worker's share of the cores less one, which its
            event loop and decoding need).
        max_batch: most images the model sees in one forward pass.
        batch_wait_ms: how long a batch waits for more requests, only while other requests are on their way.
        inline_ms: a lone one-image request runs its forward pass on the event loop, skipping the two
            thread hand-offs to the model thread (~0.2 ms), while the model's last one-image pass took
            less than this (0: never). Such a pass cannot be cut off at ``timeout_s`` while it runs.
        max_in_flight: requests admitted at once per process; the next one gets 503 at once.
        timeout_s: deadline for one request, from its first byte to its answer (504 past it).
        max_body_bytes: largest request body (413), checked before the body is read.
        max_pixels: largest decoded image, width x height (413), checked before it is decoded.
        max_images: most images in one multipart request (413).
        max_top_k: largest ``top_k`` a request may ask for.
        drain_timeout_s: on SIGTERM, how long in-flight requests get to finish.
        access_log: log one line per request.
        device: where the model runs: auto (CUDA, then MPS, then CPU), cpu, cuda, cuda:N.
    """

    host: str = "127.0.0.1"
    port: int = 8000
    workers: int | None = None
    backend: str = "auto"
    threads: int | None = None
    max_batch: int = 32
    batch_wait_ms: float = 2.0
    inline_ms: float = 1.0
    max_in_flight: int = 64
    timeout_s: float = 10.0
    max_body_bytes: int = 16 * 2**20
    max_pixels: int = 12_000_000
    max_images: int = 16
    max_top_k: int = 100
    drain_timeout_s: float = 30.0
    access_log: bool = True
    device: str = "auto"

    def __post_init__(self) -> None:
        positive = ("max_batch", "max_in_flight", "max_body_bytes", "max_pixels", "max_images", "max_top_k")
        for name in positive:
            if getattr(self, name) < 1:
                raise ConfigError(f"{name.replace('_', '-')} must be at least 1, got {getattr(self, name)}")
        if self.workers is not None and self.workers < 1:
            raise ConfigError(f"workers must be at least 1, got {self.workers}")
        if self.backend not in BACKENDS:
            raise ConfigError(f"unknown backend {self.backend!r}; choose from {', '.join(BACKENDS)}")
        if self.backend == "onnx" and self.device not in ("auto", "cpu"):
            raise ConfigError(f"the onnx backend runs on the CPU, not {self.device}; use --backend torch for the GPU")
        if self.threads is not None and self.threads < 1:
            raise ConfigError(f"threads must be at least 1, got {self.threads}")
        if not 0 <= self.port <= 65535:
            raise ConfigError(f"port must be 0..65535, got {self.port}")
        for name in ("batch_wait_ms", "inline_ms", "timeout_s", "drain_timeout_s"):
            if getattr(self, name) < 0 or (name == "timeout_s" and self.timeout_s == 0):
                raise ConfigError(f"{name.replace('_', '-')} must be positive, got {getattr(self, name)}")

    def to_dict(self) -> dict[str, Any]:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, values: dict[str, Any]) -> ServeConfig:
        known = {f.name for f in dataclasses.fields(cls)}
        unknown = set(values) - known
        if unknown:
            raise ConfigError(f"unknown serve settings: {', '.join(sorted(unknown))}")
        return cls(**values)


def resolve_served_model(model: str | os.PathLike) -> Path:
    """The model file a server serves: a model file or run folder (an export has no gradients for heat maps)."""
    return resolve_model(model).model_file(
        "serve the .safetensors model file (heat maps need it); "
        "--backend onnx exports, checks and caches the ONNX file next to it"
    )
