"""Inside-view latency: POST /v1/inside against /v1/predict and /v1/explain, and the page end to end.

A real ``cnnkit`` server (uvicorn on 127.0.0.1, in a thread, torch threads as ``cnnkit serve``
sets them: cores - 1) serves each model; one client sends the same PNG to the three endpoints in
turn, ``--repeats`` rounds, and the median (p50) and p90 of each are printed with the answer's
size. Then Debian's chromium (Playwright) loads ``/inside`` and uploads two images in turn: the
time from choosing a file to the page having drawn every layer (the page's own clock: upload,
server, PNG decoding, drawing) is the "new image updates everything" figure.

    python benchmarks/inside_bench.py                  # the article's CNN, ResNet-18, ResNet-50
    python benchmarks/inside_bench.py --models seed --repeats 50
"""

from __future__ import annotations

import argparse
import io
import shutil
import statistics
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parent))
from _common import SRC, machine  # noqa: E402

sys.path.insert(0, str(SRC))

MODELS = {"seed": ("seed", 28, 1), "resnet18": ("resnet18_small", 32, 3), "resnet50": ("resnet50", 224, 3)}


def build(key: str):
    """The article's CNN trained for one epoch on digits (maps with structure), or an untrained zoo model."""
    from cnnkit import datasets, models, seed_everything

    name, size, channels = MODELS[key]
    seed_everything(0)
    model = models.create_model(name, num_classes=10, in_channels=channels, input_size=size)
    model.class_names = [str(i) for i in range(10)]
    if key == "seed":
        (x, y), _ = datasets.load_data("digits")
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        model.fit(x, y, epochs=1, batch_size=64, verbose=0)
    return model


def images(key: str) -> list[bytes]:
    """Two inputs of the model's kind: digits for the article's CNN, photos (scikit-image's) otherwise."""
    from PIL import Image

    _, size, _ = MODELS[key]
    if key == "seed":
        from cnnkit import datasets

        _, (test, _) = datasets.load_data("digits")
        pictures = [Image.fromarray((test[i, ..., 0] * 255).round().astype(np.uint8)) for i in (3, 8)]
    else:
        from skimage import data

        pictures = [Image.fromarray(data.astronaut()), Image.fromarray(data.chelsea())]
    out = []
    for picture in pictures:
        buffer = io.BytesIO()
        picture.resize((size, size)).save(buffer, format="PNG")
        out.append(buffer.getvalue())
    return out


@contextmanager
def serving(model) -> Iterator[str]:
    import os

    import uvicorn

    from cnnkit.serve import ServeConfig, create_app

    threads = max(1, (os.cpu_count() or 1) - 1)  # what `cnnkit serve` picks for one worker
    app = create_app(model, ServeConfig(threads=threads, access_log=False, timeout_s=120))
    server = uvicorn.Server(uvicorn.Config(app, host="127.0.0.1", port=0, log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    while not server.started:
        time.sleep(0.02)
    try:
        yield f"http://127.0.0.1:{server.servers[0].sockets[0].getsockname()[1]}"
    finally:
        server.should_exit = True
        thread.join(30)


def endpoints(url: str, pngs: list[bytes], repeats: int) -> dict[str, tuple[list[float], int]]:
    """Per endpoint: the latencies (ms) of ``repeats`` sequential requests, and the answer's size."""
    import httpx

    paths = {"predict": "/v1/predict", "inside": "/v1/inside", "explain": "/v1/explain"}
    results: dict[str, tuple[list[float], int]] = {name: ([], 0) for name in paths}
    with httpx.Client(base_url=url, timeout=120) as client:
        for round_ in range(repeats + 2):  # two warm-up rounds
            for name, path in paths.items():
                png = pngs[round_ % len(pngs)]
                started = time.perf_counter()
                response = client.post(path, content=png, headers={"content-type": "image/png"})
                elapsed = (time.perf_counter() - started) * 1000
                response.raise_for_status()
                if round_ >= 2:
                    results[name][0].append(elapsed)
                    results[name] = (results[name][0], len(response.content))
    return results


def page(url: str, pngs: list[bytes], repeats: int, tmp: Path) -> list[float] | None:
    """The page's own time from choosing a file to every layer drawn, ``repeats`` uploads (alternating images)."""
    chromium = shutil.which("chromium")
    if chromium is None:
        return None
    from playwright.sync_api import sync_playwright

    files = []
    for i, png in enumerate(pngs):
        files.append(tmp / f"image{i}.png")
        files[-1].write_bytes(png)
    args = ["--no-sandbox", "--disable-gpu", "--disable-background-networking", "--disable-component-update",
            "--disable-sync", "--no-first-run"]  # fmt: skip
    times = []
    with sync_playwright() as p:
        browser = p.chromium.launch(executable_path=chromium, args=args)
        view = browser.new_page(viewport={"width": 1366, "height": 768})
        view.goto(url + "/inside")
        view.wait_for_selector("body[data-state=idle]")
        for i in range(repeats + 2):
            view.set_input_files("#file", str(files[i % len(files)]))
            view.wait_for_selector("body[data-state=ready]")
            if i >= 2:
                times.append(float(view.get_attribute("body", "data-ms")))
            view.evaluate("document.body.dataset.state = 'idle'")
        browser.close()
    return times


def p(values: list[float], q: float) -> float:
    return float(np.percentile(values, q))


def main() -> None:
    import tempfile

    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--models", default="seed,resnet18,resnet50")
    parser.add_argument("--repeats", type=int, default=30)
    parser.add_argument("--page-repeats", type=int, default=15)
    args = parser.parse_args()
    print(machine())
    for key in args.models.split(","):
        model = build(key)
        pngs = images(key)
        name, size, channels = MODELS[key]
        print(f"\n{name} ({model.count_params():,} parameters, input {size}x{size}x{channels}):")
        with serving(model) as url, tempfile.TemporaryDirectory() as tmp:
            for endpoint, (latencies, size_bytes) in endpoints(url, pngs, args.repeats).items():
                print(f"  POST /v1/{endpoint:8s} p50 {p(latencies, 50):7.1f} ms  p90 {p(latencies, 90):7.1f} ms  "
                      f"answer {size_bytes / 1024:7.1f} KiB")  # fmt: skip
            shown = page(url, pngs, args.page_repeats if key != "resnet50" else 5, Path(tmp))
            if shown:
                print(f"  page /inside, new image to every layer drawn: p50 {statistics.median(shown):.0f} ms, "
                      f"max {max(shown):.0f} ms over {len(shown)} uploads")  # fmt: skip


if __name__ == "__main__":
    main()
