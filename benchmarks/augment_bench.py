"""cnnkit's hand-written augmentation ops against torchvision's ``transforms.v2``, and each new op.

    python benchmarks/augment_bench.py speed [--reps 7] [--batch-size 128]
    python benchmarks/augment_bench.py accuracy [--epochs 6] [--seed 0]

``speed``: milliseconds per batch of 128 images (digits-sized 1x8x8 and CIFAR-sized 3x32x32) on the
CPU, one thread; every variant runs once per repetition, in turn (alternating), and the median
over repetitions is printed with its ratio to the first row of its group. torchvision's transforms
draw one random set of parameters per call, so each is timed three ways: on the whole batch (every
image gets the same draw), on ``GROUPS`` slices (what cnnkit registers) and per image.

``accuracy``: ``cnnkit train --data digits`` with each policy, the same seed, split and schedule;
the test accuracy and the training time. torchvision's version of each existing hand-written op
(``tv-crop``, ``tv-affine``, ``tv-flip``) is registered here for the comparison only.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from collections.abc import Callable
from pathlib import Path

import torch
from torchvision.transforms import v2

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from cnnkit.data import augment as A  # noqa: E402

Op = Callable[[torch.Tensor, torch.Tensor], object]


def _torchvision_ways(transform: v2.Transform) -> dict[str, Op]:
    return {
        "torchvision, whole batch": lambda x, y: transform(x),
        f"torchvision, {A.GROUPS} slices": lambda x, y: A.in_groups(transform)(x),
        "torchvision, per image": lambda x, y: torch.stack([transform(image) for image in x]),
    }


def _groups(size: int, classes: int) -> dict[str, dict[str, Op]]:
    """Each op: cnnkit's own first (when it has one), then torchvision's ways of running its equivalent."""
    image = lambda op: lambda x, y: op(x)  # noqa: E731
    return {
        "flip": {"cnnkit (per image, vectorized)": image(A.random_flip),
                 **_torchvision_ways(v2.RandomHorizontalFlip())},
        "crop": {"cnnkit (per image, vectorized)": image(A.random_crop),
                 **_torchvision_ways(v2.RandomCrop(size, padding=2))},
        "affine": {"cnnkit (per image, vectorized)": image(A.random_affine),
                   **_torchvision_ways(v2.RandomAffine(10, scale=(0.9, 1.1), shear=5.7))},
        "cutout / erase": {"cnnkit cutout (per image, vectorized)": image(A.random_cutout),
                           **_torchvision_ways(v2.RandomErasing(p=1.0, scale=(1 / 16, 1 / 16), ratio=(1, 1)))},
        "randaugment": _torchvision_ways(v2.RandAugment()),
        "trivialaugment": _torchvision_ways(v2.TrivialAugmentWide()),
        "jitter": _torchvision_ways(v2.ColorJitter(0.4, 0.4, 0.4)),
        "mixup": {"torchvision (one lambda per batch)": v2.MixUp(alpha=0.2, num_classes=classes)},
        "cutmix": {"torchvision (one box per batch)": v2.CutMix(alpha=1.0, num_classes=classes)},
    }  # fmt: skip


def speed(args: argparse.Namespace) -> None:
    torch.set_num_threads(1)
    print(f"torch {torch.__version__}, CPU, 1 thread, batch {args.batch_size}, median of {args.reps} alternating "
          f"repetitions of {args.calls} calls; shared machine (other jobs): compare ratios within a group")  # fmt: skip
    for shape in [(1, 8, 8), (3, 32, 32)]:
        x = torch.rand(args.batch_size, *shape)
        y = torch.randint(0, 10, (args.batch_size,))
        groups = _groups(shape[-1], 10)
        times: dict[tuple[str, str], list[float]] = {(g, w): [] for g, ways in groups.items() for w in ways}
        for _ in range(args.reps):
            for (group, way), samples in times.items():
                op = groups[group][way]
                op(x, y)  # warm-up
                started = time.perf_counter()
                for _ in range(args.calls):
                    op(x, y)
                samples.append((time.perf_counter() - started) / args.calls * 1e3)
        print(f"\n## images {shape[0]}x{shape[1]}x{shape[2]}\n")
        print("| op | implementation | ms per batch | ratio |\n|---|---|---:|---:|")
        for group, ways in groups.items():
            first = statistics.median(times[(group, next(iter(ways)))])
            for way in ways:
                ms = statistics.median(times[(group, way)])
                print(f"| {group} | {way} | {ms:.3f} | {ms / first:.2f} |")


def _register_torchvision_twins() -> None:
    """torchvision's version of each hand-written op, run like cnnkit's torchvision ops (GROUPS slices)."""
    twins = {
        "tv-flip": v2.RandomHorizontalFlip(),
        "tv-crop": v2.Lambda(lambda x: v2.RandomCrop(x.shape[-1], padding=2)(x)),
        "tv-affine": v2.RandomAffine(10, scale=(0.9, 1.1), shear=5.7),
    }
    for name, transform in twins.items():
        A.register_augmentation(A.Augmentation(name, f"torchvision's {name[3:]}", A.in_groups(transform)))


def accuracy(args: argparse.Namespace) -> None:
    from cnnkit.recipe import TrainConfig, train

    _register_torchvision_twins()
    policies = args.policies.split(",")
    print(f"torch {torch.__version__}; cnnkit train --data digits --epochs {args.epochs} --seed {args.seed} "
          f"--deterministic, CPU; shared machine (times are noisy, accuracy is not)\n")  # fmt: skip
    print("| --augment | test accuracy | test loss | seconds |\n|---|---:|---:|---:|")
    for policy in policies:
        config = TrainConfig(data="digits", epochs=args.epochs, seed=args.seed, deterministic=True, augment=policy,
                             out=str(Path(args.out) / policy), verbose=0, report=False)  # fmt: skip
        result = train(config)
        print(f"| {policy} | {result.test.accuracy:.2%} | {result.test.loss:.4f} | {result.seconds:.1f} |", flush=True)


POLICIES = ("none,crop+affine,tv-crop+tv-affine,crop+affine+cutout,crop+affine+erase,crop+affine+jitter,"
            "crop+affine+randaugment,crop+affine+trivialaugment,crop+affine+mixup,crop+affine+cutmix")  # fmt: skip


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    sub = parser.add_subparsers(dest="what", required=True)
    fast = sub.add_parser("speed")
    fast.add_argument("--reps", type=int, default=7)
    fast.add_argument("--calls", type=int, default=10)
    fast.add_argument("--batch-size", type=int, default=128)
    good = sub.add_parser("accuracy")
    good.add_argument("--epochs", type=int, default=6)
    good.add_argument("--seed", type=int, default=0)
    good.add_argument("--policies", default=POLICIES)
    good.add_argument("--out", default="/tmp/cnnkit-augment-bench")
    args = parser.parse_args()
    speed(args) if args.what == "speed" else accuracy(args)


if __name__ == "__main__":
    main()
