"""Two checkouts of cnnkit side by side: training and inference speed, alternating, fresh processes.

    python benchmarks/compare_trees.py --before ../before --after . [--reps 5]

For a change that must keep speed "within noise" (a refactor, a move): every repetition runs each
measurement once with the ``before`` tree's ``src`` and once with the ``after`` tree's (the order
alternates between repetitions, so a machine that gets busier hits both alike), each in a fresh
process. Each figure is the median over the repetitions, with the after/before ratio.

Only cnnkit's public API and its command line are used, so trees from either side of a refactor
compare. The measurements (the article's CNN, 2 threads):

- ``fit``: ``Sequential.fit`` on digits tiled to 8,192 images, batch 128, Adam; images/s of the
  steady epochs (the first is warm-up);
- ``train``: ``cnnkit train`` on the built-in digits (batch 128, no augmentation, no validation),
  images/s from its ``metrics.csv``;
- ``predict``: ``Model.predict`` on 1,000 images at Keras' default batch (32) and in one batch of 1,000,
  ``Model.evaluate`` at batch 32, the model's own forward over the 1,000 at once (eval mode, inference
  mode, softmax) and each one's ratio to it (measured in the same process), and one image's latency
  (median of 300 calls);
- ``zoo_predict``: the same ``predict``/``evaluate`` figures for mobilenet_v3_small on 1,000 random
  32x32x3 images (a zoo model after one epoch of ``fit``), where the last maps are a few pixels,
  ``predict`` of a fresh one given those weights by ``load_weights``, and of the model as
  ``create_model`` made it, before ``fit``;
- ``predictor``: ``cnnkit.inference.load_predictor(file, "torch").predict_proba`` on one batch of 1,000.
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

from _common import write_digits

_WORKER = r"""
import argparse, json, os, sys, tempfile, time
import numpy as np

what, data, benchmarks = sys.argv[1], sys.argv[2], sys.argv[3]
sys.path.insert(0, benchmarks)  # the after tree's benchmarks/: its workers use only cnnkit's public API
from _workers import article_model, cnnkit_fit, digits

x, y, _, _ = digits(data)

def trained_model():
    from cnnkit import layers, models
    model = article_model(layers, models, layers.Input)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x[:256], y[:256], epochs=1, verbose=0)  # a trained model, as a user holds it
    return model

def median_seconds(fn, repeats):
    fn()  # warm-up
    times = []
    for _ in range(repeats):
        started = time.perf_counter()
        fn()
        times.append(time.perf_counter() - started)
    return float(np.median(times))

if what == "fit":
    options = argparse.Namespace(data=data, images=8192, epochs=4, batch_size=128, without="nothing")
    print(json.dumps({"fit images/s": cnnkit_fit(options)["images_per_second"]}))
elif what == "train":
    import csv, subprocess
    with tempfile.TemporaryDirectory() as tmp:
        out = os.path.join(tmp, "run")
        subprocess.run([sys.executable, "-m", "cnnkit", "train", "--epochs", "8", "--batch-size", "128",
                        "--augment", "none", "--val-split", "0", "--no-report", "-q", "--out", out], check=True,
                       stdout=subprocess.DEVNULL)
        with open(os.path.join(out, "metrics.csv")) as f:
            seconds = [float(r["seconds"]) for r in csv.DictReader(f)]
    n = len(x)  # digits' training images: what one epoch of `cnnkit train` sees with --val-split 0
    print(json.dumps({"train images/s": n / float(np.median(seconds[1:]))}))
elif what == "predict":
    import torch
    model, batch, labels = trained_model(), x[:1000], y[:1000]
    nchw = torch.from_numpy(np.ascontiguousarray(batch.transpose(0, 3, 1, 2)))
    def one_pass():  # the model's own forward over all 1,000 images at once, eval mode, no autograd
        with torch.inference_mode():
            torch.softmax(model(nchw), dim=1).numpy()
    model.eval()
    forward = median_seconds(one_pass, 7)
    model.train()  # as fit leaves it: predict and evaluate must switch to eval mode themselves
    default = median_seconds(lambda: model.predict(batch, verbose=0), 7)
    whole = median_seconds(lambda: model.predict(batch, batch_size=1000, verbose=0), 7)
    evaluated = median_seconds(lambda: model.evaluate(batch, labels, verbose=0), 7)
    one = median_seconds(lambda: model.predict(batch[:1], verbose=0), 300)
    print(json.dumps({"predict images/s (batch 32)": 1000 / default, "predict images/s (batch 1000)": 1000 / whole,
                      "evaluate images/s (batch 32)": 1000 / evaluated,
                      "one forward pass images/s (1000)": 1000 / forward,
                      "predict (batch 32) / one forward pass": forward / default,
                      "evaluate (batch 32) / one forward pass": forward / evaluated,
                      "predict 1 image ms": one * 1000}))
elif what == "zoo_predict":  # mobilenet_v3_small on 32x32x3 images: its last maps are 2x2 and 1x1 pixels
    from cnnkit import models
    rng = np.random.default_rng(0)
    images, labels = rng.random((1000, 32, 32, 3), dtype=np.float32), rng.integers(0, 10, 1000)
    model = models.create_model("mobilenet_v3_small", num_classes=10, input_size=32)
    created = median_seconds(lambda: model.predict(images, verbose=0), 7)  # untrained, as create_model made it
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(images[:256], labels[:256], epochs=1, verbose=0)
    default = median_seconds(lambda: model.predict(images, verbose=0), 7)
    whole = median_seconds(lambda: model.predict(images, batch_size=1000, verbose=0), 7)
    evaluated = median_seconds(lambda: model.evaluate(images, labels, verbose=0), 7)
    one = median_seconds(lambda: model.predict(images[:1], verbose=0), 100)
    with tempfile.TemporaryDirectory() as tmp:  # Keras' other way to a trained model: a fresh one, its weights
        model.save_weights(os.path.join(tmp, "w.safetensors"))
        fresh = models.create_model("mobilenet_v3_small", num_classes=10, input_size=32)
        fresh.load_weights(os.path.join(tmp, "w.safetensors"))
    reloaded = median_seconds(lambda: fresh.predict(images, verbose=0), 7)
    print(json.dumps({"mobilenet_v3_small predict images/s (batch 32)": 1000 / default,
                      "mobilenet_v3_small predict images/s fresh from create_model (batch 32)": 1000 / created,
                      "mobilenet_v3_small predict images/s after load_weights (batch 32)": 1000 / reloaded,
                      "mobilenet_v3_small predict images/s (batch 1000)": 1000 / whole,
                      "mobilenet_v3_small evaluate images/s (batch 32)": 1000 / evaluated,
                      "mobilenet_v3_small predict 1 image ms": one * 1000}))
elif what == "predictor":
    from cnnkit.inference import load_predictor
    model = trained_model()
    with tempfile.TemporaryDirectory() as tmp:
        path = os.path.join(tmp, "model.safetensors")
        model.save(path)
        predictor = load_predictor(path, "torch")
        nchw = np.ascontiguousarray(x[:1000].transpose(0, 3, 1, 2))
        seconds = median_seconds(lambda: predictor.predict_proba(nchw), 7)
    print(json.dumps({"torch predictor images/s (batch 1000)": 1000 / seconds}))
"""

MEASUREMENTS = ("fit", "train", "predict", "zoo_predict", "predictor")


def run(tree: Path, what: str, data: Path, threads: int | None = None) -> dict[str, float]:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    if threads:  # torch's intra-op threads, read at start-up
        env["OMP_NUM_THREADS"] = str(threads)
    out = subprocess.run([sys.executable, "-c", _WORKER, what, str(data), str(Path(__file__).resolve().parent)],
                         env=env, check=True, capture_output=True, text=True)  # fmt: skip
    return json.loads(out.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--before", type=Path, required=True, help="a checkout of the code before the change")
    parser.add_argument("--after", type=Path, default=Path(__file__).resolve().parents[1])
    parser.add_argument("--reps", type=int, default=5)
    parser.add_argument("--only", nargs="*", choices=MEASUREMENTS, default=list(MEASUREMENTS))
    parser.add_argument("--threads", type=int, help="torch threads in the workers (default: torch's, one per core)")
    args = parser.parse_args()
    trees = {"before": args.before.resolve(), "after": args.after.resolve()}
    for name, tree in trees.items():
        commit = subprocess.run(["git", "-C", str(tree), "rev-parse", "--short", "HEAD"], capture_output=True,
                                text=True).stdout.strip()  # fmt: skip
        print(f"{name}: {tree} ({commit or 'not a git checkout'})")
    results: dict[str, dict[str, list[float]]] = {name: {} for name in trees}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_digits(Path(tmp) / "digits.npz")  # the driver's own tree writes it, once
        for rep in range(args.reps):
            order = list(trees) if rep % 2 == 0 else list(reversed(trees))
            for what in args.only:
                for name in order:
                    for key, value in run(trees[name], what, data, args.threads).items():
                        results[name].setdefault(key, []).append(value)
            print(f"rep {rep + 1}/{args.reps} done", flush=True)
    print(f"\nmedian of {args.reps} alternating runs, each in a fresh process; {os.cpu_count()} cores\n")
    width = max(40, *map(len, results["before"]))
    print(f"| {'measurement':<{width}} | {'before':>10} | {'after':>10} | after/before | after range |")
    print(f"|{'-' * (width + 2)}|{'-' * 12}|{'-' * 12}|{'-' * 14}|{'-' * 13}|")
    for key, before in results["before"].items():
        after = results["after"][key]
        b, a = statistics.median(before), statistics.median(after)
        digits = 2 if b < 10 else 0
        print(
            f"| {key:<{width}} | {b:>10,.{digits}f} | {a:>10,.{digits}f} | {a / b:>11.2f}x | "
            f"{min(after):,.{digits}f}-{max(after):,.{digits}f} |"
        )


if __name__ == "__main__":
    main()
