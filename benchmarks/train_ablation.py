"""What each of the engine's speed-ups buys: `Sequential.fit` on the article's CNN with one switched off.

    python benchmarks/train_ablation.py [--reps 5] [--images 8192] [--epochs 4]

The same measurement as train_speed.py (batch 128, Adam, the built-in digits tiled to --images,
steady-state epochs, each run in a fresh process), for the full engine and for the engine
without one change at a time; the variants alternate within each repetition and each figure
is the median over --reps. A change's worth is the full engine's speed over the speed without it.
"""

from __future__ import annotations

import statistics
import sys
import tempfile
from pathlib import Path

from _common import machine, run_worker, throughput_parser, worker_options, write_digits

CHANGES = {
    "nothing": "the full engine",
    "native-kernels": "conv -> pool -> ReLU blocks as C kernels (cnnkit.kernels)",
    "pool-first": "activation after max pooling (on 4x fewer values), and the kernels built on it",
    "channels-last": "channels-last images and conv weights",
    "allocator": "tensor memory kept in the process (glibc mallopt)",
    "fused-adam": "torch's fused Adam kernel",
}


def main() -> None:
    parser = throughput_parser(__doc__)
    args = parser.parse_args()
    speeds: dict[str, list[float]] = {change: [] for change in CHANGES}
    with tempfile.TemporaryDirectory() as tmp:
        data = write_digits(Path(tmp) / "digits.npz")
        common = worker_options(args)
        for rep in range(args.reps):
            for change in CHANGES:
                result = run_worker(
                    sys.executable, "cnnkit-fit", data, *common, "--seed", str(rep), "--without", change
                )
                speeds[change].append(result["images_per_second"])
                print(f"rep {rep + 1}/{args.reps}  without {change:<14} {result['images_per_second']:8,.0f} images/s",
                      flush=True)  # fmt: skip
    print(f"\n{machine()}; article CNN, Sequential.fit, batch {args.batch_size}, Adam; median of {args.reps} runs\n")
    full = statistics.median(speeds["nothing"])
    for change, what in CHANGES.items():
        median = statistics.median(speeds[change])
        label = "full engine" if change == "nothing" else f"without {change}"
        gain = "" if change == "nothing" else f"  -> it buys {full / median:.2f}x  ({what})"
        print(f"  {label:<24} {median:8,.0f} images/s{gain}")


if __name__ == "__main__":
    main()
