"""CPU inference, side by side in one run: PyTorch eager (as cnnkit runs it, and plain) vs TorchScript vs
ONNX Runtime vs ONNX Runtime INT8.

For the article's CNN (trained for two epochs on digits, so INT8's accuracy means something)
and ResNet-18 (torchvision's, 10 classes, 32x32x3 input, random weights): throughput at a
large batch and batch-1 latency, median of repeats, the backends interleaved in every
round so the machine's load hits them alike. Then ``predict`` (the library path of
``cnnkit predict``) on generated folders of 1,000 and 10,000 PNGs with each backend, each in
its own process: images/second and peak memory (the main process and the decoding workers).

    PYTHONPATH=src python benchmarks/inference_bench.py            # the full run (~5 minutes on 2 cores)
    PYTHONPATH=src python benchmarks/inference_bench.py --quick    # a smoke run
"""

from __future__ import annotations

import argparse
import copy
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

SRC = Path(__file__).resolve().parents[1] / "src"
sys.path.insert(0, str(SRC))

from cnnkit import datasets, models, seed_everything  # noqa: E402
from cnnkit.export.common import export_metadata, reference_data  # noqa: E402
from cnnkit.export.exporter import build_onnx, torch_probabilities  # noqa: E402
from cnnkit.export.onnx import open_onnx, with_metadata  # noqa: E402
from cnnkit.export.quantize import compare_int8, quantize_int8  # noqa: E402
from cnnkit.export.torchscript import TorchScriptRunner, torchscript_archive  # noqa: E402
from cnnkit.inference import TorchPredictor  # noqa: E402
from cnnkit.runtime import prefer_channels_last  # noqa: E402


def machine() -> str:
    import onnx
    import onnxruntime

    cpu = platform.processor() or "?"
    cpuinfo = Path("/proc/cpuinfo")
    if cpuinfo.exists():
        names = [
            line.split(":", 1)[1].strip() for line in cpuinfo.read_text().splitlines() if line.startswith("model name")
        ]
        cpu = names[0] if names else cpu
    return (
        f"{cpu}, {os.cpu_count()} cores visible, torch threads {torch.get_num_threads()}; Python "
        f"{platform.python_version()}, torch {torch.__version__}, onnxruntime {onnxruntime.__version__}, "
        f"onnx {onnx.__version__}, numpy {np.__version__}, {platform.system()} {platform.release()}"
    )


def article_model(epochs: int) -> models.Model:
    seed_everything(0)
    (x, y), _ = datasets.load_data("digits")
    model = models.create_model("seed", num_classes=10, in_channels=1, input_size=28)
    model.class_names = [str(i) for i in range(10)]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(x, y, epochs=epochs, batch_size=64, verbose=0)
    model.training_summary["data"] = "digits"
    return model.eval()


def resnet18() -> models.Model:
    import torchvision

    if "resnet18" in models.list_models():
        return models.create_model("resnet18", num_classes=10, in_channels=3, input_size=32).eval()
    torch.manual_seed(0)
    return models.Model(torchvision.models.resnet18(num_classes=10), input_shape=(32, 32, 3), name="resnet18").eval()


def exports(model: models.Model) -> tuple[bytes, bytes, bytes, str]:
    """The float ONNX, INT8 ONNX and TorchScript exports of ``model``, and the INT8 check's report."""
    reference = reference_data(model)
    float_bytes, _ = build_onnx(model, source_sha256=None, reference=reference)
    metadata = export_metadata(model, source_sha256=None, export_format="onnx", quantization="int8")
    int8_bytes = with_metadata(quantize_int8(float_bytes, reference.calibration.numpy()), metadata)
    report = compare_int8(
        open_onnx(float_bytes), open_onnx(int8_bytes), reference.images.numpy(), reference.labels,
        source=reference.source,
    )  # fmt: skip
    archive = torchscript_archive(model, export_metadata(model, source_sha256=None, export_format="torchscript"))
    return float_bytes, int8_bytes, archive, str(report)


def plain_eager(model: models.Model):
    """The model in eager PyTorch without cnnkit's inference speed-ups: weights in NCHW memory and
    every layer on torch's operators (the model as written, without the ``kernels.fuse`` pass)."""
    plain = copy.deepcopy(model).to(memory_format=torch.contiguous_format)
    return torch_probabilities(plain)


def runners(model: models.Model, built: tuple[bytes, bytes, bytes, str], threads: int) -> dict:
    """Each backend as ``fn(images (B, C, H, W) float32) -> probabilities``, all limited to ``threads``."""
    float_bytes, int8_bytes, archive, _ = built
    torch.set_num_threads(threads)  # eager and TorchScript
    prefer_channels_last(model)  # as load_model and fit leave a model
    return {
        "PyTorch eager": TorchPredictor(model, "cpu").predict_proba,  # as cnnkit runs it: through kernels.fuse
        "PyTorch eager, plain (NCHW, torch ops only)": plain_eager(model),
        "TorchScript": TorchScriptRunner(archive).run,
        "ONNX Runtime": open_onnx(float_bytes, threads=threads).run,
        "ONNX Runtime INT8": open_onnx(int8_bytes, threads=threads).run,
    }


def interleaved(fns: dict, x: np.ndarray, repeats: int, calls: int) -> dict[str, float]:
    """Median seconds of ``calls`` calls of each fn, over ``repeats`` rounds that visit every fn in turn."""
    for fn in fns.values():  # warm up: first-call allocations, lazy initialization
        fn(x)
    times: dict[str, list[float]] = {name: [] for name in fns}
    for _ in range(repeats):
        for name, fn in fns.items():
            start = time.perf_counter()
            for _ in range(calls):
                fn(x)
            times[name].append((time.perf_counter() - start) / calls)
    return {name: statistics.median(t) for name, t in times.items()}


def bench_model(name: str, model: models.Model, batch: int, repeats: int, thread_counts: list[int]) -> list[str]:
    built = exports(model)
    h, w, c = model.image_shape
    rng = np.random.default_rng(0)
    big = rng.random((batch, c, h, w), dtype=np.float32)
    one = rng.random((1, c, h, w), dtype=np.float32)
    lines = [
        f"### {name} ({sum(p.numel() for p in model.parameters()):,} parameters, input {h}x{w}x{c})",
        "",
        f"| threads | backend | images/s at batch {batch} | x eager | batch-1 latency (ms) | x eager |",
        "| ---: | --- | ---: | ---: | ---: | ---: |",
    ]
    for threads in thread_counts:
        fns = runners(model, built, threads)
        throughput = interleaved(fns, big, repeats, 1)
        latency = interleaved(fns, one, repeats, 20)
        eager_tp, eager_lat = batch / throughput["PyTorch eager"], latency["PyTorch eager"]
        for backend in fns:
            tp, lat = batch / throughput[backend], latency[backend]
            lines.append(
                f"| {threads} | {backend} | {tp:,.0f} | {tp / eager_tp:.2f} | {lat * 1e3:.3f} | {eager_lat / lat:.2f} |"
            )
    torch.set_num_threads(os.cpu_count() or 1)
    lines += ["", f"INT8 export check: {built[3]}", ""]
    return lines


def write_folder(folder: Path, n: int) -> None:
    """``n`` 28x28 grey PNGs: digits test images with a little noise, so no two files are alike."""
    from PIL import Image

    _, (x_test, _) = datasets.load_data("digits")
    rng = np.random.default_rng(0)
    folder.mkdir(parents=True)
    for i in range(n):
        pixels = x_test[i % len(x_test), :, :, 0] * 255 + rng.normal(0, 8, (28, 28))
        Image.fromarray(np.clip(pixels, 0, 255).astype(np.uint8)).save(folder / f"{i:06d}.png")


# Peak memory is VmHWM, the main process's own high-water mark: ru_maxrss would also count the
# benchmark process this one was forked from. The decoding workers hold two chunks each at most.
_DRIVER = """
import json, re, sys, time
from pathlib import Path
from cnnkit.inference import load_predictor
from cnnkit.predict import default_workers, predict_files
predictor = load_predictor(sys.argv[1], sys.argv[3])
start = time.perf_counter()
n = sum(1 for p in predict_files(predictor, [sys.argv[2]], top_k=3, batch_size=int(sys.argv[4])) if p.error is None)
seconds = time.perf_counter() - start
peak_kb = int(re.search(r"VmHWM:\\s+(\\d+)", Path("/proc/self/status").read_text()).group(1))
print(json.dumps({"n": n, "seconds": seconds, "peak_kb": peak_kb, "workers": default_workers()}))
"""


def bench_predict(model: models.Model, sizes: list[int], batch: int) -> list[str]:
    lines = [
        f"### `predict` on a folder of 28x28 PNGs (article's CNN, batch {batch} as in `cnnkit predict`, "
        "default decoding workers)",
        "",
        "| backend | images | images/s | peak RSS of the main process (MB) |",
        "| --- | ---: | ---: | ---: |",
    ]
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    with tempfile.TemporaryDirectory(prefix="cnnkit-bench-") as tmp:
        path = Path(tmp) / "model.safetensors"
        model.save(path)
        for n in sizes:
            write_folder(Path(tmp) / f"images-{n}", n)
        subprocess.run([sys.executable, "-c", _DRIVER, str(path), str(Path(tmp) / f"images-{sizes[0]}"), "onnx",
                        str(batch)], check=True, env=env, capture_output=True)  # builds the ONNX cache  # fmt: skip
        alone = _model_alone(path, batch)
        for backend in ("onnx", "torch"):
            for n in sizes:
                out = subprocess.run(
                    [sys.executable, "-c", _DRIVER, str(path), str(Path(tmp) / f"images-{n}"), backend, str(batch)],
                    check=True, env=env, capture_output=True, text=True,
                )  # fmt: skip
                r = json.loads(out.stdout.strip().splitlines()[-1])
                assert r["n"] == n, r
                lines.append(f"| {backend} | {n:,} | {n / r['seconds']:,.0f} | {r['peak_kb'] / 1024:.0f} |")
                workers = r["workers"]
    lines.append("")
    lines.append(
        f"{workers} decoding worker processes. The model alone on random batches of the same size: "
        + ", ".join(f"{backend} {ips:,.0f} images/s" for backend, ips in alone.items())
    )
    return lines + [""]


def _model_alone(path: Path, batch: int) -> dict[str, float]:
    from cnnkit.inference import load_predictor

    predictors = {backend: load_predictor(path, backend).predict_proba for backend in ("onnx", "torch")}
    x = np.random.default_rng(0).random((batch, 1, 28, 28), dtype=np.float32)
    seconds = interleaved(predictors, x, 7, 5)
    return {backend: batch / s for backend, s in seconds.items()}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="a smoke run: fewer repeats, smaller folders")
    args = parser.parse_args()
    repeats = 3 if args.quick else 7
    thread_counts = sorted({1, os.cpu_count() or 1})
    print("## Inference\n")
    print(f"Machine: {machine()}\n")
    print(f"Command: `PYTHONPATH=src python benchmarks/inference_bench.py{' --quick' if args.quick else ''}`; "
          f"median of {repeats} interleaved rounds.\n")  # fmt: skip
    seed = article_model(epochs=1 if args.quick else 3)
    lines = bench_model("The article's CNN (seed)", seed, batch=1000, repeats=repeats, thread_counts=thread_counts)
    lines += bench_model("ResNet-18 (torchvision)", resnet18(), batch=256, repeats=repeats, thread_counts=thread_counts)
    lines += bench_predict(seed, [500, 2000] if args.quick else [1000, 10_000], batch=64)
    print("\n".join(lines))


if __name__ == "__main__":
    main()
