"""cnnkit vs Keras 3 on TensorFlow vs Keras 3 on PyTorch, through the same Keras code.

    python benchmarks/keras_compare.py [--reps 5] [--images 4096] [--epochs 2] \
        [--keras-python /work/kenv/bin/python] [--keras-torch-python /work/kenv-torch/bin/python]

Two models, as Keras users write them: the article's CNN (integer labels) and Keras' "simple
MNIST convnet" (Conv32-pool-Conv64-pool-Flatten-Dropout(0.5)-Dense10, one-hot labels, a tenth
held out for validation); batch 128, Adam, the same data (the built-in digits, tiled to
--images). The only difference between the three is ``import cnnkit as keras`` or ``import
keras`` (with ``KERAS_BACKEND`` tensorflow or torch). Every measurement is a fresh process; the
three alternate within each repetition; each figure is the median over --reps of: training
images/s over the steady epochs (the first is warm-up), ``predict`` on one image (ms, median of
10 calls after 3 warm-up ones) and ``predict`` on 10,000 images (s, after a warm-up on 1,000).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

from _common import HERE, SRC, machine, write_digits

FIGURES = {"train_images_per_second": ("train images/s", True), "predict_1_ms": ("predict 1 image, ms", False),
           "predict_10k_s": ("predict 10,000, s", False)}  # fmt: skip


def run(python: str, api: str, model: str, data: Path, backend: str | None, options: list[str]) -> dict:
    env = {**os.environ, "PYTHONPATH": str(SRC), "TF_CPP_MIN_LOG_LEVEL": "3"}
    if backend:
        env["KERAS_BACKEND"] = backend
    cmd = [python, str(HERE / "_keras_compare_worker.py"), api, model, "--data", str(data), *options]
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{api}/{backend} {model} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--images", type=int, default=4096)
    parser.add_argument("--epochs", type=int, default=2)
    parser.add_argument("--keras-python", default="/work/kenv/bin/python")
    parser.add_argument("--keras-torch-python", default="/work/kenv-torch/bin/python")
    parser.add_argument("--models", default="article,convnet")
    args = parser.parse_args()
    apis = {"cnnkit": (sys.executable, "cnnkit", None),
            "Keras 3 / TensorFlow": (args.keras_python, "keras", "tensorflow"),
            "Keras 3 / PyTorch": (args.keras_torch_python, "keras", "torch")}  # fmt: skip
    options = ["--images", str(args.images), "--epochs", str(args.epochs)]
    results: dict[tuple[str, str], list[dict]] = {}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_digits(Path(tmp) / "digits.npz")
        for rep in range(args.reps):
            for model in args.models.split(","):
                for name, (python, api, backend) in apis.items():
                    result = run(python, api, model, data, backend, [*options, "--seed", str(rep)])
                    results.setdefault((model, name), []).append(result)
                    shown = "  ".join(f"{result[key]:,.3g} {label}" for key, (label, _) in FIGURES.items())
                    print(f"rep {rep + 1}/{args.reps}  {model:<8} {name:<21} {shown}", flush=True)
    print(f"\n{machine()}; median of {args.reps} fresh processes each, alternating; batch 128, Adam, "
          f"{args.images:,} training images, {args.epochs} epochs (the first not timed)\n")  # fmt: skip
    for model in args.models.split(","):
        print(f"{model}:")
        print(f"  {'':<21} " + "  ".join(f"{label:>20}" for label, _ in FIGURES.values()))
        median = {name: {k: statistics.median(r[k] for r in results[(model, name)]) for k in FIGURES} for name in apis}
        for name in apis:
            print(f"  {name:<21} " + "  ".join(f"{median[name][k]:>20,.4g}" for k in FIGURES))
        for other in list(apis)[1:]:
            ratios = [(median["cnnkit"][k] / median[other][k]) if up else (median[other][k] / median["cnnkit"][k])
                      for k, (_, up) in FIGURES.items()]  # fmt: skip
            print(f"  {'cnnkit ahead of ' + other.split(' / ')[1]:<21} " + "  ".join(f"{r:>19.2f}x" for r in ratios))


if __name__ == "__main__":
    main()
