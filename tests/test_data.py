"""Built-in data sets, the one decoding path, and conversion to a model's input."""

from __future__ import annotations

import io

import numpy as np
import pytest
import torch
from PIL import Image, ImageFile

from cnnkit import datasets
from cnnkit.data.decode import decode_image, load_image
from cnnkit.data.split import stratified_split
from cnnkit.data.transforms import conform, images_to_tensor
from cnnkit.errors import ConfigError, DataError


def test_digits_like_mnist(digits):
    (x, y), (xt, yt) = digits
    assert x.shape == (1438, 28, 28, 1) and xt.shape == (359, 28, 28, 1)
    assert x.dtype == np.float32 and x.min() >= 0 and x.max() <= 1
    assert np.all(x[:, :3] == 0) and np.all(x[:, :, -3:] == 0)  # the MNIST-style border
    assert sorted(np.unique(y)) == list(range(10))
    # stratified: every class has ~20% of its images in the test split
    frac = np.bincount(yt) / (np.bincount(y) + np.bincount(yt))
    assert np.all(np.abs(frac - 0.2) < 0.02)
    assert datasets.class_names("digits") == [str(d) for d in range(10)]


def test_digits_are_scikit_learns_read_without_importing_it():
    """The file scikit-learn ships, read as its load_digits reads it (which cost a run 1.5 s)."""
    import os
    import subprocess
    import sys

    from sklearn.datasets import load_digits as sklearn_digits

    from cnnkit.data.builtin import _sklearn_digits
    from conftest import SRC

    images, labels = _sklearn_digits()
    bunch = sklearn_digits()
    np.testing.assert_array_equal(images, bunch.images)
    np.testing.assert_array_equal(labels, bunch.target)
    probe = "import sys; from cnnkit import datasets; datasets.load_data('digits'); print('sklearn' in sys.modules)"
    env = {**os.environ, "PYTHONPATH": str(SRC)}
    assert subprocess.run([sys.executable, "-c", probe], capture_output=True, text=True, env=env).stdout == "False\n"


def test_digits_split_is_fixed():
    a = datasets.load_data("digits")
    b = datasets.load_data("digits")
    np.testing.assert_array_equal(a[1][0], b[1][0])


def test_faces():
    (x, y), (xt, yt) = datasets.load_data("faces")
    assert x.shape == (160, 28, 28, 1) and xt.shape == (40, 28, 28, 1)
    assert np.bincount(yt).tolist() == [20, 20]
    assert datasets.class_names("faces") == ["non_face", "face"]


def test_registry_lists_and_rejects():
    names = [d.name for d in datasets.list_datasets()]
    assert names[:2] == ["digits", "faces"]  # the built-in ones first
    assert {"mnist", "fashion-mnist", "kmnist", "cifar10", "cifar100", "svhn", "gtsrb", "lfw-people"} <= set(names)
    assert {"pneumoniamnist", "bloodmnist", "dermamnist", "organamnist"} <= set(names)
    with pytest.raises(ConfigError, match="unknown data set 'mnistt'.*digits"):
        datasets.load_data("mnistt")


def test_stratified_split_is_seeded_and_stratified():
    labels = np.repeat(np.arange(4), 25)
    kept, held = stratified_split(labels, 0.2, seed=3)
    assert len(held) == 20 and np.bincount(labels[held]).tolist() == [5, 5, 5, 5]
    assert set(kept).isdisjoint(held) and len(kept) + len(held) == 100
    np.testing.assert_array_equal(held, stratified_split(labels, 0.2, seed=3)[1])


@pytest.mark.parametrize("case", range(40))
def test_stratified_split_is_scikit_learns_index_for_index(case):
    """Every run's validation split and the built-in test splits stay what scikit-learn made them."""
    from sklearn.model_selection import train_test_split

    rng = np.random.default_rng(case)
    n = int(rng.integers(4, 400))
    # Balanced, skewed, with classes of one image (the plain split), and with ties in the shares.
    weights = rng.dirichlet(np.full(int(rng.integers(1, 12)), float(rng.choice([0.3, 1.0, 50.0]))))
    labels = rng.choice(len(weights), size=n, p=weights)
    if case % 5 == 0:
        labels = np.repeat(np.arange(4), n // 4 + 1)[:n]
    fraction, seed = float(rng.choice([0.1, 0.2, 0.25, 0.5, 0.9])), int(rng.integers(0, 1000))
    kept, held = stratified_split(labels, fraction, seed)
    held_n = max(1, round(fraction * n))
    counts = np.unique(labels, return_counts=True)[1]
    stratify = labels if counts.min() >= 2 and min(held_n, n - held_n) >= len(counts) else None
    theirs = train_test_split(np.arange(n), test_size=held_n, random_state=seed, stratify=stratify)
    np.testing.assert_array_equal(kept, np.sort(theirs[0]))
    np.testing.assert_array_equal(held, np.sort(theirs[1]))


# -- decoding ---------------------------------------------------------------------------------------
def _png(img: Image.Image, fmt: str = "PNG", **kw) -> bytes:
    buf = io.BytesIO()
    img.save(buf, format=fmt, **kw)
    return buf.getvalue()


def test_modes_convert_consistently():
    grey = np.tile(np.linspace(0, 255, 16, dtype=np.uint8), (8, 1))  # (8, 16)
    rgb = Image.fromarray(np.stack([grey] * 3, axis=2))
    expected = grey.astype(np.float32) / 255
    sources = {
        "L": Image.fromarray(grey),
        "RGB": rgb,
        "RGBA opaque": rgb.convert("RGBA"),
        "LA opaque": Image.fromarray(grey).convert("LA"),
        "P": rgb.convert("P", palette=Image.Palette.ADAPTIVE, colors=256),
        "I;16": Image.fromarray(grey.astype(np.uint16) * 257),
    }
    for name, img in sources.items():
        got = load_image(_png(img), channels=1)[..., 0]
        assert got.shape == (8, 16), name
        np.testing.assert_allclose(got, expected, atol=2 / 255, err_msg=name)
        rgb_got = load_image(_png(img), channels=3)
        assert rgb_got.shape == (8, 16, 3), name


def test_sixteen_bit_keeps_its_range():
    deep = np.array([[0, 1000, 65535]], dtype=np.uint16)
    got = load_image(_png(Image.fromarray(deep)), channels=1)[0, :, 0]
    np.testing.assert_allclose(got, deep[0] / 65535, rtol=1e-6)


def test_transparency_is_composited_over_black():
    rgba = np.zeros((2, 2, 4), np.uint8)
    rgba[..., :3] = 255  # white...
    rgba[0, 0, 3] = 255  # ...but only one pixel opaque
    got = load_image(_png(Image.fromarray(rgba, "RGBA")), channels=1)[..., 0]
    np.testing.assert_allclose(got, [[1, 0], [0, 0]], atol=1e-6)


def test_cmyk_jpeg_and_exif_rotation():
    cmyk = Image.new("CMYK", (6, 4), (0, 0, 0, 0))  # white
    assert load_image(_png(cmyk, "JPEG"), channels=3).shape == (4, 6, 3)
    wide = Image.new("L", (6, 4), 0)
    exif = Image.Exif()
    exif[0x0112] = 6  # orientation: rotate 90 degrees
    rotated = load_image(_png(wide, "JPEG", exif=exif.tobytes()), channels=1)
    assert rotated.shape == (6, 4, 1)


def test_gif_first_frame():
    frames = [Image.new("L", (4, 4), v) for v in (255, 0)]
    buf = io.BytesIO()
    frames[0].save(buf, format="GIF", save_all=True, append_images=frames[1:])
    assert load_image(buf.getvalue(), channels=1).mean() > 0.9


def test_bad_images_are_data_errors(tmp_path):
    png = _png(Image.new("RGB", (64, 64), (10, 200, 30)))
    cases = {
        "truncated": png[: len(png) // 2],
        "text": b"this is not an image",
        "empty": b"",
    }
    for name, data in cases.items():
        with pytest.raises(DataError, match="truncated|not an image|empty file"):
            decode_image(data)
        assert name
    with pytest.raises(DataError, match="no such file"):
        decode_image(tmp_path / "missing.png")
    with pytest.raises(DataError, match="cannot read"):
        decode_image(tmp_path)


def test_decompression_bomb_is_refused_before_decoding(monkeypatch):
    big = _png(Image.new("L", (5000, 5000)))
    decoded = []
    real_load = ImageFile.ImageFile.load
    monkeypatch.setattr(ImageFile.ImageFile, "load", lambda self: decoded.append(self.size) or real_load(self))
    with pytest.raises(DataError, match="more than the limit"):
        decode_image(big, max_pixels=1_000_000)
    assert decoded == []  # refused from the header: not one pixel decoded (a PNG's getexif() would decode it)


# -- to the model's input -------------------------------------------------------------------------------
def test_images_to_tensor_is_a_channels_last_view():
    x = np.random.rand(2, 5, 4, 3).astype(np.float32)
    t = images_to_tensor(x)
    assert t.shape == (2, 3, 5, 4) and t.is_contiguous(memory_format=torch.channels_last)
    assert images_to_tensor(x[..., 0]).shape == (2, 1, 5, 4)


def test_conform_channels_and_size():
    x = torch.rand(2, 3, 10, 10)
    grey = conform(x, (10, 10, 1))
    torch.testing.assert_close(grey[:, 0], 0.299 * x[:, 0] + 0.587 * x[:, 1] + 0.114 * x[:, 2])
    assert conform(x[:, :1], (5, 6, 3)).shape == (2, 3, 5, 6)
    assert conform(x, (10, 10, 3)) is x
    with pytest.raises(DataError):
        conform(torch.rand(1, 2, 4, 4), (4, 4, 3))
