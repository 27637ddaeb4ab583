"""The faster decoding of ``cnnkit predict``'s folders gives the pixels of the plain path: small files read in
one call (large ones streamed), images already at the model's size skip the resize, and the predict workers'
arrays stacked per chunk equal ``to_batch`` of each file."""

from __future__ import annotations

import numpy as np
import pytest
import torch
from PIL import Image

from cnnkit.data import decode
from cnnkit.data.transforms import _REDUCIBLE, conform, load_input, open_input, to_batch
from cnnkit.errors import ImageError
from cnnkit.predict import _decode_chunk

MODES = ["L", "RGB", "RGBA", "P", "I;16", "LA", "1"]


def write_images(folder, size=(12, 10)):
    """One PNG per PIL mode (and a larger RGB one), deterministic pixels; their paths."""
    rng = np.random.default_rng(0)
    folder.mkdir(exist_ok=True)
    paths = []
    for mode in MODES:
        rgba = Image.fromarray(rng.integers(0, 256, (size[1], size[0], 4), dtype=np.uint8), "RGBA")
        img = rgba.convert(mode) if mode != "I;16" else Image.fromarray(
            rng.integers(0, 65536, (size[1], size[0]), dtype=np.uint16)
        )  # fmt: skip
        paths.append(folder / f"{mode.replace(';', '_')}.png")
        img.save(paths[-1])
    paths.append(folder / "big.png")
    Image.fromarray(rng.integers(0, 256, (40, 48, 3), dtype=np.uint8)).save(paths[-1])
    return paths


def reference(path, shape):
    """The path before: the image through torch's conversion, whatever its size."""
    img = open_input(path, shape).image
    factor = min(img.width // (2 * shape[1]), img.height // (2 * shape[0]))
    if factor >= 2 and img.mode in _REDUCIBLE:
        img = img.reduce(factor)
    x = torch.from_numpy(decode.to_array(img, shape[2])).permute(2, 0, 1)[None]
    return conform(x, shape)[0].permute(1, 2, 0).numpy()


@pytest.mark.parametrize("shape", [(10, 12, 1), (10, 12, 3), (20, 24, 3)])
def test_load_input_equals_the_conversion_through_torch(tmp_path, shape):
    for path in write_images(tmp_path / "images"):
        got = load_input(path, shape)
        assert got.dtype == np.float32 and got.shape == shape
        np.testing.assert_array_equal(got, reference(path, shape))
        np.testing.assert_array_equal(torch.from_numpy(got).permute(2, 0, 1)[None], to_batch(path, shape))


def test_large_files_stream_and_decode_the_same(tmp_path, monkeypatch):
    paths = write_images(tmp_path / "images")
    in_memory = [decode.open_image(p) for p in paths]
    monkeypatch.setattr(decode, "_READ_WHOLE", 0)  # every file is "large": read from disk as Pillow asks
    streamed = [decode.open_image(p) for p in paths]
    for a, b in zip(in_memory, streamed):
        assert (a.format, a.mode, a.size) == (b.format, b.mode, b.size)
        np.testing.assert_array_equal(np.asarray(a.image), np.asarray(b.image))


def test_bad_files_give_the_same_errors(tmp_path):
    (tmp_path / "empty.png").write_bytes(b"")
    good = write_images(tmp_path / "images")[0]
    (tmp_path / "cut.png").write_bytes(good.read_bytes()[:60])
    (tmp_path / "text.png").write_text("not an image")
    for name, match in [("empty.png", "empty file"), ("cut.png", "truncated"), ("text.png", "not an image"),
                        ("missing.png", "no such file")]:  # fmt: skip
        with pytest.raises(ImageError, match=match):
            decode.open_image(tmp_path / name)


def test_predict_workers_give_to_batch_pixels(tmp_path):
    paths = [str(p) for p in write_images(tmp_path / "images")]
    (tmp_path / "cut.png").write_bytes(b"\x89PNG\r\n\x1a\n")
    paths.insert(2, str(tmp_path / "cut.png"))
    shape = (10, 12, 3)
    names, errors, images = _decode_chunk(paths, shape)
    assert names == paths and errors[2] is not None and sum(e is None for e in errors) == len(paths) - 1
    expected = torch.cat([to_batch(p, shape) for p in paths if "cut" not in p])
    assert images.flags.c_contiguous and images.dtype == np.float32
    torch.testing.assert_close(torch.from_numpy(images), expected, rtol=0, atol=0)
