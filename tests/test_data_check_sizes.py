"""`check-data` and training's data check find the same duplicates and leaks at any training size."""

from __future__ import annotations

import numpy as np
from PIL import Image

from cnnkit.data.check import build_report
from cnnkit.data.folders import index_path
from cnnkit.data.scan import scan_files
from conftest import run_main


def _photo(seed: int, size: int = 160) -> Image.Image:
    """A photo-like RGB picture: smooth shapes plus fine texture (what a draft JPEG decode drops)."""
    rng = np.random.default_rng(seed)
    base = Image.fromarray(rng.integers(0, 256, (5, 5, 3), dtype=np.uint8)).resize(
        (size, size), Image.Resampling.BICUBIC
    )
    noise = rng.normal(0, 18, (size, size, 3))
    return Image.fromarray(np.clip(np.asarray(base, np.float32) + noise, 0, 255).astype(np.uint8))


def _folder(root):
    """Train and test classes of large JPEGs, with resized re-encoded copies, one across splits, one across classes."""
    for split, offset in (("train", 0), ("test", 100)):
        for c, name in enumerate(("cat", "dog")):
            (root / split / name).mkdir(parents=True)
            for i in range(12):
                _photo(offset + 20 * c + i, 320 + 16 * i).save(root / split / name / f"{name}_{i}.jpg", quality=90)
    for i in range(6):  # near copies: smaller, re-encoded, a touch brighter
        src = Image.open(root / "train" / "cat" / f"cat_{i}.jpg")
        copy = Image.eval(src.resize((src.width * 3 // 4, src.height * 3 // 4)), lambda v: min(255, v + 6))
        copy.save(root / ("test" if i == 0 else "train") / "cat" / f"copy_{i}.jpg", quality=70)
    (root / "train" / "dog" / "filed_twice.jpg").write_bytes((root / "train" / "cat" / "cat_5.jpg").read_bytes())


def test_duplicates_and_leaks_do_not_depend_on_the_training_size(tmp_path):
    root = tmp_path / "photos"
    _folder(root)
    index = index_path(root)
    reports = {}
    for size in (None, 64, 96, 224):
        scan = scan_files(index.paths, None if size is None else (size, size, 3))
        if size is not None:
            assert scan.images.shape[1:] == (size, size, 3)
        reports[size] = scan, build_report(str(root), index, scan).to_dict()
    hashes = {size: [r.dhash for r in scan.records] for size, (scan, _) in reports.items()}
    assert hashes[64] == hashes[96] == hashes[224] == hashes[None]
    found = {size: (d["exact_duplicates"], d["near_duplicates"], d["leakage"]) for size, (_, d) in reports.items()}
    assert found[64] == found[96] == found[224] == found[None]
    near = {frozenset(f["path"] for f in g) for g in reports[None][1]["near_duplicates"]}
    for i in range(1, 6):
        assert any(f"train/cat/copy_{i}.jpg" in g and f"train/cat/cat_{i}.jpg" in g for g in near), near
    assert [g["kind"] for g in reports[None][1]["leakage"]] == ["near"]


def test_check_data_names_the_conflicting_files(tmp_path):
    root = tmp_path / "photos"
    _folder(root)
    result = run_main("check-data", str(root), "--out", str(tmp_path))
    assert result.returncode == 0, result.stderr
    out = result.stdout
    assert "different classes: train/cat/cat_5.jpg [cat, train], train/dog/filed_twice.jpg [dog, train]" in out
    assert "leak (near): " in out and "test/cat/copy_0.jpg [cat, test]" in out
    assert "near duplicates: " in out and "train/cat/copy_1.jpg [cat, train]" in out
