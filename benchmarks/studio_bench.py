"""cnnkit studio on a 20,000-image project: first listing, first page of thumbnails, memory, and whether the
API stays responsive while a training runs.

Builds PROJECT with 10 classes of small PNGs (made once, reused), starts ``cnnkit studio PROJECT`` as a user
would (its own process, a real uvicorn), and measures over HTTP:

- the first ``GET /api/project`` (every class listed and counted), cold and again (cached);
- the first page of thumbnails: ``GET /api/classes/C/images?limit=60`` and its 60 thumbnails, made on first
  request (cold) and read from the cache (warm);
- the server's resident memory (VmRSS) after those, and at the end;
- the latency of ``GET /api/project`` and of a thumbnail while idle and while a training job runs in the
  worker process (median and max of the samples, and their ratio).

    python benchmarks/studio_bench.py [--images 20000] [--project /tmp/studio-bench]
"""

from __future__ import annotations

import argparse
import io
import os
import re
import statistics
import subprocess
import sys
import time
from pathlib import Path

import httpx
import numpy as np
from PIL import Image

TOKEN = "bench-token"


def make_project(root: Path, images: int, classes: int = 10) -> None:
    if root.exists() and sum(1 for _ in root.glob("c*/*.png")) == images:
        return
    rng = np.random.default_rng(0)
    for c in range(classes):
        (root / f"c{c}").mkdir(parents=True, exist_ok=True)
    for i in range(images):
        pixels = (rng.random((32, 32)) * 255).astype(np.uint8)
        pixels[:, (i % classes) * 3 : (i % classes) * 3 + 3] = 255  # a class-dependent stripe
        out = io.BytesIO()
        Image.fromarray(pixels, "L").save(out, format="PNG")
        (root / f"c{i % classes}" / f"img-{i:06d}.png").write_bytes(out.getvalue())


def rss_mib(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def timed(client: httpx.Client, path: str, **kwargs) -> float:
    started = time.perf_counter()
    r = client.get(path, **kwargs)
    r.raise_for_status()
    return time.perf_counter() - started


def first_page(client: httpx.Client, name: str) -> tuple[float, list[str]]:
    started = time.perf_counter()
    page = client.get(f"/api/classes/{name}/images", params={"limit": 60}).json()["images"]
    for path in page:
        client.get("/api/thumb", params={"path": path}).raise_for_status()
    return time.perf_counter() - started, page


def latencies(client: httpx.Client, thumb: str, seconds: float, until=None) -> list[float]:  # noqa: ANN001
    samples, end = [], time.monotonic() + seconds
    while time.monotonic() < end and (until is None or until()):
        samples.append(timed(client, "/api/project"))
        samples.append(timed(client, "/api/thumb", params={"path": thumb}))
        time.sleep(0.05)
    return samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=20_000)
    parser.add_argument("--project", default="/tmp/studio-bench")
    parser.add_argument("--train-seconds", type=float, default=40, help="the training job's --time budget")
    args = parser.parse_args()
    root = Path(args.project)
    started = time.perf_counter()
    make_project(root, args.images)
    print(f"project: {root}, {args.images:,} PNGs of 32x32 in 10 classes (made/checked in "
          f"{time.perf_counter() - started:.1f}s)")  # fmt: skip
    state = root / ".cnnkit-studio"
    if state.exists():  # a cold start: no thumbnails, no jobs from an earlier run
        subprocess.run(["rm", "-rf", str(state)], check=True)
    env = {**os.environ, "CNNKIT_STUDIO_TOKEN": TOKEN}
    server = subprocess.Popen([sys.executable, "-m", "cnnkit", "studio", str(root)], stdout=subprocess.PIPE,
                              text=True, env=env)  # fmt: skip
    try:
        url = None
        while url is None:
            line = server.stdout.readline()
            if not line:
                raise SystemExit("the studio did not start")
            match = re.search(r"(http://\S+)/\?token=", line)
            url = match.group(1) if match else None
        with httpx.Client(base_url=url, headers={"x-studio-token": TOKEN}, timeout=120) as client:
            print(f"server RSS at start: {rss_mib(server.pid):.0f} MiB")
            cold = timed(client, "/api/project")
            warm = timed(client, "/api/project")
            print(f"first listing (GET /api/project, {args.images:,} images counted): cold {cold * 1000:.0f} ms, "
                  f"again {warm * 1000:.1f} ms")  # fmt: skip
            cold_page, page = first_page(client, "c0")
            warm_page, _ = first_page(client, "c0")
            first_thumb = timed(client, "/api/thumb", params={"path": page[0]})
            print(f"first page of 60 thumbnails (listing + 60 thumbnails, one by one): cold {cold_page * 1000:.0f} ms "
                  f"({cold_page / 60 * 1000:.1f} ms each), cached {warm_page * 1000:.0f} ms; one cached thumbnail "
                  f"{first_thumb * 1000:.1f} ms")  # fmt: skip
            print(f"server RSS after listing and thumbnails: {rss_mib(server.pid):.0f} MiB")
            idle = latencies(client, page[0], 5)
            options = {"model": "seed_small", "epochs": 1, "image_size": 20, "time": args.train_seconds,
                       "report": False}  # fmt: skip
            job = client.post("/api/jobs", json={"options": options}).json()
            print(f"training job: {job['command']}")

            def running() -> bool:
                return client.get(f"/api/jobs/{job['id']}").json()["status"] in ("queued", "running")

            busy = latencies(client, page[0], 600, until=running)
            final = client.get(f"/api/jobs/{job['id']}").json()
            print(f"job {final['status']} after {final['ended'] - final['started']:.0f}s "
                  f"({len(final['history'])} epoch(s))")  # fmt: skip
            for label, samples in (("idle", idle), ("during training", busy)):
                print(f"API latency {label}: median {statistics.median(samples) * 1000:.1f} ms, "
                      f"max {max(samples) * 1000:.0f} ms over {len(samples)} requests")  # fmt: skip
            ratio = statistics.median(busy) / statistics.median(idle)
            print(f"median latency during training / idle: {ratio:.2f}x")
            print(f"server RSS at the end: {rss_mib(server.pid):.0f} MiB (the training ran in its own process)")
    finally:
        server.terminate()
        server.wait(30)


if __name__ == "__main__":
    main()
