"""What every export shares: the graph's contract, its metadata, and the inputs it is checked on.

The contract of an exported cnnkit model, whatever the format:

- input ``images``: float32 ``(batch, C, H, W)`` with pixel values in [0, 1]. The model's
  per-channel normalization is applied *inside* the graph (cnnkit models normalize in
  ``forward``), so a deployment feeds decoded pixels divided by 255 and nothing else.
- output ``probabilities``: float32 ``(batch, classes)``, the softmax of the model's logits (a
  one-unit binary model: both classes, ``[1 - p, p]``, :mod:`cnnkit.classifier`) —
  what ``cnnkit predict`` prints, whichever backend runs it.
- the batch axis is dynamic; the image size and channels are fixed (``input_shape``).

The same facts travel as metadata: ONNX ``metadata_props`` (strings; lists and dicts as
JSON) and a ``cnnkit.json`` extra file in TorchScript archives.
"""

from __future__ import annotations

import json
import os
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
from torch import nn

from cnnkit.classifier import classify
from cnnkit.data.catalog import resolve_data
from cnnkit.data.saved_split import evaluation_data
from cnnkit.data.transforms import conform, images_to_tensor
from cnnkit.errors import DataError, ExportError, ModelFileError
from cnnkit.export.metadata import (  # read back without torch: there; re-exported here, where callers look
    EXPORT_VERSION,
    INPUT_NAME,
    OUTPUT_NAME,
    ExportInfo,
    metadata_to_strings,
    parse_metadata,
)
from cnnkit.models.model import Model

__all__ = [
    "EXPORT_VERSION",
    "INPUT_NAME",
    "OUTPUT_NAME",
    "ExportInfo",
    "Probabilities",
    "ReferenceData",
    "export_metadata",
    "fixed_image_shape",
    "metadata_to_strings",
    "parse_metadata",
    "reference_data",
]

INPUT_DESCRIPTION = (
    "float32 (batch, channels, height, width) images with pixel values in [0, 1]; "
    "the normalization below is applied inside the graph, do not apply it again"
)
OUTPUT_DESCRIPTION = "float32 (batch, classes) class probabilities (softmax of the logits)"


class Probabilities(nn.Module):
    """A cnnkit model with its softmax: ``(B, C, H, W)`` images in [0, 1] -> ``(B, classes)`` probabilities.

    A one-unit (binary) model's graph gives both classes' probabilities, ``[1 - p, p]``, and a
    model that takes 0..255 pixels gets them scaled inside the graph (:mod:`cnnkit.classifier`),
    so a deployment reads every model alike.
    """

    def __init__(self, model: Model) -> None:
        super().__init__()
        self.model = model

    def forward(self, images: torch.Tensor) -> torch.Tensor:
        return torch.softmax(classify(self.model, images).float(), dim=1)


def fixed_image_shape(model: Model) -> tuple[int, int, int]:
    """The model's ``(H, W, C)``; an export needs every one of them fixed."""
    shape = model.image_shape
    if shape is None or any(n is None for n in shape):
        raise ExportError(f"model {model.name!r} has no fixed input shape (got {shape}); build it first")
    return tuple(int(n) for n in shape)  # type: ignore[return-value]


def export_metadata(
    model: Model, *, source_sha256: str | None, export_format: str, quantization: str = "none"
) -> dict[str, Any]:
    """Everything a deployment needs to use the exported graph without cnnkit."""
    from cnnkit import __version__

    summary = model.training_summary or {}
    classes = model.class_names
    return {
        "format": "cnnkit-export",
        "export_version": str(EXPORT_VERSION),
        "export_format": export_format,
        "cnnkit_version": __version__,
        "torch_version": torch.__version__,
        "name": model.name,
        "class_names": list(classes) if classes else None,
        "input_shape": list(fixed_image_shape(model)),
        "input_layout": "NCHW",
        "input": INPUT_DESCRIPTION,
        "normalization": model.normalization,
        "normalization_applied": "inside the graph",
        "output": OUTPUT_DESCRIPTION,
        "quantization": quantization,
        "source_sha256": source_sha256 or "",
        "training": {key: summary[key] for key in ("model", "data", "test") if key in summary},
    }


@dataclass(frozen=True)
class ReferenceData:
    """Images an export is checked on: held-out images (with labels when known) and calibration images."""

    images: torch.Tensor  # (N, C, H, W) in [0, 1], at the model's input shape
    labels: np.ndarray | None  # (N,) when the images come from a labelled data set with the model's classes
    calibration: torch.Tensor  # (M, C, H, W): training images, for INT8 calibration
    source: str  # what the images are, for the report
    calibration_source: str  # what the calibration images are


def reference_data(
    model: Model,
    data: str | None = None,
    *,
    run_dir: str | os.PathLike | None = None,
    data_dir: str | None = None,
    limit: int = 500,
    calibration: int = 256,
) -> ReferenceData:
    """The labelled images an export is checked (and calibrated) on.

    ``data`` takes what ``cnnkit train --data`` takes (a registered name, a folder, a CSV) and
    means the same as for ``cnnkit evaluate`` (:func:`cnnkit.data.saved_split.evaluation_data`);
    None means the run's own recorded split (``run_dir/split.json``): its test images for
    parity and INT8 accuracy, its training images for calibration. Without a run, the
    training summary's data set when it is built in. Seeded synthetic images only when there
    is no data at all, and :attr:`ReferenceData.source` then says so.

    A data set that must be downloaded is used only when named explicitly, so an export never
    reaches for the network on its own.
    """
    from cnnkit.data import DATASETS

    shape = fixed_image_shape(model)
    classes = list(model.class_names or []) or None
    has_split = run_dir is not None and (Path(run_dir) / "split.json").exists()
    explicit = data is not None
    if data is None and not has_split:
        name = (model.training_summary or {}).get("data")
        info = DATASETS.get(name) if isinstance(name, str) else None
        if info is None or not info.builtin:
            why = "the training data is unknown" if name is None else f"{name!r} is not a built-in data set"
            return _synthetic(shape, calibration, why)
        data, run_dir = info.name, None
    common = {"class_names": classes, "input_shape": shape, "run_dir": run_dir if has_split else None,
              "data_dir": data_dir, "download": explicit}  # fmt: skip
    try:
        test, source = evaluation_data(data, role="test", **common)
    except DataError as e:
        if explicit:
            raise
        return _synthetic(shape, calibration, f"the run's data cannot be read: {e}")
    try:
        train, calibration_source = evaluation_data(data, role="train", **common)
    except DataError:  # e.g. a folder of test images only: calibrate on those
        train, calibration_source = test, source
    x = conform(images_to_tensor(test.images[:limit]), shape).contiguous()  # (N, C, H, W)
    labels = test.labels[:limit].astype(np.int64)
    pick = np.sort(np.random.default_rng(0).permutation(len(train))[:calibration])
    calib = conform(images_to_tensor(train.images[pick]), shape).contiguous()
    if data is not None and resolve_data(data) is not None:  # a registered data set: "359 digits test images"
        name = resolve_data(data).name  # type: ignore[union-attr]
        source, calibration_source = f"{name} test images", f"{name} training images"
    else:  # "359 images of the run's test split of photos/"
        source, calibration_source = f"images of {source}", f"images of {calibration_source}"
    return ReferenceData(x, labels, calib, f"{len(x)} {source}", f"{len(calib)} {calibration_source}")


def _synthetic(shape: tuple[int, int, int], calibration: int, why: str) -> ReferenceData:
    """Seeded random images, when there is no data at all to check on."""
    generator = torch.Generator().manual_seed(0)
    height, width, channels = shape
    x = torch.rand(64, channels, height, width, generator=generator)
    calib = torch.rand(calibration, channels, height, width, generator=generator)
    source = f"{len(x)} synthetic images ({why}; pass --data NAME|FOLDER|CSV for real ones)"
    return ReferenceData(x, None, calib, source, f"{len(calib)} synthetic images")


def archive_metadata(raw: bytes | None, path: str | os.PathLike, export_format: str, foreign: str) -> dict[str, Any]:
    """The JSON metadata cnnkit writes into its TorchScript and ``.pt2`` archives (``raw``, None when the
    archive has none) -> the dict, checked to name ``export_format``; ``foreign`` is the error otherwise."""
    if raw is None:
        raise ModelFileError(foreign)
    try:
        metadata = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelFileError(f"{path} is damaged: its export metadata is not valid JSON") from None
    if not isinstance(metadata, dict) or metadata.get("export_format") != export_format:
        raise ModelFileError(foreign)
    return metadata
