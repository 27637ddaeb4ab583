"""What the benchmark drivers share: the data file, running workers, and describing the machine."""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

HERE = Path(__file__).resolve().parent
SRC = HERE.parent / "src"


def throughput_parser(doc: str) -> argparse.ArgumentParser:
    """The options every throughput benchmark takes (the same measurement, so the same defaults)."""
    parser = argparse.ArgumentParser(description=doc, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--images", type=int, default=8192)
    parser.add_argument("--epochs", type=int, default=4)
    parser.add_argument("--batch-size", type=int, default=128)
    return parser


def worker_options(args: argparse.Namespace) -> list[str]:
    """``throughput_parser``'s measurement options, as a worker's command line takes them."""
    return ["--images", str(args.images), "--epochs", str(args.epochs), "--batch-size", str(args.batch_size)]


def write_digits(path: Path) -> Path:
    """cnnkit's built-in digits as an .npz every worker (Keras' venv included) can read."""
    sys.path.insert(0, str(SRC))
    from cnnkit import datasets

    (x, y), (xt, yt) = datasets.load_data("digits")
    np.savez(path, x=x, y=y, xt=xt, yt=yt)
    return path


def run_worker(python: str, worker: str, data: Path, *args: str) -> dict:
    """Run one measurement in a fresh process (so thread pools and caches start equal)."""
    env = {**os.environ, "PYTHONPATH": str(SRC), "TF_CPP_MIN_LOG_LEVEL": "3"}
    cmd = [python, str(HERE / "_workers.py"), worker, "--data", str(data), *args]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{worker} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def matmul_peak_gflops(size: int = 2048, repeats: int = 7) -> float:
    """The best fp32 matrix-multiply rate torch reaches on this machine, in GFLOP/s."""
    import torch

    a, b = torch.randn(size, size), torch.randn(size, size)
    a @ b
    best = 0.0
    for _ in range(repeats):
        started = time.perf_counter()
        a @ b
        best = max(best, 2 * size**3 / (time.perf_counter() - started) / 1e9)
    return best


def machine() -> str:
    import torch

    cpu = platform.processor() or "?"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                cpu = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return (f"{cpu}, {os.cpu_count()} cores, torch {torch.__version__} ({torch.get_num_threads()} threads), "
            f"Python {platform.python_version()}, {time.strftime('%Y-%m-%d')}")  # fmt: skip


def keras_python(given: str | None) -> str | None:
    """The Python that has Keras 3 and TensorFlow: --keras-python, $KERAS_PYTHON, or this one if it can."""
    probe = ["-c", "import keras, tensorflow"]
    for candidate in (given, os.environ.get("KERAS_PYTHON"), sys.executable):
        if candidate and subprocess.run([candidate, *probe], capture_output=True).returncode == 0:
            return candidate
    return None
