"""CIFAR-10-shaped training throughput on a GPU: ResNet-9 (the DAWNBench/airbench class), bf16, channels-last, compile.

    python benchmarks/gpu_train.py [--epochs 6] [--batch-size 512] [--no-compile] [--device cuda]

50,000 synthetic 3x32x32 images and labels live on the GPU; the cnnkit engine trains on them exactly
as `cnnkit train` would (TensorBatches, the Stepper with on-device flip+crop augmentation, fused
SGD-Nesterov, one-cycle schedule, label smoothing), and the script prints images/second and
seconds per epoch (median of the epochs after the first, which includes compilation).
For scale: airbench94 (Jordan, 2024) trains CIFAR-10 to 94% in 10 epochs of ~0.35 s on an A100,
about 140,000 images/s. Runs on the CPU too (--device cpu --images 2048) to check it works.
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "src"))

import torch  # noqa: E402

from cnnkit.data.augment import make_augment  # noqa: E402
from cnnkit.models import create_model  # noqa: E402
from cnnkit.runtime import describe_device, resolve_device  # noqa: E402
from cnnkit.train import losses, optimizers  # noqa: E402
from cnnkit.train.loop import Stepper, TensorBatches  # noqa: E402
from cnnkit.train.settings import TrainSettings  # noqa: E402


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--images", type=int, default=50_000)
    parser.add_argument("--batch-size", type=int, default=512)
    parser.add_argument("--precision", default="bf16", choices=["fp32", "bf16", "fp16"])
    parser.add_argument("--no-compile", action="store_true")
    parser.add_argument("--device", default="auto")
    args = parser.parse_args()
    device = resolve_device(args.device)
    torch.backends.cudnn.benchmark = True
    x = torch.rand(args.images, 3, 32, 32, device=device).contiguous(memory_format=torch.channels_last)
    y = torch.randint(0, 10, (args.images,), device=device)
    model = create_model("resnet9", num_classes=10, in_channels=3, input_size=32).to(device)
    model = model.to(memory_format=torch.channels_last)
    optimizer = optimizers.SGD(learning_rate=0.2, momentum=0.9, nesterov=True).build(
        optimizers.decay_groups(model, 5e-4)
    )
    steps = -(-args.images // args.batch_size)
    schedule = optimizers.make_schedule("onecycle", optimizer, steps * args.epochs)
    loss = losses.SparseCategoricalCrossentropy(label_smoothing=0.2)
    settings = TrainSettings(precision=args.precision, channels_last=True, augment=make_augment("flip+crop"),
                             compile=not args.no_compile)  # fmt: skip
    step = Stepper(model, loss, optimizer, settings, scheduler=schedule)
    batches = TensorBatches(x, y, args.batch_size)
    seconds = []
    for epoch in range(args.epochs):
        model.train()
        if device.type == "cuda":
            torch.cuda.synchronize()
        started = time.perf_counter()
        for xb, yb in batches:
            step(*settings.augment(xb, yb))  # the loop augments before each step, as train_one_epoch does
        if device.type == "cuda":
            torch.cuda.synchronize()
        seconds.append(time.perf_counter() - started)
        print(f"epoch {epoch + 1}: {seconds[-1]:.3f} s  ({args.images / seconds[-1]:,.0f} images/s)", flush=True)
    steady = statistics.median(seconds[1:]) if len(seconds) > 1 else seconds[0]
    print(f"\n{describe_device(device)}, torch {torch.__version__}, ResNet-9 ({model.count_params():,} params), "
          f"batch {args.batch_size}, {args.precision}, channels-last, compile={not args.no_compile}")  # fmt: skip
    print(f"steady state: {steady:.3f} s per epoch of {args.images:,} images = {args.images / steady:,.0f} images/s")


if __name__ == "__main__":
    main()
