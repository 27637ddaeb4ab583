"""Training throughput of the article's CNN: cnnkit vs Keras 3 on TensorFlow vs idiomatic PyTorch.

    python benchmarks/train_speed.py [--reps 5] [--images 8192] [--epochs 4] [--keras-python PATH]

Same model, batch size (128), optimizer (Adam, lr 1e-3) and data (the built-in digits, tiled to
--images), on this machine, in one run: the frameworks alternate, each measurement in a fresh
process, and each figure is the median over --reps repetitions of the steady-state epochs
(the first epoch of every run is warm-up and not counted). Keras needs `pip install
tensorflow-cpu keras` (the `bench` extra), in this Python or the one given by --keras-python.
"""

from __future__ import annotations

import statistics
import tempfile
from pathlib import Path

from _common import (
    keras_python,
    machine,
    matmul_peak_gflops,
    run_worker,
    throughput_parser,
    worker_options,
    write_digits,
)

MFLOP_PER_IMAGE = 16.4  # forward + backward of the article's CNN on one 28x28x1 image


def main() -> None:
    parser = throughput_parser(__doc__)
    parser.add_argument("--keras-python")
    args = parser.parse_args()
    import sys

    keras = keras_python(args.keras_python)
    workers = {
        "cnnkit Sequential.fit": (sys.executable, "cnnkit-fit"),
        "cnnkit train": (sys.executable, "cnnkit-train"),
        "PyTorch DataLoader loop": (sys.executable, "torch"),
    }
    if keras:
        workers["Keras 3 / TensorFlow"] = (keras, "keras")
    else:
        print("Keras/TensorFlow not found: pass --keras-python (pip install tensorflow-cpu keras)")
    results: dict[str, list[float]] = {name: [] for name in workers}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_digits(Path(tmp) / "digits.npz")
        common = worker_options(args)
        for rep in range(args.reps):
            for name, (python, worker) in workers.items():
                result = run_worker(python, worker, data, *common, "--seed", str(rep))
                results[name].append(result["images_per_second"])
                print(f"rep {rep + 1}/{args.reps}  {name:<24} {result['images_per_second']:8,.0f} images/s", flush=True)
    peak = matmul_peak_gflops()
    print(f"\n{machine()}; fp32 matmul peak through torch: {peak:.0f} GFLOP/s")
    print(f"article CNN, batch {args.batch_size}, Adam; median of {args.reps} runs (min-max)\n")
    median = {name: statistics.median(values) for name, values in results.items()}
    for name, values in results.items():
        share = median[name] * MFLOP_PER_IMAGE / 1e3 / peak
        print(f"  {name:<24} {median[name]:8,.0f} images/s  ({min(values):,.0f}-{max(values):,.0f})  "
              f"{share:5.1%} of peak")  # fmt: skip
    for a in ("cnnkit Sequential.fit", "cnnkit train"):
        for b in ("Keras 3 / TensorFlow", "PyTorch DataLoader loop"):
            if b in median:
                print(f"  {a} / {b}: {median[a] / median[b]:.2f}x")


if __name__ == "__main__":
    main()
