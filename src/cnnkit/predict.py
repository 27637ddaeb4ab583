"""Prediction on image files: files, folders (recursive) and globs, streamed in batches.

Every file goes through the one decoding path (:mod:`cnnkit.data.decode`) and the same
conversion to the model's input as training data; a file that cannot be read is
reported in its :class:`Prediction` and skipped, never fatal.
"""

from __future__ import annotations

import glob
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import torch

from cnnkit.data.decode import is_image_path, load_image
from cnnkit.data.transforms import conform
from cnnkit.errors import DataError
from cnnkit.evaluate import predict_logits
from cnnkit.models.model import Model

__all__ = ["Prediction", "expand_paths", "predict_files"]


@dataclass(frozen=True)
class Prediction:
    """The top-k classes of one file, or why it could not be read."""

    path: str
    labels: tuple[str, ...] = ()
    probabilities: tuple[float, ...] = ()
    error: str | None = None

    def to_dict(self) -> dict[str, object]:
        if self.error is not None:
            return {"path": self.path, "error": self.error}
        return {
            "path": self.path,
            "labels": list(self.labels),
            "probabilities": [round(p, 6) for p in self.probabilities],
        }


def expand_paths(inputs: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files as given; folders searched recursively for images; glob patterns expanded. Sorted per input."""
    for item in inputs:
        path = Path(item)
        if path.is_dir():
            yield from sorted(p for p in path.rglob("*") if p.is_file() and is_image_path(p))
        elif path.exists():
            yield path
        elif glob.has_magic(str(item)):
            matches = sorted(Path(p) for p in glob.glob(str(item), recursive=True))
            if not matches:
                raise DataError(f"{item}: no files match")
            yield from (p for p in matches if p.is_file())
        else:
            raise DataError(f"{item}: no such file or folder")


def _class_name(model: Model, index: int) -> str:
    return model.class_names[index] if model.class_names else str(index)


def predict_files(
    model: Model, inputs: Iterable[str | os.PathLike], *, top_k: int = 5, batch_size: int = 64
) -> Iterator[Prediction]:
    """Yield one :class:`Prediction` per file, in order, decoding and predicting ``batch_size`` at a time."""
    height, width, channels = model.image_shape
    k = min(top_k, len(model.class_names) if model.class_names else top_k)
    pending: list[tuple[Path, torch.Tensor]] = []

    def flush() -> Iterator[Prediction]:
        batch = torch.cat([x for _, x in pending])  # (B, C, H, W)
        probs = torch.softmax(predict_logits(model, batch, batch_size).float(), dim=1).cpu()
        top = probs.topk(min(k, probs.shape[1]), dim=1)
        for (path, _), values, indices in zip(pending, top.values, top.indices):
            yield Prediction(str(path), tuple(_class_name(model, int(i)) for i in indices), tuple(values.tolist()))
        pending.clear()

    for path in expand_paths(inputs):
        try:
            image = load_image(path, channels)  # (h, w, C) at the file's own size
        except DataError as e:
            yield Prediction(str(path), error=str(e).removeprefix(f"{path}: "))
            continue
        x = torch.from_numpy(image).permute(2, 0, 1)[None]  # (1, C, h, w)
        pending.append((path, conform(x, (height, width, channels))))
        if len(pending) == batch_size:
            yield from flush()
    if pending:
        yield from flush()
