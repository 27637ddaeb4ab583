"""Your own images: folder and CSV layouts, odd and broken files, and the health report."""

from __future__ import annotations

import io
import json
import struct
import subprocess
import sys
import zlib

import numpy as np
import pytest
from PIL import Image

from cnnkit.data.check import build_report, near_duplicate_pairs
from cnnkit.data.check_html import render_html
from cnnkit.data.folders import index_csv, index_folder, index_path
from cnnkit.data.inputs import image_to_input
from cnnkit.data.prepare import assign_roles
from cnnkit.data.scan import ANALYSIS_SHAPE, scan_files, thumbnail
from cnnkit.data.transforms import load_input
from cnnkit.errors import DataError


def smooth(seed: int, size: int = 48) -> Image.Image:
    """A smooth random RGB picture: low frequencies survive resizing and JPEG, as photos do."""
    small = np.random.default_rng(seed).integers(0, 256, (6, 6, 3), dtype=np.uint8)
    return Image.fromarray(small).resize((size, size), Image.Resampling.BICUBIC)


def _huge_png_header(width: int, height: int) -> bytes:
    """A PNG whose header claims width x height pixels (and has no pixel data): a decompression bomb's calling card."""

    def chunk(kind: bytes, data: bytes) -> bytes:
        return struct.pack(">I", len(data)) + kind + data + struct.pack(">I", zlib.crc32(kind + data))

    ihdr = struct.pack(">IIBBBBB", width, height, 8, 0, 0, 0, 0)  # 8-bit grey
    return b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", ihdr) + chunk(b"IDAT", zlib.compress(b"\0" * 64)) + chunk(b"IEND", b"")


def _save(img: Image.Image, fmt: str, **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def write_zoo(folder) -> dict[str, str]:
    """Good images of every odd kind and bad files of every kind, in one class folder. Returns name -> problem."""
    folder.mkdir(parents=True, exist_ok=True)
    png = _save(smooth(1), "PNG")
    files = {
        "corrupt.jpg": b"\xff\xd8\xff\xe0" + bytes(range(256)) * 4,
        "truncated.png": png[: len(png) // 2],
        "zero.png": b"",
        "text.png": b"this is a text file, not a picture\n",
        "huge.png": _huge_png_header(50_000, 50_000),
        "cmyk.jpg": _save(smooth(2).convert("CMYK"), "JPEG"),
        "sixteen.png": _save(Image.fromarray((np.arange(48 * 48).reshape(48, 48) * 28).astype(np.uint16)), "PNG"),
        "palette.png": _save(smooth(3).convert("P", palette=Image.Palette.ADAPTIVE, colors=16), "PNG"),
        "rgba.png": _save(smooth(4).convert("RGBA"), "PNG"),
        "gif.gif": _save(smooth(5), "GIF"),
        "photo.webp": _save(smooth(6), "WEBP"),
        "scan.tif": _save(smooth(7), "TIFF"),
        "paint.bmp": _save(smooth(8), "BMP"),
    }
    exif = Image.Exif()
    exif[0x0112] = 6  # shown rotated by 90 degrees
    files["rotated.jpg"] = _save(smooth(9, 40).crop((0, 0, 40, 24)), "JPEG", exif=exif.tobytes())
    for name, data in files.items():
        (folder / name).write_bytes(data)
    return {"corrupt.jpg": "not an image", "truncated.png": "truncated", "zero.png": "empty",
            "text.png": "not an image", "huge.png": "too large"}  # fmt: skip


def write_classes(root, counts: dict[str, int], size: int = 24, seed: int = 0) -> None:
    for c, (name, n) in enumerate(counts.items()):
        (root / name).mkdir(parents=True, exist_ok=True)
        for i in range(n):
            smooth(seed + 100 * c + i, size).save(root / name / f"{name}_{i}.png")


# -- layouts -------------------------------------------------------------------------------------------
def test_flat_and_split_layouts(tmp_path):
    write_classes(tmp_path / "flat", {"10": 2, "2": 3})
    (tmp_path / "flat" / "2" / "notes.txt").write_text("not a picture")
    (tmp_path / "flat" / "2" / ".DS_Store").write_bytes(b"\0")
    (tmp_path / "flat" / "2" / "nested").mkdir()
    smooth(0).save(tmp_path / "flat" / "2" / "nested" / "deep.jpg")
    index = index_folder(tmp_path / "flat")
    assert index.class_names == ["2", "10"]  # numbers sort as numbers
    assert np.bincount(index.labels).tolist() == [4, 2] and set(index.roles) == {""}
    assert [p.name for p in index.skipped] == ["notes.txt"]
    split = tmp_path / "split"
    write_classes(split / "train", {"cat": 3, "dog": 3})
    write_classes(split / "valid", {"cat": 1, "dog": 1})
    write_classes(split / "test", {"dog": 2})
    index = index_path(split)
    assert index.class_names == ["cat", "dog"]
    assert sorted(index.roles) == ["test"] * 2 + ["train"] * 6 + ["val"] * 2


def test_csv_with_and_without_header(tmp_path):
    write_classes(tmp_path / "imgs", {"a": 2, "b": 2})
    (tmp_path / "labels.csv").write_text("path,label\nimgs/a/a_0.png,yes\nimgs/a/a_1.png,yes\nimgs/b/b_0.png,no\n")
    index = index_csv(tmp_path / "labels.csv")
    assert index.class_names == ["no", "yes"] and index.labels.tolist() == [1, 1, 0]
    assert index.paths[0] == tmp_path / "imgs" / "a" / "a_0.png"  # relative to the CSV, not the working folder
    (tmp_path / "plain.csv").write_text("imgs/a/a_0.png,yes,train\nimgs/b/b_0.png,no,test\nimgs/b/b_1.png,no,train\n")
    assert index_path(tmp_path / "plain.csv").roles == ["train", "test", "train"]
    (tmp_path / "bad.csv").write_text("path,label\nimgs/a/a_0.png\n")
    with pytest.raises(DataError, match="bad.csv line 2: expected path,label"):
        index_csv(tmp_path / "bad.csv")


@pytest.mark.parametrize(
    "make,message",
    [
        (lambda d: None, "has no class sub-folders"),
        (lambda d: smooth(0).save(d / "loose.png"), r"has no class sub-folders \(1 images lie directly in it\)"),
        (lambda d: write_classes(d, {"only": 3}), r"only one class \(only\)"),
        (lambda d: (write_classes(d, {"a": 2}), (d / "empty").mkdir()), "class folder .*empty holds no images"),
        (lambda d: (d / "x.csv").write_text(""), "x.csv is empty"),
    ],
)
def test_unusable_folders_are_clear_errors(tmp_path, make, message):
    folder = tmp_path / "data"
    folder.mkdir()
    make(folder)
    target = folder / "x.csv" if (folder / "x.csv").exists() else folder
    with pytest.raises(DataError, match=message):
        index_path(target)


# -- odd and broken files ------------------------------------------------------------------------------
def test_every_odd_file_is_read_or_named_with_its_problem(tmp_path):
    problems = write_zoo(tmp_path / "zoo")
    paths = sorted((tmp_path / "zoo").iterdir())
    scan = scan_files(paths, (16, 16, 3))
    found = {r.path.name: r.kind for r in scan.records if not r.ok}
    assert found == problems
    good = {r.path.name: r for r in scan.records if r.ok}
    assert {"cmyk.jpg", "sixteen.png", "palette.png", "rotated.jpg", "gif.gif", "photo.webp"} <= set(good)
    assert good["rotated.jpg"].width == 24 and good["rotated.jpg"].height == 40  # as shown, after EXIF rotation
    assert good["sixteen.png"].mode.startswith("I") and good["cmyk.jpg"].mode == "CMYK"
    assert scan.images.shape == (len(paths), 16, 16, 3) and np.isfinite(scan.images).all()
    assert scan.images.max() <= 1 and scan.images[[p.name == "sixteen.png" for p in paths]].max() > 0.5


def test_many_files_over_threads_come_back_in_file_order(tmp_path):
    # The threads take files in chunks; records, kept images and a sink's calls stay in the order given.
    paths = []
    for i in range(150):
        paths.append(tmp_path / f"{i:03d}.png")
        smooth(i, 12 + i % 7).save(paths[-1])  # sizes 12..18 px: every one is resized to 8x8
    scan = scan_files(paths, (8, 8, 3), workers=2)
    assert [r.path for r in scan.records] == paths and all(r.ok for r in scan.records)
    assert all(np.array_equal(scan.images[i], load_input(p, (8, 8, 3))) for i, p in enumerate(paths))
    sunk = []
    scan_files(paths, (8, 8, 3), workers=2, sink=lambda record, x: sunk.append((record.path, x)), known={})
    assert [path for path, _ in sunk] == paths and np.array_equal(np.stack([x for _, x in sunk]), scan.images)


@pytest.mark.parametrize("size, mode", [((28, 28), "L"), ((300, 200), "RGB"), ((45, 130), "RGB"), ((32, 32), "L")])
def test_the_health_checks_thumbnail_is_the_models_resize_without_torch(size, mode):
    # What the duplicate hash looks at is computed by Pillow; it must be what conform (torch) gives.
    img = smooth(sum(size), 48).resize(size, Image.Resampling.BICUBIC).convert(mode)
    expected = image_to_input(img, ANALYSIS_SHAPE)[..., 0]  # (32, 32), through torch's antialiased resize
    assert thumbnail(img).shape == (32, 32) and np.abs(thumbnail(img) - expected).max() < 1e-5


def test_check_data_never_imports_torch(tmp_path):
    # The health check needs Pillow and NumPy only: torch's import alone is 1.5 s and ~300 MB.
    write_classes(tmp_path / "data", {"a": 3, "b": 3}, size=28)
    smooth(7, 120).save(tmp_path / "data" / "a" / "big.jpg")
    code = ("import sys\nfrom cnnkit.cli import main\n"
            f"code = main(['check-data', {str(tmp_path / 'data')!r}, '--out', {str(tmp_path)!r}, '--json'])\n"
            "print(code, 'torch' in sys.modules)")  # fmt: skip
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=300)
    assert out.stdout.strip().splitlines()[-1] == "0 False"
    assert json.loads((tmp_path / "data_report.json").read_text())["readable"] == 7


def test_exif_rotation_is_applied_before_resizing(tmp_path):
    picture = smooth(11, 40).crop((0, 0, 40, 24))  # wide
    exif = Image.Exif()
    exif[0x0112] = 6
    (tmp_path / "tagged.jpg").write_bytes(_save(picture, "JPEG", quality=95, exif=exif.tobytes()))
    (tmp_path / "turned.jpg").write_bytes(_save(picture.transpose(Image.Transpose.ROTATE_270), "JPEG", quality=95))
    tagged, turned = load_input(tmp_path / "tagged.jpg", (20, 12, 3)), load_input(tmp_path / "turned.jpg", (20, 12, 3))
    assert np.abs(tagged - turned).mean() < 0.03


# -- the report ----------------------------------------------------------------------------------------
def test_near_duplicate_pairs_match_brute_force():
    rng = np.random.default_rng(0)
    hashes = rng.integers(0, 2**63, 300, dtype=np.uint64)
    flips = np.uint64(1) << rng.integers(0, 64, (60, 3)).astype(np.uint64)
    hashes = np.concatenate([hashes, hashes[:60] ^ flips[:, 0] ^ flips[:, 1] ^ flips[:, 2]])  # <= 3 bits away
    bits = np.unpackbits(hashes.view(np.uint8).reshape(-1, 8), axis=1)
    distance = (bits[:, None, :] != bits[None, :, :]).sum(-1)
    for threshold in (0, 3, 6):
        expected = [(i, j) for i, j in zip(*np.nonzero(np.triu(distance <= threshold, 1)))]
        assert near_duplicate_pairs(hashes, threshold) == expected
    assert len(near_duplicate_pairs(hashes, 3)) >= 60


def test_report_finds_duplicates_leakage_conflicts_and_imbalance(tmp_path):
    root = tmp_path / "data"
    write_classes(root / "train", {"cat": 6, "dog": 3}, size=48)
    write_classes(root / "test", {"cat": 1, "dog": 1}, size=48, seed=500)
    (root / "train" / "cat" / "cat_0.png").replace(root / "train" / "cat" / "cat_0.png")
    copy = (root / "train" / "cat" / "cat_0.png").read_bytes()
    (root / "train" / "cat" / "again.png").write_bytes(copy)  # exact duplicate, same class
    (root / "test" / "cat" / "leaked.png").write_bytes(copy)  # the same picture in test
    (root / "train" / "dog" / "mislabelled.png").write_bytes(copy)  # and filed as a dog
    near = Image.open(root / "train" / "dog" / "dog_1.png").resize((40, 40)).convert("RGB")
    near.save(root / "train" / "dog" / "dog_1_small.jpg", quality=85)  # resized, re-encoded copy
    (root / "train" / "dog" / "<img src=x onerror=alert(1)>.png").write_bytes(b"not a png")
    index = index_path(root)
    report = build_report(str(root), index, scan_files(index.paths))
    d = report.to_dict()
    assert [sorted(f["path"] for f in g) for g in d["exact_duplicates"]] == [
        ["test/cat/leaked.png", "train/cat/again.png", "train/cat/cat_0.png", "train/dog/mislabelled.png"]
    ]
    assert [sorted(f["path"] for f in g) for g in d["near_duplicates"]] == [
        ["train/dog/dog_1.png", "train/dog/dog_1_small.jpg"]
    ]
    assert [(g["kind"], g["splits"]) for g in d["leakage"]] == [("exact", ["test", "train"])]
    assert len(d["label_conflicts"]) == 1
    assert d["class_counts"]["train"] == {"cat": 7, "dog": 5} and d["class_counts"]["test"] == {"cat": 2, "dog": 1}
    assert d["imbalance_ratio"] == pytest.approx(9 / 6)
    assert [b["kind"] for b in d["bad_files"]] == ["not an image"] and d["modes"] == {"RGB": 15}
    json.dumps(d)  # plain JSON
    page = render_html(report)
    assert "<img src=x" not in page and "&lt;img src=x onerror=alert(1)&gt;.png" in page
    assert page.count("data:image/png;base64,") >= 8  # thumbnails inlined: no file beside the page


def test_split_keeps_copies_together_and_the_test_set_fixed(tmp_path):
    write_classes(tmp_path, {"a": 20, "b": 10}, size=12)
    for i in range(5):  # five copies of one picture
        (tmp_path / "a" / f"copy_{i}.png").write_bytes((tmp_path / "a" / "a_0.png").read_bytes())
    index = index_folder(tmp_path)
    scan = scan_files(index.paths)
    by_seed = {seed: assign_roles(index, scan, 0.2, seed) for seed in (0, 1)}
    for roles in by_seed.values():
        copies = {roles[i] for i, p in enumerate(index.paths) if p.name.startswith("copy_") or p.name == "a_0.png"}
        assert len(copies) == 1  # all six in one split
        test = [
            index.labels[i] for i, r in enumerate(roles) if r == "test" and not index.paths[i].name.startswith("copy")
        ]
        assert np.bincount(test).tolist() == [4, 2]  # 20% of the 30 distinct pictures, stratified
    test_files = [[p for p, r in zip(index.paths, roles) if r == "test"] for roles in by_seed.values()]
    val_files = [[p for p, r in zip(index.paths, roles) if r == "val"] for roles in by_seed.values()]
    assert test_files[0] == test_files[1] and val_files[0] != val_files[1]  # --seed moves validation, not test
