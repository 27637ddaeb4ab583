"""Prediction on image files: files, folders (recursive) and globs, streamed in batches.

Paths are found lazily (one folder listing at a time) and cut into chunks of a few
batches; worker processes (a :mod:`multiprocessing` pool) decode each chunk through the
one decoding path (:mod:`cnnkit.data.decode`) and the same conversion to the model's input as
training data, while the main process runs the model on the previous chunk, ``batch_size``
images at a time. Only a few chunks are ever in flight, so memory stays flat for a folder of
any size, and results come out in input order. A file that cannot be read is reported in its
:class:`Prediction`, in its place, never fatal.

This module imports no torch: with :func:`open_predictor` giving ONNX Runtime (an export, or
a model whose export is cached, on a machine without a GPU) ``cnnkit predict`` never loads it,
which is most of its time on a folder of small images (benchmarks/predict_folder.py).
"""

from __future__ import annotations

import glob
import itertools
import os
import signal
import sys
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from multiprocessing import get_context
from pathlib import Path
from typing import TYPE_CHECKING

import numpy as np

from cnnkit.data.decode import is_image_path
from cnnkit.data.inputs import load_input
from cnnkit.errors import DataError
from cnnkit.onnx_predictor import cpu_onnx_predictor
from cnnkit.runs import refuse_runs_as_inputs

if TYPE_CHECKING:
    from cnnkit.inference import Predictor
    from cnnkit.models.model import Model

__all__ = ["Prediction", "default_workers", "expand_paths", "open_predictor", "predict_files"]


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


def _walk(folder: str) -> Iterator[str]:
    """Image files under ``folder`` in sorted path order, listing one folder at a time.

    Only one folder's names are held at a time (sorting needs them all). Symbolic links to
    folders are not followed (they can make cycles); links to files are. The listing's own
    file types answer ``is_dir``/``is_file`` (no ``stat`` per file), and paths stay strings: a
    ``Path`` per file cost a folder of 10,000 small images a quarter of ``cnnkit predict``'s time.
    """
    try:
        with os.scandir(folder) as listing:
            names = sorted((entry.name, entry.is_dir(follow_symlinks=False), entry.is_file()) for entry in listing)
    except OSError:  # a folder we may not list: nothing to predict in it
        return
    for name, is_dir, is_file in names:
        path = name if folder == "." else os.path.join(folder, name)  # as str(Path(folder) / name) spells it
        if is_dir:
            yield from _walk(path)
        elif is_file and is_image_path(name):
            yield path


def expand_paths(inputs: Iterable[str | os.PathLike]) -> Iterator[Path]:
    """Files as given; folders searched recursively for images; glob patterns expanded (folders they
    match are searched too). Sorted within each input, inputs in the order given.

    Every input is checked now, before the first path is yielded, so a typo fails at once, not halfway,
    and a run folder given as an input is refused (:func:`cnnkit.runs.refuse_runs_as_inputs`).
    """
    return map(Path, _file_paths(inputs))


def _file_paths(inputs: Iterable[str | os.PathLike]) -> Iterator[str]:
    """:func:`expand_paths` as strings, what the decoding workers are sent."""
    items = [os.fspath(item) for item in inputs]
    refuse_runs_as_inputs(items)  # a run's plots are not images to classify
    for item in items:
        if not os.path.exists(item):
            if not glob.has_magic(item):
                raise DataError(f"{item}: no such file or folder")
            if next(glob.iglob(item, recursive=True), None) is None:
                raise DataError(f"{item}: no files match")
    return _expand(items)


def _expand(items: list[str]) -> Iterator[str]:
    for item in items:
        path = str(Path(item))  # "./images/" -> "images": the spelling every path below it starts with
        if os.path.isdir(path):
            yield from _walk(path)
        elif os.path.exists(path):
            yield path
        else:
            for match in map(str, sorted(Path(p) for p in glob.glob(item, recursive=True))):  # in Path order
                yield from _walk(match) if os.path.isdir(match) else (match,)


def default_workers() -> int:
    """Decoding processes: one per core, up to 4 (decoding a small image is mostly Python, so
    threads would wait on each other; processes do not)."""
    return min(4, os.cpu_count() or 1)


Chunk = tuple[list[str], list[str | None], np.ndarray | None]  # paths, an error or None each, images (n, C, H, W)


def _decode_chunk(paths: list[str], image_shape: tuple[int, int, int]) -> Chunk:
    """One chunk decoded (in a worker process): its paths, an error (or None) per path, and the readable
    images stacked ``(n, C, H, W)`` float32, made channels-first once per chunk, not once per image."""
    images, errors = [], []
    for path in paths:
        try:
            images.append(load_input(path, image_shape))  # (H, W, C): what to_batch(path) holds
            errors.append(None)
        except DataError as e:
            errors.append(str(e).removeprefix(f"{path}: "))
    stacked = np.ascontiguousarray(np.stack(images).transpose(0, 3, 1, 2)) if images else None
    return paths, errors, stacked


# On Linux, fork: the workers start in milliseconds with what this process imported (spawn would import it
# all again); they only decode, so the model runtime's threads, which fork does not copy, are not missed.
# Elsewhere spawn, each platform's default: Windows has no fork, and macOS's system libraries are not safe
# to use in a child forked from a process with threads (the model runtime's).
_START_METHOD = "fork" if sys.platform.startswith("linux") else "spawn"


def _worker_signals() -> None:
    """A decoding worker dies by the pool's SIGTERM and leaves Ctrl-C to its parent. A fork inherits the
    parent's Python handlers, and one that does not exit (a server's graceful SIGTERM, in a process that
    served before) would leave the pool waiting for the worker forever."""
    signal.signal(signal.SIGTERM, signal.SIG_DFL)
    signal.signal(signal.SIGINT, signal.SIG_IGN)


def _decoded(chunks: Iterator[list[str]], image_shape: tuple[int, int, int], workers: int) -> Iterator[Chunk]:
    """The chunks decoded in order, by ``workers`` processes (0: here). At most ``2 * workers`` chunks are
    in flight, the next one sent as each result is taken, so the paths are read lazily and memory stays
    flat for a folder of any size."""
    if workers == 0:
        yield from (_decode_chunk(chunk, image_shape) for chunk in chunks)
        return
    with get_context(_START_METHOD).Pool(workers, initializer=_worker_signals) as pool:
        window = 2 * workers  # chunks in flight: enough to keep every worker busy while the model runs
        pending = [pool.apply_async(_decode_chunk, (chunk, image_shape)) for chunk in itertools.islice(chunks, window)]
        while pending:
            done = pending.pop(0).get()
            chunk = next(chunks, None)
            if chunk is not None:
                pending.append(pool.apply_async(_decode_chunk, (chunk, image_shape)))
            yield done


def _chunks(paths: Iterable[str], size: int) -> Iterator[list[str]]:
    chunk: list[str] = []
    for path in paths:
        chunk.append(path)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _probabilities(predictor: Predictor, x: np.ndarray, tta: bool) -> np.ndarray:
    """``(n, classes)`` probabilities of ``(n, C, H, W)`` images; with ``tta``, averaged with those of the
    left-right mirror images."""
    if not tta:
        return predictor.predict_proba(x)
    both = predictor.predict_proba(np.concatenate([x, x[..., ::-1]]))  # one batch of 2n: better throughput
    return (both[: len(x)] + both[len(x) :]) / 2


def _chunk_size(batch_size: int, image_shape: tuple[int, int, int]) -> int:
    """Files a decoding worker process is sent at a time: a multiple of ``batch_size`` holding up to about 2 MiB of
    decoded images. Each chunk is a round trip between processes, so small images go in chunks of many
    batches (28x28 grey: 640 files, a quarter less time for a folder than one batch per chunk; more gained
    nothing, and the first chunk is a wait before the model starts); a batch of 224x224 photos already
    fills a chunk, and goes one batch at a time."""
    height, width, channels = image_shape
    batches = (2 << 20) // (4 * height * width * channels * batch_size)  # float32 pixels
    return batch_size * max(1, min(batches, 64))


def _chunk_probabilities(predictor: Predictor, images: np.ndarray, batch_size: int, tta: bool) -> np.ndarray:
    """``(n, classes)`` probabilities of a decoded chunk, run ``batch_size`` images at a time."""
    if len(images) <= batch_size:
        return _probabilities(predictor, images, tta)
    return np.concatenate([_probabilities(predictor, images[i : i + batch_size], tta)
                           for i in range(0, len(images), batch_size)])  # fmt: skip


def _top_k(probs: np.ndarray, k: int) -> np.ndarray:
    """The ``k`` most probable classes of each row, most probable first; equal probabilities in class order."""
    return np.argsort(-probs, axis=1, kind="stable")[:, :k]


def open_predictor(
    model: str | os.PathLike, backend: str = "auto", *, device: str | None = "auto", threads: int | None = None
) -> Predictor:
    """The predictor :func:`cnnkit.inference.load_predictor` gives, without importing torch where ONNX Runtime
    on the CPU answers from an export or a valid cache (:func:`cnnkit.onnx_predictor.cpu_onnx_predictor`)."""
    predictor = cpu_onnx_predictor(model, backend, device=device, threads=threads)
    if predictor is not None:
        return predictor
    from cnnkit.inference import load_predictor  # torch: the model, its export, a GPU

    return load_predictor(model, backend, device=device, threads=threads)


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

    ``model``: a predictor (:func:`open_predictor`, :func:`cnnkit.inference.load_predictor`) or a
    :class:`Model` (run in PyTorch where it is). ``tta`` averages each image's probabilities with
    its mirror image's (for data where a mirror image shows the same class; not digits or text).
    ``workers``: decoding processes (default :func:`default_workers`; 0 decodes in this process).
    """
    if batch_size < 1:
        raise DataError(f"batch_size must be at least 1, got {batch_size}")
    predictor = model
    if not hasattr(model, "predict_proba"):  # a Model: in PyTorch, where it is
        from cnnkit.inference import TorchPredictor

        predictor = TorchPredictor(model, next(model.parameters()).device)
    workers = default_workers() if workers is None else workers
    size = _chunk_size(batch_size, predictor.image_shape) if workers else batch_size  # no round trips at 0
    chunks = _chunks(_file_paths(inputs), size)
    first = next(chunks, None)
    if first is None:
        return
    if len(first) < size:  # the only chunk: starting worker processes would cost more than it saves
        workers = 0
    k = min(top_k, len(predictor.class_names))
    for paths, errors, images in _decoded(itertools.chain([first], chunks), predictor.image_shape, workers):
        probs = _chunk_probabilities(predictor, images, batch_size, tta) if images is not None else None
        top = _top_k(probs, k) if probs is not None else None
        row = 0
        for path, error in zip(paths, errors):
            if error is not None:
                yield Prediction(path, error=error)
                continue
            labels = tuple(predictor.class_names[int(i)] for i in top[row])
            yield Prediction(path, labels, tuple(probs[row, top[row]].tolist()))
            row += 1
