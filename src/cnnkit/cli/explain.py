"""``cnnkit explain``: look inside a model on one image: kernels, feature maps, heat maps."""

from __future__ import annotations

import argparse
import json

from cnnkit.cli._common import console

# cnnkit.explain.files.METHODS, spelled out so that `cnnkit --help` need not import torch (a test checks they agree).
METHODS = ("filters", "feature-maps", "gradcam", "gradcam++", "layercam", "saliency", "integrated-gradients")


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="filters, feature maps or a heat map (Grad-CAM, saliency) of a model on one image, as PNG",
        description="Explain MODEL's prediction for IMAGE. filters: the first convolution's kernels; "
        "feature-maps: every convolution's output (or --layer's); gradcam, gradcam++, layercam, saliency, "
        "integrated-gradients: a heat map over the image for the predicted class (or --class).",
    )
    p.add_argument("model", help="model file or run folder")
    p.add_argument("image", help="image file (PNG, JPEG, BMP, GIF, TIFF, WebP)")
    p.add_argument("--method", choices=METHODS, default="gradcam")
    p.add_argument("--layer", metavar="NAME", help="layer to look at (default: the first/last convolution)")
    p.add_argument("--class", dest="target", metavar="NAME", help="class to explain (default: the predicted one)")
    p.add_argument("--out", metavar="PNG", help="where to write the picture (default: IMAGE-METHOD.png here)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.explain.files import explain_file
    from cnnkit.models import load_model
    from cnnkit.runs import resolve_model

    path = resolve_model(args.model).model_file("explain the .safetensors model file it came from (no gradients)")
    model = load_model(path)
    result = explain_file(model, args.image, args.method, layer=args.layer, target=args.target, out=args.out)
    if args.json:
        print(json.dumps({"model": args.model, "image": args.image, **result.to_dict()}))
        return 0
    console.print(f"{args.image}: predicted {result.predicted} ({result.probability:.1%})")
    what = result.method + (f" for class {result.target}" if result.target is not None else "")
    where = f" at layer {result.layer}" if result.layer else ""
    console.print(f"{what}{where} written to {result.path}")
    return 0
