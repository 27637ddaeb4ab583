"""Time to accuracy on the built-in digits: cnnkit's default recipe vs the article's recipe.

    python benchmarks/time_to_accuracy.py [--seeds 5] [--keras-python PATH]

cnnkit: `cnnkit train` exactly as shipped (its default recipe), --seeds seeds; reported as test
accuracy mean ± std and wall-clock seconds for the whole run (data, model, training, testing).
Keras and PyTorch: the article's recipe (Adam, batch 32, 10 epochs, the test set as validation
data); reported as the best test accuracy they reach and the training time to reach it.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
from pathlib import Path

from _common import keras_python, machine, run_worker, write_digits


def summarize(name: str, runs: list[dict]) -> None:
    acc = [r["test_accuracy"] for r in runs]
    secs = [r["seconds"] for r in runs]
    spread = f" ± {statistics.stdev(acc):.2%}" if len(acc) > 1 else ""
    print(f"  {name:<34} test accuracy {statistics.mean(acc):.2%}{spread} (min {min(acc):.2%}, max {max(acc):.2%}); "
          f"{statistics.mean(secs):.1f} s (max {max(secs):.1f} s); epochs {[r['epochs'] for r in runs]}")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", type=int, default=5)
    parser.add_argument("--keras-python")
    args = parser.parse_args()
    keras = keras_python(args.keras_python)
    runs: dict[str, list[dict]] = {"cnnkit train (default recipe)": [], "PyTorch loop (article recipe)": []}
    if keras:
        runs["Keras 3 / TensorFlow (article recipe)"] = []
    with tempfile.TemporaryDirectory() as tmp:
        data = write_digits(Path(tmp) / "digits.npz")
        for seed in range(args.seeds):
            for name, (python, worker) in {
                "cnnkit train (default recipe)": (sys.executable, "cnnkit-recipe"),
                "PyTorch loop (article recipe)": (sys.executable, "torch-recipe"),
                **({"Keras 3 / TensorFlow (article recipe)": (keras, "keras-recipe")} if keras else {}),
            }.items():
                result = run_worker(python, worker, data, "--seed", str(seed))
                runs[name].append(result)
                print(f"seed {seed}  {name:<38} {result['test_accuracy']:.2%} in {result['seconds']:.1f} s", flush=True)
    print(f"\n{machine()}\ndigits test split (359 images), {args.seeds} seeds:")
    for name, results in runs.items():
        summarize(name, results)


if __name__ == "__main__":
    main()
