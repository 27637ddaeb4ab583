"""The metadata of a cnnkit export, read back: no torch, no onnx package.

Every export carries the facts a deployment needs (class names, input shape, normalization, the
model file it came from) as string properties (:mod:`cnnkit.export.common` says what they mean
and writes them). Reading them needs neither torch nor the ``onnx`` package, so this module
imports neither: ``cnnkit predict`` on an ONNX export starts without either (seconds of start-up).
"""

from __future__ import annotations

import json
from dataclasses import dataclass
from typing import Any

from cnnkit.errors import ModelFileError

__all__ = ["EXPORT_VERSION", "INPUT_NAME", "OUTPUT_NAME", "ExportInfo", "metadata_to_strings", "parse_metadata"]

# Bump when the graph's contract changes: cached exports are then rebuilt. 2: a one-unit model gives two classes.
EXPORT_VERSION = 2
INPUT_NAME = "images"
OUTPUT_NAME = "probabilities"
_JSON_KEYS = ("class_names", "input_shape", "normalization", "training", "self_check")


def metadata_to_strings(metadata: dict[str, Any]) -> dict[str, str]:
    """ONNX metadata_props are strings: structured values become JSON."""
    return {k: v if isinstance(v, str) else json.dumps(v) for k, v in metadata.items()}


@dataclass(frozen=True)
class ExportInfo:
    """The metadata of an exported cnnkit model, parsed and checked."""

    class_names: list[str] | None
    image_shape: tuple[int, int, int]
    normalization: dict[str, list[float]] | None
    quantization: str
    source_sha256: str
    export_version: int
    self_check: dict[str, Any] | None
    raw: dict[str, Any]


def parse_metadata(props: dict[str, str], source: str) -> ExportInfo:
    """Read cnnkit's metadata back from an export's string properties; a clear error if it is not there."""
    if props.get("format") != "cnnkit-export":
        raise ModelFileError(
            f"{source} has no cnnkit metadata (class names, input shape): "
            f"export it with `cnnkit export MODEL --format onnx`"
        )
    try:
        raw = {k: json.loads(v) if k in _JSON_KEYS else v for k, v in props.items()}
        shape = tuple(int(n) for n in raw["input_shape"])
        version = int(raw["export_version"])
    except (KeyError, ValueError, TypeError) as e:
        raise ModelFileError(f"{source} is damaged: its cnnkit metadata cannot be read ({e})") from None
    if version > EXPORT_VERSION:
        raise ModelFileError(f"{source} was exported by a newer cnnkit (export format {version}); upgrade cnnkit")
    if len(shape) != 3:
        raise ModelFileError(f"{source} is damaged: input_shape {shape} is not (height, width, channels)")
    return ExportInfo(
        class_names=raw.get("class_names"),
        image_shape=shape,  # type: ignore[arg-type]
        normalization=raw.get("normalization"),
        quantization=raw.get("quantization", "none"),
        source_sha256=raw.get("source_sha256", ""),
        export_version=version,
        self_check=raw.get("self_check"),
        raw=raw,
    )
