"""How long an ONNX export takes: torch's TorchScript-based exporter (before) against the dynamo one (now).

    python benchmarks/export_bench.py [--reps 3] [--model seed]

Both export the same model with its softmax (``cnnkit.export.common.Probabilities``) at batch 2
with a dynamic batch axis, alternating, in one process (the dynamo exporter's imports are paid
before the first timed run); the median of ``--reps`` runs of each and their ratio are printed.
"""

from __future__ import annotations

import argparse
import io
import statistics
import sys
import time
import warnings
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "src"))

from cnnkit.export.common import Probabilities  # noqa: E402
from cnnkit.export.onnx import onnx_graph  # noqa: E402
from cnnkit.models import create_model, get_model_entry  # noqa: E402


def traced(model) -> bytes:
    """The exporter cnnkit used before: TorchScript tracing (``dynamo=False``)."""
    h, w, c = model.image_shape
    buffer = io.BytesIO()
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        torch.onnx.export(Probabilities(model).eval(), (torch.rand(2, c, h, w),), buffer, dynamo=False,
                          opset_version=17, input_names=["images"], output_names=["probabilities"],
                          dynamic_axes={"images": {0: "batch"}, "probabilities": {0: "batch"}})  # fmt: skip
    return buffer.getvalue()


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--reps", type=int, default=3)
    parser.add_argument("--model", default="seed")
    args = parser.parse_args()
    entry = get_model_entry(args.model)
    model = create_model(args.model, num_classes=10, in_channels=entry.in_channels, input_size=entry.input_size)
    model.eval()
    ways = {"torch.onnx.export(dynamo=False) (before)": traced, "torch.onnx.export(dynamo=True) (now)": onnx_graph}
    onnx_graph(model)  # imports and first-call set-up, not timed
    times: dict[str, list[float]] = {name: [] for name in ways}
    for _ in range(args.reps):
        for name, export in ways.items():
            started = time.perf_counter()
            export(model)
            times[name].append(time.perf_counter() - started)
    print(f"torch {torch.__version__}, {args.model} at {model.image_shape}, median of {args.reps} alternating runs; "
          f"shared 2-core machine (load from other jobs): compare the ratio")  # fmt: skip
    first = None
    for name, samples in times.items():
        median = statistics.median(samples)
        first = first or median
        print(f"{name}: {median:.2f} s  ({median / first:.1f}x)")


if __name__ == "__main__":
    main()
