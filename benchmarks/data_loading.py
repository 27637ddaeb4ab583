"""Data loading side by side: decoding threads, JPEG draft decoding, near-duplicate search, memory vs disk vs streaming.

Run: ``PYTHONPATH=src python benchmarks/data_loading.py [--photos 400] [--epochs-only] [--rounds 3]``. Writes
synthetic photos to a temporary folder, then times each pair of ways in one run, three times
each, and prints medians and ratios (this machine's load is noisy: compare ratios, not seconds).

The epoch rows train the article's CNN for one epoch from memory (``--cache ram``), from the
decoded-image cache on disk (``--cache disk``) and streamed from the JPEGs (``--cache none``),
alternating, through the engine's own batching. The memory rows read a larger synthetic disk
cache in batches and report what the process holds: RSS (its file-backed part is the
mapping of the page cache, which the kernel can take back) and, from
``/proc/self/smaps_rollup``, PSS and USS (private pages).
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

from cnnkit.data import decoded_cache
from cnnkit.data.check import near_duplicate_pairs
from cnnkit.data.decode import open_image
from cnnkit.data.prepare import open_data
from cnnkit.data.scan import FileRecord, scan_files
from cnnkit.data.transforms import image_to_input, load_input
from cnnkit.train.loop import TensorBatches


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


def memory_mb() -> dict[str, float]:
    """This process's RSS (anonymous and file-backed parts) and, where Linux has them, PSS and USS, in MiB."""
    found: dict[str, float] = {}
    for name, fields in (("/proc/self/status", ("VmRSS", "RssAnon", "RssFile")),
                         ("/proc/self/smaps_rollup", ("Pss", "Private_Clean", "Private_Dirty"))):  # fmt: skip
        try:
            with open(name) as f:
                for line in f:
                    key, _, value = line.partition(":")
                    if key in fields:
                        found[key] = int(value.split()[0]) / 1024
        except OSError:
            pass
    if "Private_Clean" in found:
        found["USS"] = found.pop("Private_Clean") + found.pop("Private_Dirty")
    return found


class Peak:
    """The highest of each memory figure over the calls."""

    def __init__(self) -> None:
        self.peak: dict[str, float] = {}

    def __call__(self) -> None:
        for key, value in memory_mb().items():
            self.peak[key] = max(self.peak.get(key, 0.0), value)

    def line(self, base: dict[str, float]) -> str:
        return ", ".join(f"{k} {self.peak[k]:.0f} (+{self.peak[k] - base.get(k, 0):.0f})" for k in self.peak)


def epochs_side_by_side(folder: Path, cache_dir: Path, rounds: int = 3) -> None:
    """One epoch of the article's CNN from memory, from the disk cache and streamed from the files, alternating."""
    from cnnkit.models import create_model

    def opened(cache: str) -> tuple[float, object]:
        started = time.perf_counter()
        data = open_data(str(folder), image_size=32, val_split=0, batch_size=64, cache=cache,
                         data_dir=str(cache_dir), workers=2)  # fmt: skip
        return time.perf_counter() - started, data

    ram_open, memory = opened("ram")
    build, _ = opened("disk")
    again, disk = opened("disk")
    _, streamed = opened("none")
    print(f"opening {memory.train_size} JPEGs at 32x32 (health check included): into memory {ram_open:.2f} s, "
          f"building the disk cache {build:.2f} s, with the disk cache built {again:.2f} s")  # fmt: skip
    model = create_model("seed", num_classes=2, in_channels=3, input_size=32)
    x = torch.from_numpy(memory.dataset.train.images).permute(0, 3, 1, 2)
    y = torch.from_numpy(memory.dataset.train.labels)
    disk_y = torch.from_numpy(disk.mapped.labels)
    ways = {  # the engine's own batching: a fresh permutation per epoch, as cnnkit train draws it
        "in memory": lambda: TensorBatches(x, y, 64, generator=torch.Generator().manual_seed(0)),
        "disk cache": lambda: TensorBatches(disk.mapped, disk_y, 64, generator=torch.Generator().manual_seed(0)),
        "streamed (2 workers)": lambda: streamed.stream,
    }
    epoch(model, ways["in memory"]())  # warm-up: kernels, allocator
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(rounds):
        for name, batches in ways.items():
            started = time.perf_counter()
            epoch(model, batches())
            times[name].append(time.perf_counter() - started)
    med = {name: statistics.median(t) for name, t in times.items()}
    for name, t in times.items():
        runs = ", ".join(f"{v:.3f}" for v in t)
        print(f"  one epoch {name}: median {med[name]:.3f} s of {runs}; {len(x) / med[name]:.0f} images/s, "
              f"{med['in memory'] / med[name]:.2f}x the in-memory speed")  # fmt: skip


def bounded_reading(rows: int, tmp: Path) -> None:
    """Read a synthetic disk cache of ``rows`` 32x32x3 images through the engine's batching; report memory."""
    shape = (32, 32, 3)
    folder = tmp / "synthetic"
    folder.mkdir()
    writer = decoded_cache._Writer(folder, shape, None)
    rng = np.random.default_rng(0)
    block = rng.random((256, *shape), dtype=np.float32)
    records = []
    for i in range(rows):
        record = FileRecord(Path(f"{i}.png"), 3072, f"{i:064x}", "PNG", "RGB", 32, 32, 0)
        writer.add(record, block[i % 256])
        records.append(record)
    store = decoded_cache.DecodedImages(folder, writer.finish(records))
    mapped = decoded_cache.MappedImages(store, np.arange(rows), np.zeros(rows, np.int64), 3)
    size_mb = rows * 3072 / 2**20
    labels = torch.zeros(rows, dtype=torch.long)
    base = memory_mb()
    peak = Peak()
    for i, _ in enumerate(TensorBatches(mapped, labels, 256, generator=torch.Generator().manual_seed(0))):
        if i % 20 == 0:
            peak()
    print(f"reading a {size_mb:.0f} MiB disk cache ({rows} images) in shuffled batches of 256, peak MiB "
          f"(+ over the start): {peak.line(base)}")  # fmt: skip
    plain = np.memmap(folder / next(folder.glob("images-*.u8")).name, np.uint8, "r", shape=(rows, *shape))
    base, peak = memory_mb(), Peak()
    order = torch.randperm(rows, generator=torch.Generator().manual_seed(0)).numpy()
    for i, start in enumerate(range(0, rows, 256)):
        torch.from_numpy(plain[order[start : start + 256]]).float().div_(255)
        if i % 20 == 0:
            peak()
    print(f"  the same through a plain np.memmap, pages never given back: {peak.line(base)}")


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--photos", type=int, default=400)
    parser.add_argument("--rows", type=int, default=100_000, help="images in the synthetic disk cache")
    parser.add_argument("--epochs-only", action="store_true", help="only the epoch and memory rows")
    parser.add_argument("--rounds", type=int, default=3, help="alternating rounds of the epoch rows")
    args = parser.parse_args()
    torch.set_num_threads(max(1, (os.cpu_count() or 1) // 2))
    print(f"machine: {platform.processor() or platform.machine()}, {os.cpu_count()} cores; python "
          f"{platform.python_version()}, torch {torch.__version__}, numpy {np.__version__}")  # fmt: skip
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        photos = write_photos(tmp / "vga", args.photos, (640, 480))
        if not args.epochs_only:
            other_rows(photos, tmp)
        epochs_side_by_side(tmp / "vga", tmp / "cache", args.rounds)
        bounded_reading(args.rows, tmp)


def other_rows(photos: list[Path], tmp: Path) -> None:
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


if __name__ == "__main__":
    main()
