"""torch's default OpenMP wait policy against OMP_WAIT_POLICY=PASSIVE, on the article's CNN.

    python benchmarks/omp_wait_policy.py [--reps 3]

Each measurement is a fresh process (the policy is read when torch loads), the two policies
alternating: ``Sequential.fit`` on digits (4 epochs at batch 128, after a warm-up epoch),
``predict`` of one image (median of 200 calls) and of 1,000 images.
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
from pathlib import Path

SRC = Path(__file__).resolve().parents[1] / "src"

WORKER = """
import time
from cnnkit import datasets, layers, models
(x, y), _ = datasets.load_data("digits")
m = models.Sequential([layers.Input(shape=(28, 28, 1)), layers.Conv2D(32, 3, activation="relu"), layers.MaxPooling2D(),
    layers.Conv2D(64, 3, activation="relu"), layers.MaxPooling2D(), layers.Conv2D(64, 3, activation="relu"),
    layers.Flatten(), layers.Dense(64, activation="relu"), layers.Dense(10, activation="softmax")])
m.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
m.fit(x, y, epochs=1, batch_size=128, verbose=0)
t = time.perf_counter(); m.fit(x, y, epochs=4, batch_size=128, verbose=0); fit = 4 * len(x) / (time.perf_counter() - t)
m.predict(x[:1], verbose=0)
times = []
for _ in range(200):
    t = time.perf_counter(); m.predict(x[:1], verbose=0); times.append(time.perf_counter() - t)
times.sort()
t = time.perf_counter(); m.predict(x[:1000], verbose=0); batch = 1000 / (time.perf_counter() - t)
print(fit, times[100] * 1e3, batch)
"""


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--reps", type=int, default=3)
    reps = parser.parse_args().reps
    policies = {"torch's default": "", "PASSIVE": "PASSIVE"}  # "" is no policy to OpenMP: its default
    results: dict[str, list[list[float]]] = {name: [] for name in policies}
    for _ in range(reps):
        for name, value in policies.items():
            env = {**os.environ, "PYTHONPATH": str(SRC), "OMP_WAIT_POLICY": value}
            out = subprocess.run([sys.executable, "-c", WORKER], env=env, capture_output=True, text=True, check=True)
            results[name].append([float(v) for v in out.stdout.split()])
    print(f"{'OMP_WAIT_POLICY':<16} {'fit images/s':>13} {'1 image ms':>11} {'1,000 images/s':>15}  (median of {reps})")
    for name, rows in results.items():
        fit, one, batch = (statistics.median(column) for column in zip(*rows))
        print(f"{name:<16} {fit:>13,.0f} {one:>11.3f} {batch:>15,.0f}")


if __name__ == "__main__":
    main()
