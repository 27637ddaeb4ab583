"""Data loading side by side: decoding threads, JPEG draft decoding, near-duplicate search, memory vs streaming.

Run: ``PYTHONPATH=src python benchmarks/data_loading.py [--photos 400]``. Writes synthetic
photos to a temporary folder, then times each pair of ways in one run, three times each,
and prints medians and ratios (this machine's load is noisy: compare ratios, not seconds).
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import tempfile
import time
from pathlib import Path

import numpy as np
import torch
from PIL import Image

from cnnkit.data.check import near_duplicate_pairs
from cnnkit.data.decode import open_image
from cnnkit.data.prepare import open_data
from cnnkit.data.scan import scan_files
from cnnkit.data.transforms import image_to_input, load_input


def median_time(fn, repeats: int = 3) -> float:
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return statistics.median(times)


def write_photos(folder: Path, n: int, size: tuple[int, int]) -> list[Path]:
    rng = np.random.default_rng(0)
    paths = []
    for i in range(n):
        cls = folder / f"class_{i % 2}"
        cls.mkdir(parents=True, exist_ok=True)
        small = rng.integers(0, 256, (12, 16, 3), dtype=np.uint8)
        img = Image.fromarray(small).resize(size, Image.Resampling.BICUBIC)
        paths.append(cls / f"{i}.jpg")
        img.save(paths[-1], quality=90)
    return paths


def epoch(model: torch.nn.Module, batches) -> None:  # noqa: ANN001
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    for x, y in batches:
        loss = torch.nn.functional.cross_entropy(model(x), y)
        opt.zero_grad()
        loss.backward()
        opt.step()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=400)
    args = parser.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python "
          f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = write_photos(tmp / "vga", args.photos, (640, 480))
        big = write_photos(tmp / "big", 12, (3000, 2000))

        one = median_time(lambda: scan_files(photos, (64, 64, 3), workers=1))
        two = median_time(lambda: scan_files(photos, (64, 64, 3), workers=2))
        print(f"scan {len(photos)} 640x480 JPEGs to 64x64: 1 thread {len(photos) / one:.0f}/s, "
              f"2 threads {len(photos) / two:.0f}/s ({one / two:.2f}x)")  # fmt: skip

        full = median_time(lambda: [image_to_input(open_image(p).image, (64, 64, 3)) for p in big])
        draft = median_time(lambda: [load_input(p, (64, 64, 3)) for p in big])
        print(f"12 photos of 3000x2000 to 64x64: full decode {full / 12 * 1e3:.0f} ms each, "
              f"draft decode {draft / 12 * 1e3:.0f} ms each ({full / draft:.1f}x)")  # fmt: skip

        rng = np.random.default_rng(1)
        hashes = rng.integers(0, 2**63, 10_000, dtype=np.uint64)
        banded = median_time(lambda: near_duplicate_pairs(hashes, 4), repeats=1)
        bits = np.unpackbits(hashes.view(np.uint8).reshape(-1, 8), axis=1).astype(bool)

        def brute() -> None:
            for start in range(0, len(bits), 500):
                (bits[start : start + 500, None, :] != bits[None, :, :]).sum(-1)

        brute_s = median_time(brute, repeats=1)
        print(f"near duplicates among 10,000 hashes: banded {banded:.2f} s, all pairs {brute_s:.2f} s "
              f"({brute_s / banded:.0f}x)")  # fmt: skip

        from cnnkit.models import create_model

        memory = open_data(str(tmp / "vga"), image_size=32, val_split=0, batch_size=64)
        streamed = open_data(str(tmp / "vga"), image_size=32, val_split=0, batch_size=64, budget=0, workers=2)
        model = create_model("seed", num_classes=2, in_channels=3, input_size=32)
        x = torch.from_numpy(memory.dataset.train.images).permute(0, 3, 1, 2)
        y = torch.from_numpy(memory.dataset.train.labels)
        in_memory = median_time(lambda: epoch(model, [(x[i : i + 64], y[i : i + 64]) for i in range(0, len(x), 64)]))
        stream = median_time(lambda: epoch(model, streamed.stream))
        print(f"one epoch of the article's CNN on {len(x)} images at 32x32: in memory {in_memory:.2f} s, "
              f"streamed from JPEGs with 2 workers {stream:.2f} s ({stream / in_memory:.1f}x slower)")  # fmt: skip


if __name__ == "__main__":
    main()
