"""``cnnkit check-data`` on a folder: wall time and peak memory, two trees side by side, and the decoding floor.

    python benchmarks/check_data.py [--before ../before] [--images 10000] [--photos 1000] [--reps 5]

Two folders of class sub-folders, built once: ``--images`` 28x28 grey PNGs (digits test images
with noise, so no two files are alike: what a first folder of small images looks like) and
``--photos`` 320x240 RGB JPEGs (smooth random pictures). Each repetition runs ``cnnkit check-data
FOLDER --json`` once with each tree's ``src``, in fresh processes, the order alternating; each
figure is the median. Peak memory is the command's own maximum resident set (its VmHWM). The
floor is what reading and decoding every file costs in one thread of this process (Pillow's
``open`` + ``load``): the health check decodes each file once, so it cannot be faster than that
divided by the threads it gets.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from _common import SRC, machine
from PIL import Image


def write_pngs(root: Path, n: int) -> Path:
    sys.path.insert(0, str(SRC))
    from cnnkit import datasets

    _, (x_test, y_test) = datasets.load_data("digits")
    rng = np.random.default_rng(0)
    for i in range(n):
        label = int(y_test[i % len(y_test)])
        pixels = x_test[i % len(x_test), :, :, 0] * 255 + rng.normal(0, 8, (28, 28))
        (root / str(label)).mkdir(parents=True, exist_ok=True)
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(root / str(label) / f"{i:06d}.png")
    return root


def write_photos(root: Path, n: int) -> Path:
    rng = np.random.default_rng(1)
    for i in range(n):
        small = rng.integers(0, 256, (6, 8, 3), dtype=np.uint8)
        (root / f"class{i % 4}").mkdir(parents=True, exist_ok=True)
        picture = Image.fromarray(small).resize((320, 240), Image.Resampling.BICUBIC)
        picture.save(root / f"class{i % 4}" / f"{i:05d}.jpg", quality=90)
    return root


# The command as `python -m cnnkit`, reporting its own peak resident set as it exits: VmHWM, not ru_maxrss,
# which a child inherits from the process it was forked from (this one, with torch loaded).
_LAUNCH = """
import re, runpy, sys
sys.argv = ["cnnkit", *sys.argv[1:]]
try:
    runpy.run_module("cnnkit", run_name="__main__")
finally:
    status = open("/proc/self/status").read()
    print("peak-kb", re.search(r"VmHWM:\\s+(\\d+)", status).group(1), file=sys.stderr)
"""


def wall_and_memory(src: Path, folder: Path, scratch: Path) -> tuple[float, float]:
    """One fresh ``python -m cnnkit check-data FOLDER --json``: seconds, and its peak resident MB."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    out = Path(tempfile.mkdtemp(dir=scratch))
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", _LAUNCH, "check-data", str(folder), "--out", str(out), "--json"],
                          env=env, check=True, capture_output=True, text=True)  # fmt: skip
    seconds = time.perf_counter() - start
    peak = next(line for line in done.stderr.splitlines() if line.startswith("peak-kb"))
    return seconds, int(peak.split()[1]) / 1024


def decode_floor(folder: Path) -> float:
    """Seconds to read and decode every file of ``folder`` once, in this thread."""
    paths = sorted(p for p in folder.rglob("*") if p.is_file())
    start = time.perf_counter()
    for path in paths:
        with Image.open(path) as img:
            img.load()
    return time.perf_counter() - start


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--before", type=Path, help="another checkout (its src is measured beside this one)")
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--photos", type=int, default=1_000)
    parser.add_argument("--reps", type=int, default=5)
    args = parser.parse_args()
    trees = {"after": SRC} | ({"before": args.before.resolve() / "src"} if args.before else {})
    with tempfile.TemporaryDirectory() as tmp:
        scratch = Path(tmp)
        folders = {f"{args.images:,} PNGs 28x28 grey": write_pngs(scratch / "pngs", args.images),
                   f"{args.photos:,} JPEGs 320x240 RGB": write_photos(scratch / "photos", args.photos)}  # fmt: skip
        rows = []
        for label, folder in folders.items():
            runs: dict[str, list[tuple[float, float]]] = {name: [] for name in trees}
            for rep in range(args.reps):
                order = list(trees) if rep % 2 == 0 else list(reversed(trees))
                for name in order:
                    runs[name].append(wall_and_memory(trees[name], folder, scratch))
            floor = statistics.median(decode_floor(folder) for _ in range(3))
            rows.append((label, runs, floor))
    print(machine())
    print(
        f"cnnkit check-data FOLDER --json, fresh processes, median of {args.reps} alternating runs; "
        "floor: reading and decoding every file once in one thread\n"
    )
    names = list(trees)
    header = " | ".join(f"{name} s | {name} MB" for name in names)
    ratio = " | after / before" if "before" in trees else ""
    print(f"| folder | {header}{ratio} | decode floor s |")
    print("| --- |" + " ---: |" * (2 * len(names) + bool(ratio) + 1))
    for label, runs, floor in rows:
        seconds = {n: statistics.median(s for s, _ in runs[n]) for n in names}
        memory = {n: statistics.median(m for _, m in runs[n]) for n in names}
        cells = " | ".join(f"{seconds[n]:.2f} | {memory[n]:,.0f}" for n in names)
        shown = f" | {seconds['after'] / seconds['before']:.2f}x" if ratio else ""
        print(f"| {label} | {cells}{shown} | {floor:.2f} |")


if __name__ == "__main__":
    main()
