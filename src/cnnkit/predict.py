"""Prediction on image files: files, folders (recursive) and globs, streamed in batches.

Paths are found lazily (one folder listing at a time) and cut into chunks of
``batch_size``; worker processes decode each chunk through the one decoding path
(:mod:`cnnkit.data.decode`) and the same conversion to the model's input as training data,
while the main process runs the model on the previous chunk. Only a few chunks are ever in
flight, so memory stays flat for a folder of any size, and results come out in input order.
A file that cannot be read is reported in its :class:`Prediction`, in its place, never fatal.
"""

from __future__ import annotations

import glob
import itertools
import os
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from torch.utils.data import DataLoader, Dataset

from cnnkit.data.decode import is_image_path
from cnnkit.data.transforms import load_input
from cnnkit.errors import DataError
from cnnkit.inference import Predictor, TorchPredictor
from cnnkit.models.model import Model
from cnnkit.runs import refuse_runs_as_inputs

__all__ = ["Prediction", "default_workers", "expand_paths", "predict_files"]


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


def _walk(folder: Path) -> Iterator[Path]:
    """Image files under ``folder`` in sorted path order, listing one folder at a time.

    Only one folder's names are held at a time (sorting needs them all). Symbolic links to
    folders are not followed (they can make cycles); links to files are.
    """
    try:
        with os.scandir(folder) as listing:
            names = sorted((entry.name, entry.is_dir(follow_symlinks=False)) for entry in listing)
    except OSError:  # a folder we may not list: nothing to predict in it
        return
    for name, is_dir in names:
        path = folder / name
        if is_dir:
            yield from _walk(path)
        elif is_image_path(name) and path.is_file():
            yield path


def expand_paths(inputs: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files as given; folders searched recursively for images; glob patterns expanded (folders they
    match are searched too). Sorted within each input, inputs in the order given.

    Every input is checked now, before the first path is yielded, so a typo fails at once, not halfway,
    and a run folder given as an input is refused (:func:`cnnkit.runs.refuse_runs_as_inputs`).
    """
    items = [str(item) for item in inputs]
    refuse_runs_as_inputs(items)  # a run's plots are not images to classify
    for item in items:
        if not Path(item).exists():
            if not glob.has_magic(item):
                raise DataError(f"{item}: no such file or folder")
            if next(glob.iglob(item, recursive=True), None) is None:
                raise DataError(f"{item}: no files match")
    return _expand(items)


def _expand(items: list[str]) -> Iterator[Path]:
    for item in items:
        path = Path(item)
        if path.is_dir():
            yield from _walk(path)
        elif path.exists():
            yield path
        else:
            for match in sorted(Path(p) for p in glob.glob(item, recursive=True)):
                yield from _walk(match) if match.is_dir() else (match,)


def default_workers() -> int:
    """Decoding processes: one per core, up to 4 (decoding a small image is mostly Python, so
    threads would wait on each other; processes do not)."""
    return min(4, os.cpu_count() or 1)


class _Decoder(Dataset):
    """Decodes one path to the model's input; runs in the DataLoader's worker processes."""

    def __init__(self, image_shape: tuple[int, int, int]) -> None:
        self.image_shape = image_shape

    def __getitem__(self, path: str) -> tuple[str, np.ndarray | None, str | None]:
        try:
            return path, load_input(path, self.image_shape), None  # (H, W, C): what to_batch(path) holds
        except DataError as e:
            return path, None, str(e).removeprefix(f"{path}: ")


def _collate(items: list[tuple[str, np.ndarray | None, str | None]]) -> tuple[list, list, torch.Tensor | None]:
    """One chunk: its paths, an error (or None) per path, and the readable images stacked ``(n, C, H, W)``.

    The images are stacked as arrays and made channels-first once per chunk, not once per image.
    """
    images = [x for _, x, _ in items if x is not None]
    stacked = torch.from_numpy(np.stack(images)).permute(0, 3, 1, 2).contiguous() if images else None
    return [p for p, _, _ in items], [e for _, _, e in items], stacked


def _chunks(paths: Iterable[Path], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for path in paths:
        chunk.append(str(path))
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _probabilities(predictor: Predictor, images: torch.Tensor, tta: bool) -> np.ndarray:
    """``(n, classes)`` probabilities; with ``tta``, averaged with those of the left-right mirror images."""
    x = images.numpy()  # (n, C, H, W): the layout every predictor takes
    if not tta:
        return predictor.predict_proba(x)
    both = predictor.predict_proba(np.concatenate([x, x[..., ::-1]]))  # one batch of 2n: better throughput
    return (both[: len(x)] + both[len(x) :]) / 2


def predict_files(
    model: Predictor | Model,
    inputs: Iterable[str | os.PathLike],
    *,
    top_k: int = 5,
    batch_size: int = 64,
    tta: bool = False,
    workers: int | None = None,
) -> Iterator[Prediction]:
    """Yield one :class:`Prediction` per file, in input order, ``batch_size`` files at a time.

    ``model``: a predictor (:func:`cnnkit.inference.load_predictor`) or a :class:`Model` (run
    in PyTorch where it is). ``tta`` averages each image's probabilities with its mirror
    image's (for data where a mirror image shows the same class; not digits or text).
    ``workers``: decoding processes (default :func:`default_workers`; 0 decodes in this process).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    predictor = model if not isinstance(model, Model) else TorchPredictor(model, next(model.parameters()).device)
    workers = default_workers() if workers is None else workers
    chunks = _chunks(expand_paths(inputs), batch_size)
    first = next(chunks, None)
    if first is None:
        return
    if len(first) < batch_size:  # the only chunk: starting worker processes would cost more than it saves
        workers = 0
    loader = DataLoader(
        _Decoder(predictor.image_shape), batch_sampler=itertools.chain([first], chunks),
        collate_fn=_collate, num_workers=workers, prefetch_factor=2 if workers else None,
    )  # fmt: skip
    k = min(top_k, len(predictor.class_names))
    for paths, errors, images in loader:
        probs = torch.from_numpy(_probabilities(predictor, images, tta)) if images is not None else None
        top = probs.topk(k, dim=1) if probs is not None else None
        row = 0
        for path, error in zip(paths, errors):
            if error is not None:
                yield Prediction(path, error=error)
                continue
            labels = tuple(predictor.class_names[int(i)] for i in top.indices[row])
            yield Prediction(path, labels, tuple(top.values[row].tolist()))
            row += 1
