"""``cnnkit explain``: look inside a model on one image: kernels, feature maps, heat maps.

The methods are the explain registry's (:mod:`cnnkit.explain.registry`), read when argparse
first needs them (checking ``--method``, printing this command's help), so building the parser
for ``cnnkit --help`` or any other command does not import torch.
"""

from __future__ import annotations

import argparse
import json
import textwrap
from collections.abc import Iterator
from typing import Any

from cnnkit.cli._common import console


class _Methods:
    """The registered method names, as argparse ``choices`` (any container will do): looked up when asked."""

    @staticmethod
    def _names() -> list[str]:
        from cnnkit.explain.registry import list_methods

        return [m.name for m in list_methods()]

    def __contains__(self, name: object) -> bool:
        return name in self._names()

    def __iter__(self) -> Iterator[str]:
        return iter(self._names())


class _Help(argparse.Action):
    """``-h``: this command's help, with the registered methods listed from the registry."""

    def __init__(self, option_strings: list[str], dest: str = argparse.SUPPRESS, **kwargs: Any) -> None:
        super().__init__(option_strings, dest, nargs=0, default=argparse.SUPPRESS, **kwargs)

    def __call__(self, parser: argparse.ArgumentParser, *args: Any) -> None:
        parser.epilog = _methods_text()
        parser.print_help()
        parser.exit()


def _methods_text() -> str:
    from cnnkit.explain.registry import DEFAULT_METHOD, list_methods

    kinds = {"heatmap": "heat map", "layer-maps": "feature maps", "filters": "kernels"}
    lines = ["methods (--method):"]
    for m in list_methods():
        default = "; the default" if m.name == DEFAULT_METHOD else ""
        text = f"{kinds.get(m.produces, m.produces)}: {m.description}{default}"
        lines += textwrap.wrap(text, 96, initial_indent=f"  {m.name:<22}", subsequent_indent=" " * 24)
    return "\n".join(lines)


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser(
        "explain",
        help="filters, feature maps or a heat map (Grad-CAM, saliency) of a model on one image, as PNG",
        description="Explain MODEL's prediction for IMAGE with one method (listed below): a heat map over the\n"
        "image for the predicted class (or --class), the kernels, or the feature maps.",
        formatter_class=argparse.RawDescriptionHelpFormatter,  # the method list keeps its columns
        add_help=False,
    )
    p.add_argument("-h", "--help", action=_Help, help="show this help message and exit")
    p.add_argument("model", help="model file or run folder")
    p.add_argument("image", help="image file (PNG, JPEG, BMP, GIF, TIFF, WebP)")
    # metavar: argparse would otherwise list the choices (and import torch) as soon as the parser is built.
    p.add_argument("--method", choices=_Methods(), metavar="METHOD", help="what to show: one of the methods below")
    p.add_argument("--layer", metavar="NAME", help="layer to look at (default: the first/last convolution)")
    p.add_argument("--class", dest="target", metavar="NAME", help="class to explain (default: the predicted one)")
    p.add_argument("--out", metavar="PNG", help="where to write the picture (default: IMAGE-METHOD.png here)")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from cnnkit.explain.registry import DEFAULT_METHOD
    from cnnkit.models import load_model
    from cnnkit.report.explanation import explain_file
    from cnnkit.runs import resolve_model

    path = resolve_model(args.model).model_file("explain the .safetensors model file it came from (no gradients)")
    model = load_model(path)
    method = args.method or DEFAULT_METHOD
    result = explain_file(model, args.image, method, layer=args.layer, target=args.target, out=args.out)
    if args.json:
        print(json.dumps({"model": args.model, "image": args.image, **result.to_dict()}))
        return 0
    console.print(f"{args.image}: predicted {result.predicted} ({result.probability:.1%})")
    what = result.method + (f" for class {result.target}" if result.target is not None else "")
    where = f" at layer {result.layer}" if result.layer else ""
    console.print(f"{what}{where} written to {result.path}")
    return 0
