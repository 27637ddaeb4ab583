"""Training speed of zoo models on 32x32x3 images on the CPU: cnnkit's engine vs a plain PyTorch loop.

    python benchmarks/zoo_speed.py [--models resnet9 resnet18_small mobilenet_v3_small] [--images 512]
                                   [--epochs 6] [--reps 3] [--tree PATH]
                                   [--precision fp32|bf16] [--plain-precision fp32|bf16]

The same model (``cnnkit.models.create_model(name, num_classes=10, in_channels=3, input_size=32)``,
seeded alike), the same random 32x32x3 images and labels, batch 128, AdamW (lr 1e-3, weight decay
5e-4), cross-entropy, no augmentation, no validation:

- ``cnnkit``: ``Model.compile`` + ``Model.fit``: the engine ``cnnkit train`` runs (its passes:
  channels-last, fused optimizer where torch has one, ``kernels.fuse`` where it applies);
- ``plain``: the loop a PyTorch user writes: ``TensorDataset`` + ``DataLoader(shuffle=True)``,
  ``torch.optim.AdamW``, the model and each batch in channels-last memory.

``--precision bf16`` trains cnnkit's contender under ``keras.mixed_precision.set_global_policy(
"mixed_bfloat16")`` (``cnnkit train --precision bf16``'s autocast); ``--plain-precision bf16`` wraps
the plain loop's forward and loss in ``torch.autocast("cpu", torch.bfloat16)``. Both default to fp32.
"% of peak" is always over the fp32 matmul peak.

Each measurement runs in a fresh process (``--tree``'s ``src`` first on the path, so two checkouts
compare); the contenders alternate within every repetition; images/s is the median over the
repetitions of each run's fastest steady epoch (the first epoch is warm-up). The fastest epoch, as
``timeit`` advises, because the other programs on a shared machine only ever add time: an epoch
slowed by a neighbour says nothing about either contender, and with a few steps per epoch one such
epoch moved the median-of-epochs ratio from 1.0x to 1.5x between runs. The median-epoch ratio is
printed beside it, so the two can be compared. "% of peak" is the
training FLOPs (3x the forward's, counted by ``torch.utils.flop_counter``) per second over the
machine's fp32 matmul peak through torch (the best of measurements at the start and the end of the
run). The machine is shared: read the ratios, measured side by side, not the absolute figures.
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
from pathlib import Path

from _common import machine, matmul_peak_gflops

HERE = Path(__file__).resolve().parent

_WORKER = r"""
import json, sys, time
import numpy as np, torch
from cnnkit import callbacks, models, optimizers

who, name, images, epochs, precision = sys.argv[1], sys.argv[2], int(sys.argv[3]), int(sys.argv[4]), sys.argv[5]
rng = np.random.default_rng(0)
x = rng.random((images, 32, 32, 3), dtype=np.float32)  # NHWC, as Keras and cnnkit's fit take it
y = rng.integers(0, 10, images)
torch.manual_seed(0)
model = models.create_model(name, num_classes=10, in_channels=3, input_size=32)
times = []
if who == "cnnkit":
    from cnnkit import mixed_precision
    mixed_precision.set_global_policy({"fp32": "float32", "bf16": "mixed_bfloat16"}[precision])
    model.dtype_policy = mixed_precision.global_policy()
    class Timer(callbacks.Callback):
        def on_epoch_begin(self, epoch, logs=None):
            self.started = time.perf_counter()
        def on_epoch_end(self, epoch, logs=None):
            times.append(time.perf_counter() - self.started)
    adamw = optimizers.AdamW(learning_rate=1e-3, weight_decay=5e-4)
    model.compile(optimizer=adamw, loss="sparse_categorical_crossentropy")
    model.fit(x, y, batch_size=128, epochs=epochs, verbose=0, callbacks=[Timer()])
else:
    from torch.utils.data import DataLoader, TensorDataset
    net = model.to(memory_format=torch.channels_last).train()
    data = TensorDataset(torch.from_numpy(x).permute(0, 3, 1, 2).contiguous(), torch.from_numpy(y).long())
    loader = DataLoader(data, batch_size=128, shuffle=True)
    optimizer = torch.optim.AdamW(net.parameters(), lr=1e-3, weight_decay=5e-4)
    loss_fn = torch.nn.CrossEntropyLoss()
    for epoch in range(epochs):
        started = time.perf_counter()
        for xb, yb in loader:
            xb = xb.contiguous(memory_format=torch.channels_last)
            with torch.autocast("cpu", dtype=torch.bfloat16, enabled=precision == "bf16"):
                loss = loss_fn(net(xb), yb)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
        times.append(time.perf_counter() - started)
from torch.utils.flop_counter import FlopCounterMode
model.eval()
with FlopCounterMode(display=False) as counter:
    model(torch.zeros(1, 3, 32, 32))
steady = times[1:] if len(times) > 1 else times
flops = 3 * counter.get_total_flops() / 1e9
print(json.dumps({"images/s": images / min(steady), "images/s median": images / float(np.median(steady)),
                  "train GFLOP/image": flops}))
"""


def run(tree: Path, who: str, name: str, images: int, epochs: int, precision: str) -> dict:
    env = {**os.environ, "PYTHONPATH": str(tree / "src")}
    done = subprocess.run([sys.executable, "-c", _WORKER, who, name, str(images), str(epochs), precision], env=env,
                          capture_output=True, text=True)  # fmt: skip
    if done.returncode != 0:
        raise RuntimeError(f"{who} {name} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--models", nargs="+", default=["resnet9", "resnet18_small", "mobilenet_v3_small"])
    parser.add_argument("--images", type=int, default=512)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--tree", type=Path, default=HERE.parent, help="the checkout whose src cnnkit runs from")
    parser.add_argument("--precision", choices=["fp32", "bf16"], default="fp32", help="cnnkit's step arithmetic")
    parser.add_argument("--plain-precision", choices=["fp32", "bf16"], default="fp32", help="the plain loop's")
    args = parser.parse_args()
    peak = matmul_peak_gflops()
    rows = []
    for name in args.models:
        results: dict[str, list[dict]] = {"cnnkit": [], "plain": []}
        for rep in range(args.reps):
            for who in ("cnnkit", "plain") if rep % 2 == 0 else ("plain", "cnnkit"):
                precision = args.precision if who == "cnnkit" else args.plain_precision
                results[who].append(run(args.tree, who, name, args.images, args.epochs, precision))
        speed = {who: statistics.median(r["images/s"] for r in rs) for who, rs in results.items()}
        typical = {who: statistics.median(r["images/s median"] for r in rs) for who, rs in results.items()}
        gflop = results["cnnkit"][0]["train GFLOP/image"]
        rows.append((name, gflop, speed["cnnkit"], speed["plain"], typical["cnnkit"] / typical["plain"]))
        print(f"{name} done", flush=True)
    peak = max(peak, matmul_peak_gflops())  # again at the end: a busy moment at the start understates it
    print(f"\n{machine()}; fp32 matmul peak through torch: {peak:.0f} GFLOP/s")
    print(f"cnnkit in {args.precision}, the plain loop in {args.plain_precision}")
    print(f"{args.images} random 32x32x3 images, batch 128, AdamW, {args.epochs} epochs (first = warm-up); "
          f"fastest steady epoch per run, median of {args.reps} alternating runs, fresh processes\n")  # fmt: skip
    print("| model | train GFLOP/image | cnnkit images/s | plain images/s | cnnkit / plain | "
          "(median epochs) | cnnkit % of peak |")  # fmt: skip
    print("| --- | ---: | ---: | ---: | ---: | ---: | ---: |")
    for name, gflop, mine, plain, typical in rows:
        print(f"| {name} | {gflop:.3f} | {mine:,.0f} | {plain:,.0f} | {mine / plain:.2f}x | {typical:.2f}x | "
              f"{100 * mine * gflop / peak:.0f}% |")  # fmt: skip


if __name__ == "__main__":
    main()
