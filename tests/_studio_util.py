"""A tiny studio project built in the test (two classes of small PNGs drawn with PIL) and a client for it."""

from __future__ import annotations

import io
from pathlib import Path

import numpy as np
from PIL import Image

TOKEN = "test-token-123"
BASE = "http://127.0.0.1"


def stripes_png(vertical: bool, seed: int, size: int = 20) -> bytes:
    """A grey image of stripes (vertical or horizontal) with noise: two classes a CNN tells apart in an epoch."""
    rng = np.random.default_rng(seed)
    line = (np.arange(size) // 2 % 2).astype(np.float32)
    pixels = np.tile(line, (size, 1)) if vertical else np.tile(line[:, None], (1, size))
    pixels = np.clip(pixels * 0.8 + rng.normal(0, 0.1, (size, size)), 0, 1)
    out = io.BytesIO()
    Image.fromarray((pixels * 255).astype(np.uint8), "L").save(out, format="PNG")
    return out.getvalue()


def make_project(root: Path, per_class: int = 12) -> Path:
    """``root/vertical/*.png`` and ``root/horizontal/*.png``, written as a user would."""
    for name, vertical in (("vertical", True), ("horizontal", False)):
        (root / name).mkdir(parents=True)
        for i in range(per_class):
            (root / name / f"{name}-{i:02d}.png").write_bytes(stripes_png(vertical, i + 100 * vertical))
    return root


def client(app, token: str | None = TOKEN):  # noqa: ANN001, ANN201 (a starlette TestClient)
    from fastapi.testclient import TestClient

    headers = {"x-studio-token": token} if token else {}
    return TestClient(app, base_url=BASE, headers=headers)


def files_of(root: Path) -> set[str]:
    """Every file under ``root`` (project paths), for "nothing else was written" checks."""
    return {p.relative_to(root).as_posix() for p in root.rglob("*") if p.is_file()}
