"""``cnnkit export``: ONNX or TorchScript files, checked against the model before they are written."""

from __future__ import annotations

import argparse


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "export",
        help="export a model to ONNX, .pt2 (torch.export) or TorchScript, checked against PyTorch on real images",
        description="Export a model to ONNX (optionally INT8-quantized), .pt2 or TorchScript. The export takes "
        "(batch, C, H, W) float32 images in [0, 1] and returns class probabilities; normalization happens "
        "inside it, and class names, input shape and normalization travel in its metadata. It is checked "
        "against PyTorch on the run's own test split (or --data; synthetic images only when there is no "
        "data, and it says so) and written only if it agrees.",
    )
    p.add_argument("model", help="model file or run folder")
    p.add_argument("--format", choices=["onnx", "pt2", "torchscript"], default="onnx", dest="export_format",
                   help="onnx (ONNX Runtime and other runtimes); pt2 (torch.export, run by torch: predict --backend "
                   "torch, load_predictor); torchscript (libtorch C++ and mobile; made by torch.jit.trace, which "
                   "torch deprecates)")  # fmt: skip
    p.add_argument("--quantize", choices=["int8"], default=None, help="ONNX only: static INT8 quantization")
    p.add_argument("--out", default=None, help="output file (default: next to the model, e.g. model.onnx)")
    p.add_argument(
        "--data",
        default=None,
        help="data set name, folder or CSV to check (and calibrate) on "
        "(default: the run's own test split, from its split.json)",
    )
    p.add_argument(
        "--data-dir",
        default=None,
        help="the data cache for standard data sets (default: $CNNKIT_DATA, else ~/.cache/cnnkit)",
    )
    p.add_argument("--opset", type=int, default=None, help="ONNX opset (default 18, the oldest the exporter writes)")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.export import export_model
    from cnnkit.export.onnx import DEFAULT_OPSET

    result = export_model(
        args.model, args.export_format, quantize=args.quantize, out=args.out, data=args.data,
        data_dir=args.data_dir,
        opset=args.opset or DEFAULT_OPSET,
    )  # fmt: skip
    print(result.parity)
    if result.quantization is not None:
        print(result.quantization)
    kind = f"{result.format} int8" if result.quantization else result.format
    print(f"exported {kind} to {result.path} ({result.size / 1e6:.2f} MB)")
    return 0
