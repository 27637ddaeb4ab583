"""``cnnkit predict`` on a folder of small PNGs against the script a user would write, and the decoding ceiling.

    python benchmarks/predict_folder.py [--images 10000] [--reps 3] [--before ../before]

One folder of 28x28 grey PNGs (digits test images with noise, so no two files are alike) and the
article's CNN trained for one epoch, saved once. Each repetition runs every contender once, each in
a fresh process timed from start to exit (imports and model loading included: what a user waits
for), in an order that alternates between repetitions; each figure is the median, with its ratio
to the plain script measured in the same repetitions:

- ``cnnkit predict``: ``python -m cnnkit predict MODEL FOLDER --format csv`` (defaults: ONNX Runtime
  on the CPU, its export cached before the first repetition), output to a file;
- ``cnnkit predict (before)``: the same with another checkout's ``src`` (``--before``);
- ``plain script``: Pillow decode in a ``torch.utils.data.DataLoader`` with 2 workers, batch 256,
  ONNX Runtime on the model's ONNX export (made once by ``cnnkit export``), one csv line per file;
- ``decode only``: cnnkit's decoding path (``cnnkit.data.inputs.load_input``, torch-free, as
  ``cnnkit predict`` decodes) over every file in as many forked processes as cores, no model, no
  output: the ceiling a predictor of these files has. (Until 2026-12-06 it imported
  ``cnnkit.data.transforms``, and with it torch: its figure held torch's start-up too.)

The machine is shared: compare ratios of one run, not absolute figures across runs.
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

SRC = Path(__file__).resolve().parents[1] / "src"

_PLAIN = r"""
import csv, glob, os, sys
import numpy as np, onnxruntime as ort
from PIL import Image
from torch.utils.data import DataLoader, Dataset

class Files(Dataset):
    def __init__(self, paths): self.paths = paths
    def __len__(self): return len(self.paths)
    def __getitem__(self, i):
        return np.asarray(Image.open(self.paths[i]).convert("L"), dtype=np.float32)[None] / 255  # (1, 28, 28)

if __name__ == "__main__":
    paths = sorted(glob.glob(os.path.join(sys.argv[2], "**", "*.png"), recursive=True))
    session = ort.InferenceSession(sys.argv[1], providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    with open(sys.argv[3], "w", newline="") as f:
        out, done = csv.writer(f), 0
        for batch in DataLoader(Files(paths), batch_size=256, num_workers=2):
            probs = session.run(None, {name: batch.numpy()})[0]
            for path, row in zip(paths[done:done + len(probs)], probs):
                top = int(row.argmax())
                out.writerow([path, top, float(row[top])])
            done += len(probs)
"""

_DECODE = r"""
import glob, os, sys
from multiprocessing import get_context
from cnnkit.data.inputs import load_input

def decode(paths):
    for path in paths:
        load_input(path, (28, 28, 1))
    return len(paths)

if __name__ == "__main__":
    paths = sorted(glob.glob(os.path.join(sys.argv[1], "**", "*.png"), recursive=True))
    chunks = [paths[i:i + 256] for i in range(0, len(paths), 256)]
    with get_context("fork").Pool(os.cpu_count()) as pool:
        assert sum(pool.map(decode, chunks)) == len(paths)
"""


def write_model_and_folder(tmp: Path, images: int) -> tuple[Path, Path, Path]:
    sys.path.insert(0, str(SRC))
    sys.path.insert(0, str(Path(__file__).resolve().parent))
    from inference_bench import article_model, write_folder

    model_path, folder = tmp / "model.safetensors", tmp / "images"
    article_model(epochs=1).save(model_path)
    write_folder(folder, images)
    onnx_path = tmp / "model.onnx"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    subprocess.run([sys.executable, "-m", "cnnkit", "export", str(model_path), "--out", str(onnx_path)], env=env,
                   check=True, capture_output=True)  # fmt: skip
    return model_path, folder, onnx_path


def timed(command: list[str], src: Path, stdout: Path | None) -> float:
    """Seconds from start to exit of ``command`` run with ``src`` first on the path; stdout to a file or nowhere."""
    env = {**os.environ, "PYTHONPATH": str(src)}
    started = time.perf_counter()
    with open(stdout if stdout is not None else os.devnull, "w") as out:
        subprocess.run(command, env=env, check=True, stdout=out, stderr=subprocess.PIPE)
    return time.perf_counter() - started


def top1(csv_path: Path, cnnkit: bool) -> list[tuple[str, str]]:
    """(file name, top label) per file, from either tool's csv."""
    import csv

    with open(csv_path) as f:
        rows = list(csv.reader(f))
    if cnnkit:  # path, rank, label, probability; rank 1 is the top class
        return [(Path(r[0]).name, r[2]) for r in rows[1:] if r[1] == "1"]
    return [(Path(r[0]).name, r[1]) for r in rows]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--images", type=int, default=10_000)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--before", type=Path, help="another checkout, to time its `cnnkit predict` too")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="cnnkit-folder-") as name:
        tmp = Path(name)
        model, folder, onnx_path = write_model_and_folder(tmp, args.images)
        outputs = {"cnnkit predict": tmp / "after.csv", "cnnkit predict (before)": tmp / "before.csv",
                   "plain script": tmp / "plain.csv"}  # fmt: skip
        cli = [sys.executable, "-m", "cnnkit", "predict", str(model), str(folder), "--format", "csv"]
        plain = [sys.executable, "-c", _PLAIN, str(onnx_path), str(folder), str(outputs["plain script"])]
        contenders = {  # name: (command, the src it runs, where its stdout goes)
            "cnnkit predict": (cli, SRC, outputs["cnnkit predict"]),
            "plain script": (plain, SRC, None),
            "decode only": ([sys.executable, "-c", _DECODE, str(folder)], SRC, None),
        }
        if args.before is not None:
            contenders["cnnkit predict (before)"] = (
                cli,
                args.before.resolve() / "src",
                outputs["cnnkit predict (before)"],
            )
        timed(cli, SRC, None)  # builds and caches the ONNX export next to the model: not part of any figure
        seconds: dict[str, list[float]] = {name: [] for name in contenders}
        for rep in range(args.reps):
            order = list(contenders) if rep % 2 == 0 else list(reversed(contenders))
            for name in order:
                seconds[name].append(timed(*contenders[name]))
            print(f"rep {rep + 1}/{args.reps} done", flush=True)
        labels = top1(outputs["plain script"], cnnkit=False)
        same = top1(outputs["cnnkit predict"], cnnkit=True) == labels
        if args.before is not None:
            same = same and top1(outputs["cnnkit predict (before)"], cnnkit=True) == labels
    print(f"\n{args.images:,} PNGs (28x28 grey), median of {args.reps} alternating runs, each a fresh process "
          f"timed start to exit; {os.cpu_count()} cores; top-1 labels identical across tools: {same}\n")  # fmt: skip
    print(f"| {'contender':<26} | {'seconds':>8} | {'images/s':>9} | x plain script | range (s) |")
    print(f"|{'-' * 28}|{'-' * 10}|{'-' * 11}|{'-' * 16}|{'-' * 11}|")
    base = statistics.median(seconds["plain script"])
    for name, times in seconds.items():
        s = statistics.median(times)
        print(f"| {name:<26} | {s:>8.2f} | {args.images / s:>9,.0f} | {base / s:>13.2f}x | "
              f"{min(times):.1f}-{max(times):.1f} |")  # fmt: skip


if __name__ == "__main__":
    main()
