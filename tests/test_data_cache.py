"""The decoded-image cache on disk (``--cache disk``): built once, kept in step with the files, shared, repaired."""

from __future__ import annotations

import json
import multiprocessing
import sys
from types import SimpleNamespace

import numpy as np
import pytest
import torch

from cnnkit.data import decoded_cache
from cnnkit.data import scan as scan_module
from cnnkit.data.decoded_cache import CacheSpaceError, cache_folder, cached_scan
from cnnkit.data.prepare import open_data, reopen_data
from cnnkit.errors import ConfigError
from cnnkit.recipe.config import TrainConfig
from cnnkit.train.loop import TensorBatches
from conftest import run_main
from test_data_folders import smooth, write_classes
from test_data_training import _cli, _fingerprint

SIZE = 12
QUANTUM = 0.5 / 255 + 1e-6  # uint8 rounding: the most a cached pixel differs from the decoded one


@pytest.fixture
def decodes(monkeypatch):
    """How many images the scan decoded (every decode goes through scan.open_image)."""
    calls = []
    real = scan_module.open_image

    def counting(*args, **kwargs):
        calls.append(kwargs.get("name"))
        return real(*args, **kwargs)

    monkeypatch.setattr(scan_module, "open_image", counting)
    return calls


def _folder(tmp_path, n=10):
    write_classes(tmp_path / "data", {"a": n, "b": n}, size=24)
    return tmp_path / "data"


def _disk(data, tmp_path, **kwargs):
    return open_data(str(data), image_size=SIZE, batch_size=4, cache="disk", data_dir=str(tmp_path / "cache"),
                     **kwargs)  # fmt: skip


def _cache_files(tmp_path):
    folder = cache_folder(tmp_path / "data", SIZE, tmp_path / "cache")
    return folder, next(folder.glob("images-*.u8"))


def test_the_cache_is_built_once_and_reused(tmp_path, decodes):
    data = _folder(tmp_path)
    before = _fingerprint(data)
    first = _disk(data, tmp_path)
    assert first.mapped is not None and first.stream is None and len(decodes) == 20
    folder, images = _cache_files(tmp_path)
    assert folder.parent == tmp_path / "cache" / "decoded"  # in the data cache, never next to the images
    assert images.stat().st_size == 20 * SIZE * SIZE * 3  # uint8 (H, W, 3) rows
    stamps = (images.stat().st_mtime_ns, (folder / "index.json").stat().st_mtime_ns)
    decodes.clear()
    second = _disk(data, tmp_path)
    assert decodes == []  # every file read and hashed, none decoded
    assert (images.stat().st_mtime_ns, (folder / "index.json").stat().st_mtime_ns) == stamps
    everything = torch.arange(first.train_size)
    assert torch.equal(first.mapped[everything], second.mapped[everything])
    assert _fingerprint(data) == before  # nothing written into the user's folder


def test_a_changed_file_is_decoded_again_a_new_one_added_a_removed_one_dropped(tmp_path, decodes):
    data = _folder(tmp_path)
    _disk(data, tmp_path)
    folder, _ = _cache_files(tmp_path)
    changed = data / "a" / "a_0.png"
    smooth(999, 24).save(changed)
    smooth(1000, 24).save(data / "b" / "b_new.png")
    (data / "b" / "b_1.png").unlink()
    decodes.clear()
    again = _disk(data, tmp_path)
    assert sorted(decodes) == [str(changed), str(data / "b" / "b_new.png")]
    index = json.loads((folder / "index.json").read_text())
    assert len(index["rows"]) == 20 and index["used"] == 22  # the removed content's row is dead, not listed
    # the changed file trains on its new pixels
    fresh = open_data(str(data), image_size=SIZE, batch_size=4, budget=10**9, val_split=0.1)
    everything = torch.arange(again.train_size)
    ram = torch.from_numpy(fresh.dataset.train.images).permute(0, 3, 1, 2)
    assert (again.mapped[everything] - ram).abs().max() <= QUANTUM


def test_dead_rows_are_reclaimed(tmp_path):
    data = _folder(tmp_path)
    _disk(data, tmp_path)
    for i in range(6):
        (data / "a" / f"a_{i}.png").unlink()
    again = _disk(data, tmp_path)
    folder, images = _cache_files(tmp_path)
    assert images.stat().st_size == 14 * SIZE * SIZE * 3 and len(list(folder.glob("images-*.u8"))) == 1
    assert again.train_size == len(again.mapped)


def test_a_truncated_cache_is_rebuilt_with_one_warning(tmp_path, decodes, capsys):
    data = _folder(tmp_path)
    first = _disk(data, tmp_path)
    everything = torch.arange(first.train_size)
    expected = first.mapped[everything]  # read now: the file is cut below, under the mapping
    _, images = _cache_files(tmp_path)
    with open(images, "r+b") as f:
        f.truncate(images.stat().st_size // 2)
    decodes.clear()
    capsys.readouterr()
    again = _disk(data, tmp_path)
    lines = capsys.readouterr().err.splitlines()
    assert len(lines) == 1 and lines[0].startswith("warning: the decoded-image cache") and "damaged" in lines[0]
    assert "decoding the images again" in lines[0] and len(decodes) == 20
    assert torch.equal(expected, again.mapped[everything])
    # a damaged index (not the JSON its checksum says) is rebuilt the same way
    index = cache_folder(data, SIZE, tmp_path / "cache") / "index.json"
    index.write_text(index.read_text().replace('"used"', '"usde"'))
    decodes.clear()
    _disk(data, tmp_path)
    assert "damaged" in capsys.readouterr().err and len(decodes) == 20


def _build_in_a_process(paths, folder, start, results):
    calls = []
    real = scan_module.open_image
    scan_module.open_image = lambda *a, **k: calls.append(1) or real(*a, **k)
    start.wait()  # all at once
    scan, store = cached_scan(paths, SIZE, folder, workers=1)
    results.put((len(calls), len(store), store.gather(store.rows([scan.records[0].sha256])).tobytes()))


@pytest.mark.skipif(sys.platform == "win32", reason="fork")
def test_processes_racing_build_it_once(tmp_path):
    data = _folder(tmp_path, n=15)
    paths = sorted(data.rglob("*.png"))
    folder = cache_folder(data, SIZE, tmp_path / "cache")
    context = multiprocessing.get_context("fork")
    start, results = context.Barrier(3), context.Queue()
    processes = [context.Process(target=_build_in_a_process, args=(paths, folder, start, results)) for _ in range(3)]
    for process in processes:
        process.start()
    found = [results.get(timeout=60) for _ in processes]
    for process in processes:
        process.join(timeout=60)
    assert sorted(n for n, _, _ in found) == [0, 0, 30]  # one builder; the others waited and found it built
    assert {size for _, size, _ in found} == {30} and len({first for _, _, first in found}) == 1
    assert len(list(folder.glob("images-*.u8"))) == 1


def test_training_from_the_disk_cache_gives_the_batches_of_memory(tmp_path):
    data = _folder(tmp_path)
    ram = open_data(str(data), image_size=SIZE, batch_size=4, budget=10**9)
    disk = _disk(data, tmp_path)
    assert ram.mapped is None and len(ram.dataset.train) == disk.train_size
    assert np.array_equal(ram.dataset.train.labels, disk.mapped.labels)
    resident = torch.from_numpy(ram.dataset.train.images).permute(0, 3, 1, 2)
    labels = torch.from_numpy(ram.dataset.train.labels)
    for world in (None, (1, 2)):
        kwargs = {}
        if world is not None:
            from cnnkit.train.distributed import World

            kwargs["world"] = World(world[0], world[0], world[1])
        one = TensorBatches(resident, labels, 4, generator=torch.Generator().manual_seed(5), **kwargs)
        two = TensorBatches(disk.mapped, torch.from_numpy(disk.mapped.labels), 4,
                            generator=torch.Generator().manual_seed(5), **kwargs)  # fmt: skip
        for _ in range(2):  # two epochs: two permutations
            pairs = list(zip(one, two, strict=True))
            for (x1, y1), (x2, y2) in pairs:
                assert torch.equal(y1, y2) and x2.shape == x1.shape and x2.dtype == torch.float32
                assert (x1 - x2).abs().max() <= QUANTUM
                assert x2.is_contiguous(memory_format=torch.channels_last)
    for split in ("val", "test"):  # held in memory, read from the cache rather than decoded again
        a, b = getattr(ram.dataset, split), getattr(disk.dataset, split)
        assert np.array_equal(a.labels, b.labels) and np.abs(a.images - b.images).max() <= QUANTUM


def test_cnnkit_train_and_resume_from_the_disk_cache(tmp_path, capsys, decodes):
    data = _folder(tmp_path)
    cache = str(tmp_path / "cache")
    run = tmp_path / "run"
    code, _, err = _cli(capsys, "train", "--data", str(data), "--cache", "disk", "--data-dir", cache, "--epochs", "1",
                        "--image-size", "20", "--workers", "0", "--out", str(run), "-q", "--no-report")  # fmt: skip
    assert code == 0, err
    assert json.loads((run / "config.json").read_text())["cache"] == "disk"
    decodes.clear()
    again = reopen_data(run, data_dir=cache, cache="disk")  # what --resume opens: the recorded files, none decoded
    assert decodes == [] and again.mapped is not None
    assert again.train_size == len(json.loads((run / "split.json").read_text())["train"])


def test_cache_none_streams_from_the_files_and_auto_picks_memory_or_disk(tmp_path):
    data = _folder(tmp_path)
    streamed = open_data(str(data), image_size=SIZE, batch_size=4, cache="none", data_dir=str(tmp_path / "cache"))
    assert streamed.mapped is None and isinstance(streamed.stream, torch.utils.data.DataLoader)
    assert len(streamed.dataset.train) == 0 and not (tmp_path / "cache").exists()
    fits = open_data(str(data), image_size=SIZE, cache="auto", budget=10**9, data_dir=str(tmp_path / "cache"))
    assert fits.mapped is None and fits.stream is None and len(fits.dataset.train) == fits.train_size
    assert not (tmp_path / "cache").exists()
    too_big = open_data(str(data), image_size=SIZE, cache="auto", budget=0, data_dir=str(tmp_path / "cache"))
    assert too_big.mapped is not None and (tmp_path / "cache" / "decoded").is_dir()


def test_a_bad_cache_value_is_one_clear_line(tmp_path):
    result = run_main("train", "--cache", "fast")
    assert result.returncode == 2
    assert result.stderr.splitlines()[-1] == ("cnnkit train: error: argument --cache: invalid choice: 'fast' "
                                              "(choose from 'auto', 'ram', 'disk', 'none')")  # fmt: skip
    with pytest.raises(ConfigError, match=r"^cache must be auto, ram, disk or none, got 'fast'$"):
        TrainConfig(cache="fast").validate()
    with pytest.raises(ConfigError, match=r"^cache must be auto, ram, disk or none, got 'fast'$"):
        open_data(str(_folder(tmp_path)), image_size=SIZE, cache="fast")


def test_a_disk_too_full_for_the_cache_is_one_line(tmp_path, monkeypatch, capsys):
    data = _folder(tmp_path)
    monkeypatch.setattr(decoded_cache.shutil, "disk_usage", lambda _: SimpleNamespace(free=0))
    with pytest.raises(CacheSpaceError, match=r"may need 0.0 GiB and 0.0 GiB are free.*or use --cache none$"):
        _disk(data, tmp_path)
    streamed = open_data(str(data), image_size=SIZE, cache="auto", budget=0, data_dir=str(tmp_path / "cache"))
    assert streamed.stream is not None and streamed.mapped is None  # auto falls back to the files
    err = capsys.readouterr().err.splitlines()
    assert len(err) == 1 and err[0].startswith("warning: the decoded-image cache") and "streaming from the files" in err[0]  # fmt: skip


def test_a_reader_gives_its_mapped_pages_back_as_it_goes(tmp_path, monkeypatch):
    data = _folder(tmp_path)
    disk = _disk(data, tmp_path)
    released = []
    monkeypatch.setattr(decoded_cache, "_RELEASE_BYTES", 8 * decoded_cache._FAULT_AROUND)
    monkeypatch.setattr(disk.mapped.cache, "_mapped", SimpleNamespace(madvise=released.append))
    disk.mapped.cache._since_release = 0  # opening read the validation and test images already
    batches = list(TensorBatches(disk.mapped, torch.from_numpy(disk.mapped.labels), 4))  # 14 rows: one release
    assert len(batches) == 4 and released == [decoded_cache.mmap.MADV_DONTNEED]


@pytest.mark.slow
def test_torchrun_processes_share_one_cache_and_train_as_one_process(tmp_path):
    from safetensors.torch import load_file

    from cnnkit.recipe import train
    from test_distributed import torchrun

    data = _folder(tmp_path, n=24)
    args = ["--data", str(data), "--cache", "disk", "--data-dir", str(tmp_path / "cache"), "--image-size", "20",
            "--epochs", "2", "--batch-size", "8", "--deterministic", "--augment", "none", "--seed", "1", "-q",
            "--no-report"]  # fmt: skip
    result = torchrun("train", *args, "--out", str(tmp_path / "two"), log=tmp_path / "log")
    assert result.returncode == 0, result.stderr[-3000:]
    assert len(list(cache_folder(data, 20, tmp_path / "cache").glob("images-*.u8"))) == 1
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    try:
        train(TrainConfig(data=str(data), cache="disk", data_dir=str(tmp_path / "cache"), image_size=20, epochs=2,
                          batch_size=8, deterministic=True, augment="none", seed=1, verbose=0, report=False,
                          out=str(tmp_path / "one")))  # fmt: skip
    finally:
        torch.set_num_threads(threads)
    two, one = load_file(tmp_path / "two" / "model.safetensors"), load_file(tmp_path / "one" / "model.safetensors")
    for key in one:  # float32 reassociation of the gradient sums only (see test_distributed)
        assert torch.linalg.vector_norm(two[key] - one[key]) <= 5e-4 * torch.linalg.vector_norm(one[key]), key
