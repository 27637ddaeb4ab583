"""From ``--data NAME|PATH`` to what training needs: train, validation and test images, split and checked.

:func:`open_data` is the one entry point ``cnnkit train`` uses (through
:func:`training_data`). For a registered data set it loads the arrays (downloading into
the cache if needed) and splits a stratified, seeded validation set off the training
images unless the data set has its own. For a folder or CSV it indexes the files, scans
every one (decoding in parallel), builds the health report, refuses to start when more
than ``max_bad_files`` of them are bad, skips the rest of the bad ones, assigns the
train/validation/test split (stratified; the test split with a fixed seed so it does not
move with ``--seed``), and keeps the images where ``cache`` says (``--cache``): in memory
(``ram``), in the decoded-image cache on disk, read through a memory map (``disk``, see
:mod:`cnnkit.data.decoded_cache`), or nowhere, the training images streamed from the files
by DataLoader workers every epoch (``none``); ``auto`` is ``ram`` when the decoded images fit
the :func:`memory_budget`, else ``disk``.
"""

from __future__ import annotations

import os
import sys
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cnnkit._io import atomic_write_json, atomic_write_text
from cnnkit.data import catalog
from cnnkit.data.catalog import Dataset, ImageArrays
from cnnkit.data.check import DataReport, build_report
from cnnkit.data.decoded_cache import (
    CACHE_MODES,
    CacheSpaceError,
    DecodedImages,
    MappedImages,
    cache_folder,
    cached_scan,
)
from cnnkit.data.folders import ImageIndex, index_path
from cnnkit.data.scan import ScanResult, scan_files
from cnnkit.data.split import stratified_split
from cnnkit.errors import ConfigError, DataError

__all__ = [
    "TEST_FRACTION",
    "TrainingData",
    "assign_roles",
    "memory_budget",
    "open_data",
    "reopen_data",
    "training_data",
]

TEST_FRACTION = 0.2  # held out of a folder without test/ (seed 0: the same test images whatever --seed says)
DEFAULT_IMAGE_SIZE = 64  # a folder's image size when neither --image-size nor the model says


@dataclass
class TrainingData:
    """Everything training needs from the data, and what the run folder records about it.

    ``dataset`` holds the class names and the validation and test images in memory; its
    training images too, unless they are in the decoded-image cache on disk (``mapped``) or
    streamed from the files (``stream``, a DataLoader of training batches), in which case
    ``dataset.train`` is empty but has the image shape.
    """

    dataset: Dataset
    augment: str
    split: dict[str, Any]
    report: DataReport | None = None
    stream: Any = None  # torch.utils.data.DataLoader
    mapped: MappedImages | None = None

    @property
    def train_size(self) -> int:
        """How many training images, in memory, on disk or streamed."""
        if self.mapped is not None:
            return len(self.mapped)
        return len(self.stream.dataset) if self.stream is not None else len(self.dataset.train)

    def write(self, run_dir: str | os.PathLike) -> None:
        """``split.json``, and for a folder or CSV ``bad_files.txt``, ``data_report.json`` and ``.html``."""
        run_dir = Path(run_dir)
        atomic_write_json(run_dir / "split.json", self.split)
        if self.report is not None:
            from cnnkit.data.check_html import render_html

            bad = "".join(f"{r.path}\t{r.kind}\t{r.error}\n" for r in self.report.bad)
            atomic_write_text(run_dir / "bad_files.txt", bad)
            atomic_write_json(run_dir / "data_report.json", self.report.to_dict())
            atomic_write_text(run_dir / "data_report.html", render_html(self.report))


def memory_budget() -> int:
    """Bytes of decoded images kept in memory before switching to streaming.

    ``$CNNKIT_MEMORY_MB`` if set, else a quarter of the memory available now, at most 8 GiB.
    """
    if os.environ.get("CNNKIT_MEMORY_MB"):
        try:
            return int(float(os.environ["CNNKIT_MEMORY_MB"]) * 2**20)
        except ValueError:
            raise ConfigError(
                f"CNNKIT_MEMORY_MB must be a number of megabytes, not {os.environ['CNNKIT_MEMORY_MB']!r}"
            ) from None
    return min(_available_memory() // 4, 8 * 2**30)


def _available_memory() -> int:
    """Linux's MemAvailable (free memory plus what the page cache would give back), else free pages, else 8 GiB."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except (OSError, ValueError, IndexError):
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return 8 * 2**30


def training_data(config: Any, default_size: int | None = None) -> TrainingData:
    """:func:`open_data` with a :class:`~cnnkit.recipe.config.TrainConfig`'s options."""
    return open_data(
        config.data, data_dir=getattr(config, "data_dir", None), image_size=config.image_size,
        default_size=default_size, val_split=config.val_split, seed=config.seed,
        max_bad_files=getattr(config, "max_bad_files", 0.1), workers=getattr(config, "workers", None),
        batch_size=config.batch_size, verbose=config.verbose, cache=getattr(config, "cache", "auto"),
    )  # fmt: skip


def open_data(
    data: str,
    *,
    data_dir: str | None = None,
    image_size: int | None = None,
    default_size: int | None = None,
    val_split: float = 0.1,
    seed: int = 0,
    max_bad_files: float = 0.1,
    workers: int | None = None,
    batch_size: int = 64,
    verbose: int = 0,
    budget: int | None = None,
    cache: str = "auto",
) -> TrainingData:
    """Load, split and (for a folder or CSV) check ``data``: a registered name, a folder or a CSV.

    ``cache`` (a folder or CSV only): where the decoded training images live, one of
    :data:`~cnnkit.data.decoded_cache.CACHE_MODES`; ``budget``: the bytes ``auto`` may hold in memory.
    """
    info = catalog.resolve_data(data)
    if info is not None:
        return _split_standard(catalog.load_registered(info, data_dir=data_dir), info.augment, val_split, seed)
    return _open_files(data, image_size or default_size or DEFAULT_IMAGE_SIZE, val_split=val_split, seed=seed,
                       max_bad_files=max_bad_files, workers=workers, batch_size=batch_size, verbose=verbose,
                       budget=memory_budget() if budget is None else budget, cache=cache,
                       data_dir=data_dir)  # fmt: skip


def _split_standard(dataset: Dataset, augment: str, val_split: float, seed: int) -> TrainingData:
    split: dict[str, Any] = {"data": dataset.name, "seed": seed, "val_split": val_split}
    if dataset.val is not None:
        split.update(train="the data set's own training split", val="the data set's own validation split")
    elif val_split > 0:
        keep, held = stratified_split(dataset.train.labels, val_split, seed)
        split.update(train=keep.tolist(), val=held.tolist())
        train = dataset.train
        dataset = Dataset(dataset.name, dataset.class_names, ImageArrays(train.images[keep], train.labels[keep]),
                          dataset.test, ImageArrays(train.images[held], train.labels[held]))  # fmt: skip
    else:
        split.update(train=list(range(len(dataset.train))), val=[])
    split["test"] = "the data set's own test split"
    return TrainingData(dataset, augment, split)


# -- folders and CSVs ----------------------------------------------------------------------------------
def assign_roles(index: ImageIndex, scan: ScanResult, val_split: float, seed: int) -> list[str]:
    """Each usable file's split: the layout's, else test (fixed seed) then validation held out of train.

    Copies of one file (identical bytes) always land in the same split, so holding out
    can never leak a training image into the test set. Unusable files get "".
    """
    usable = scan.ok
    roles = [role or "train" for role in index.roles]
    copies: dict[str, list[int]] = {}
    for i in np.flatnonzero(usable):
        copies.setdefault(scan.records[i].sha256, []).append(int(i))
    for role, fraction in (("test", TEST_FRACTION), ("val", val_split)):
        if fraction <= 0 or any(r == role for r, ok in zip(index.roles, usable) if ok):
            continue  # the layout gives this split, or none is wanted
        heads = np.array([g[0] for g in copies.values() if roles[g[0]] == "train"])  # one file per content
        if len(heads) < 3:
            raise DataError(f"only {len(heads)} distinct usable training images: too few to hold out a {role} split; "
                            f"add images, or give {role}/ folders")  # fmt: skip
        _, held = stratified_split(index.labels[heads], fraction, 0 if role == "test" else seed)
        for head in heads[held]:
            for i in copies[scan.records[head].sha256]:
                if roles[i] == "train":
                    roles[i] = role
    return [r if ok else "" for r, ok in zip(roles, usable)]


def _too_many_bad(report: DataReport, limit: float) -> DataError:
    bad = report.bad
    listed = "; ".join(f"{report.index.relative(r.path)} ({r.kind})" for r in bad[:8])
    more = f"; and {len(bad) - 8} more" if len(bad) > 8 else ""
    return DataError(
        f"{len(bad)} of {len(report.records)} files ({report.bad_fraction:.0%}) cannot be used, more than the "
        f"{limit:.0%} allowed (--max-bad-files): {listed}{more}. Run `cnnkit check-data {report.source}` for the "
        f"full report; nothing was modified"
    )


def _cache_mode(cache: str, images: int, size: int, budget: int) -> str:
    """``ram``, ``disk`` or ``none``: ``auto`` is ``ram`` when ``images`` decoded at ``size`` fit ``budget``."""
    if cache not in CACHE_MODES:
        raise ConfigError(f"cache must be {', '.join(CACHE_MODES[:-1])} or {CACHE_MODES[-1]}, got {cache!r}")
    if cache != "auto":
        return cache
    return "ram" if images * size * size * 3 * 4 <= budget else "disk"  # float32, RGB: the most it can take


def _scan(data: str, paths: list[Path], size: int, cache: str, budget: int, *, data_dir: str | None,
          workers: int | None, progress: bool) -> tuple[ScanResult, DecodedImages | None]:  # fmt: skip
    """The health check's scan; it also decodes the images into memory (``ram``) or the disk cache (``disk``).

    ``auto`` streams from the files instead when the disk cache does not fit the disk.
    """
    mode = _cache_mode(cache, len(paths), size, budget)
    if mode == "disk":
        try:
            return cached_scan(paths, size, cache_folder(data, size, data_dir), workers=workers, progress=progress)
        except CacheSpaceError as e:
            if cache != "auto":
                raise
            print(f"warning: {e}; streaming from the files instead", file=sys.stderr, flush=True)
            mode = "none"
    return scan_files(paths, (size, size, 3) if mode == "ram" else None, workers=workers, progress=progress), None


def _open_files(data: str, size: int, *, val_split: float, seed: int, max_bad_files: float, workers: int | None,
                batch_size: int, verbose: int, budget: int, cache: str, data_dir: str | None
                ) -> TrainingData:  # fmt: skip
    index = index_path(data)
    scan, store = _scan(data, index.paths, size, cache, budget, data_dir=data_dir, workers=workers,
                        progress=verbose > 0)  # fmt: skip
    index = ImageIndex(index.root, index.paths, index.labels, index.class_names,
                       assign_roles(index, scan, val_split, seed), index.skipped, index.name)  # fmt: skip
    report = build_report(data, index, scan)
    if report.bad_fraction > max_bad_files:
        raise _too_many_bad(report, max_bad_files)
    if verbose:
        for line in report.summary_lines():
            print(line)
    shape = (size, size, report.channels)
    split = _split_record(data, index, scan, shape, val_split, seed)
    return _from_index(index, scan, shape, split, report, batch_size=batch_size, seed=seed, workers=workers,
                       store=store)  # fmt: skip


def _from_index(index: ImageIndex, scan: ScanResult, shape: tuple[int, int, int], split: dict[str, Any],
                report: DataReport | None, *, batch_size: int, seed: int, workers: int | None,
                store: DecodedImages | None = None) -> TrainingData:  # fmt: skip
    """Arrays of each split; the training images mapped from ``store``, or streamed when the scan did not keep them."""
    arrays = {role: _arrays(index, scan, role, shape, workers, store) for role in ("train", "val", "test")}
    stream = mapped = None
    chosen = [i for i, r in enumerate(index.roles) if r == "train"]
    if store is not None:
        rows = store.rows([scan.records[i].sha256 for i in chosen])
        mapped = MappedImages(store, rows, index.labels[chosen], shape[2])
    elif scan.images is None:
        from cnnkit.data.streaming import file_batches

        stream = file_batches([index.paths[i] for i in chosen], index.labels[chosen], shape, batch_size, seed=seed,
                              workers=workers)  # fmt: skip
    dataset = Dataset(index.name, index.class_names, arrays["train"], arrays["test"],
                      arrays["val"] if len(arrays["val"]) else None)  # fmt: skip
    return TrainingData(dataset, "flip-crop", split, report, stream, mapped)


def reopen_data(run_dir: str | os.PathLike, *, data_dir: str | None = None, workers: int | None = None,
                batch_size: int = 64, budget: int | None = None, cache: str = "auto") -> TrainingData:  # fmt: skip
    """The exact data a run trained on, from its ``split.json``: for resuming it.

    A registered data set is reloaded and split by the recorded indices. For a folder or
    CSV every recorded file is checked against its SHA-256 (a missing or changed file is a
    :class:`DataError`) and decoded at the recorded image shape; files added since are ignored.
    """
    from cnnkit.data.saved_split import load_split

    saved = load_split(run_dir)
    record = saved.record
    if not saved.is_files:
        info = catalog.get_dataset_info(saved.data)
        dataset = catalog.load_registered(info, data_dir=data_dir)
        if isinstance(record.get("train"), list) and record.get("val"):
            keep, held = np.asarray(record["train"], dtype=np.int64), np.asarray(record["val"], dtype=np.int64)
            train = dataset.train
            dataset = Dataset(dataset.name, dataset.class_names, ImageArrays(train.images[keep], train.labels[keep]),
                              dataset.test, ImageArrays(train.images[held], train.labels[held]))  # fmt: skip
        return TrainingData(dataset, info.augment, record)
    parts = [saved.index(role) for role in ("train", "val", "test")]
    index = ImageIndex(parts[0].root, [p for part in parts for p in part.paths],
                       np.concatenate([part.labels for part in parts]), parts[0].class_names,
                       [r for part in parts for r in part.roles], [], parts[0].name)  # fmt: skip
    shape = tuple(record["image_shape"])
    budget = memory_budget() if budget is None else budget
    scan, store = _scan(record["data"], index.paths, shape[0], cache, budget, data_dir=data_dir, workers=workers,
                        progress=False)  # fmt: skip
    return _from_index(index, scan, shape, record, None, batch_size=batch_size, seed=record["seed"], workers=workers,
                       store=store)  # fmt: skip


def _arrays(index: ImageIndex, scan: ScanResult, role: str, shape: tuple[int, int, int], workers: int | None,
            store: DecodedImages | None) -> ImageArrays:  # fmt: skip
    """The images of one split at ``shape``: sliced from the scan or the disk cache, or decoded now for val/test."""
    chosen = [i for i, r in enumerate(index.roles) if r == role]
    labels = index.labels[chosen]
    if scan.images is not None:
        images = scan.images[chosen][..., : shape[2]]  # grey data: the three equal channels -> one
    elif role == "train":
        images = np.zeros((0, *shape), np.float32)  # mapped or streamed
    elif store is not None:
        rows = store.rows([scan.records[i].sha256 for i in chosen])
        images = store.gather(rows)[..., : shape[2]].astype(np.float32) / np.float32(255.0)
    else:
        images = scan_files([index.paths[i] for i in chosen], shape, workers=workers).images
    return ImageArrays(np.ascontiguousarray(images), labels if len(images) else labels[:0])


def _split_record(data: str, index: ImageIndex, scan: ScanResult, shape: tuple[int, int, int], val_split: float,
                  seed: int) -> dict[str, Any]:  # fmt: skip
    """What ``split.json`` says for a folder or CSV: enough to rebuild and verify every split."""
    record: dict[str, Any] = {
        "data": str(Path(data).expanduser().resolve()), "root": str(index.root.resolve()), "seed": seed,
        "val_split": val_split, "test_split": TEST_FRACTION, "image_shape": list(shape),
        "class_names": index.class_names,
    }  # fmt: skip
    for role in ("train", "val", "test"):
        record[role] = [{"path": index.relative(index.paths[i]), "label": index.class_names[index.labels[i]],
                         "sha256": scan.records[i].sha256} for i, r in enumerate(index.roles) if r == role]  # fmt: skip
    record["bad_files"] = [index.relative(r.path) for r in scan.records if not r.ok]
    return record
