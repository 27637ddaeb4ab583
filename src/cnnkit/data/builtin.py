"""Data sets that ship inside scikit-learn and scikit-image: no network, ever.

- ``digits``: scikit-learn's 1,797 handwritten digits (8x8, 16 grey levels), served at
  28x28 like MNIST: upsampled to 20x20 and centred on a 28x28 black canvas.
- ``faces``: scikit-image's LFW subset, 100 faces and 100 non-faces (25x25), served at 28x28.

Both use a fixed, seeded, stratified 80/20 train/test split, so every run and every
user sees the same test images.
"""

from __future__ import annotations

import gzip
import importlib.util
from pathlib import Path

import numpy as np

from cnnkit.data.catalog import Dataset, DatasetInfo, ImageArrays, register_dataset
from cnnkit.data.split import stratified_split

__all__ = ["load_digits", "load_faces"]

TEST_FRACTION = 0.2
SPLIT_SEED = 0


def _resize(images: np.ndarray, size: int) -> np.ndarray:
    """(N, h, w) float -> (N, size, size) by bilinear interpolation."""
    # torch here, not at the top: importing cnnkit.data (which registers this data set) must not cost
    # torch's 2 s start-up to a caller that only decodes images (cnnkit predict's torch-free lane).
    import torch
    import torch.nn.functional as F

    x = torch.from_numpy(np.ascontiguousarray(images, dtype=np.float32))[:, None]  # (N, 1, h, w)
    x = F.interpolate(x, size=(size, size), mode="bilinear", align_corners=False, antialias=True)
    return x[:, 0].numpy()


def _split(name: str, images: np.ndarray, labels: np.ndarray, class_names: list[str]) -> Dataset:
    train_idx, test_idx = stratified_split(labels, TEST_FRACTION, SPLIT_SEED)
    images = np.clip(images, 0.0, 1.0).astype(np.float32)[..., None]  # (N, H, W, 1)
    labels = labels.astype(np.int64)
    return Dataset(
        name=name,
        class_names=class_names,
        train=ImageArrays(images[train_idx], labels[train_idx]),
        test=ImageArrays(images[test_idx], labels[test_idx]),
    )


def _sklearn_digits() -> tuple[np.ndarray, np.ndarray]:
    """scikit-learn's digits as ``(1797, 8, 8)`` images in 0..16 and their labels.

    Read from the CSV file scikit-learn ships, as its ``load_digits`` reads it, without importing
    scikit-learn (1.5 s, more than the rest of a short run's data preparation); its loader is the
    fallback should a release keep the file elsewhere.
    """
    spec = importlib.util.find_spec("sklearn")  # finds the package without running it
    for folder in (spec.submodule_search_locations or []) if spec else []:
        path = Path(folder) / "datasets" / "data" / "digits.csv.gz"
        if path.is_file():
            with gzip.open(path, "rt") as f:
                table = np.loadtxt(f, delimiter=",")  # (1797, 65): 64 pixels, then the digit
            if table.shape == (1797, 65):
                return table[:, :-1].reshape(-1, 8, 8), table[:, -1].astype(int)
    from sklearn.datasets import load_digits as sklearn_digits

    bunch = sklearn_digits()
    return bunch.images, bunch.target


def load_digits() -> Dataset:
    """scikit-learn's digits as 28x28x1 images in [0, 1]: 1,438 train and 359 test images."""
    images, labels = _sklearn_digits()
    digits = _resize(images / 16.0, 20)  # (N, 20, 20): MNIST's digit box
    canvas = np.zeros((len(digits), 28, 28), np.float32)
    canvas[:, 4:24, 4:24] = digits
    return _split("digits", canvas, labels, [str(d) for d in range(10)])


def load_faces() -> Dataset:
    """scikit-image's LFW subset as 28x28x1 images: face (1) vs. non-face (0), 160 train and 40 test."""
    from skimage.data import lfw_subset

    images = lfw_subset()  # (200, 25, 25) in [0, 1]: 100 faces, then 100 non-faces
    labels = np.array([1] * 100 + [0] * 100)
    return _split("faces", _resize(images, 28), labels, ["non_face", "face"])


register_dataset(DatasetInfo(
    name="digits", loader=load_digits, num_classes=10, image_shape=(28, 28, 1),
    description="handwritten digits 0-9 (scikit-learn's 8x8 digits served at 28x28)",
    source="scikit-learn (bundled)", sizes={"train": 1438, "test": 359}, augment="crop+affine",
))  # fmt: skip
register_dataset(DatasetInfo(
    name="faces", loader=load_faces, num_classes=2, image_shape=(28, 28, 1),
    description="face vs. non-face (scikit-image's LFW subset, 25x25 served at 28x28)",
    source="scikit-image (bundled)", sizes={"train": 160, "test": 40}, augment="flip+crop",
))  # fmt: skip
