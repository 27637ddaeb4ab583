"""Standard data sets in their official formats: the MNIST family (IDX) and SVHN (MATLAB).

Each registers in the catalog with the files it needs in the data cache, laid out as
torchvision lays them out, so a torchvision data folder can serve as ``--data-dir``:

- ``mnist``, ``fashion-mnist``, ``kmnist``: ``<cache>/<MNIST|FashionMNIST|KMNIST>/raw/*-idx?-ubyte(.gz)``,
  read by torchvision's own classes (the ``.gz`` files are unpacked beside themselves once).
- ``svhn``: ``<cache>/SVHN/{train,test}_32x32.mat``, read with ``scipy.io.loadmat``
  (label 10 means the digit 0).

Shared helpers for the other standard modules live here too.
"""

from __future__ import annotations

import gzip
import shutil
from collections.abc import Callable
from pathlib import Path

import numpy as np

from cnnkit._io import atomic_write
from cnnkit.data.catalog import Dataset, DatasetInfo, ImageArrays, register_dataset
from cnnkit.data.downloads import RemoteFile
from cnnkit.errors import DataError

__all__ = ["arrays_from_uint8", "unpack_gzip"]


def arrays_from_uint8(images: np.ndarray, labels: np.ndarray) -> ImageArrays:
    """uint8 ``(N, H, W)`` or ``(N, H, W, C)`` images and integer labels -> float32 [0, 1] NHWC arrays."""
    images = np.asarray(images)
    if images.ndim == 3:
        images = images[..., None]  # (N, H, W, 1)
    x = np.empty(images.shape, np.float32)
    np.divide(images, np.float32(255), out=x, dtype=np.float32, casting="unsafe")
    return ImageArrays(x, np.asarray(labels, dtype=np.int64).reshape(-1))


def unpack_gzip(packed: Path, unpacked: Path) -> None:
    """Write the content of ``packed`` (a .gz) to ``unpacked``, atomically; a damaged file is a DataError."""

    def write(tmp: str) -> None:
        with gzip.open(packed, "rb") as src, open(tmp, "wb") as dst:
            shutil.copyfileobj(src, dst, 1 << 20)

    try:
        atomic_write(unpacked, write)
    except (OSError, EOFError) as e:
        raise DataError(f"{packed}: damaged or incomplete ({e}); delete it and try again") from None


# -- the MNIST family: IDX files, read by torchvision -------------------------------------------------
_IDX = ("train-images-idx3-ubyte", "train-labels-idx1-ubyte", "t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte")


def _mnist_family(tv_class: str, mirrors: tuple[str, ...], md5s: tuple[str, ...], sizes: tuple[int, ...]
                  ) -> tuple[tuple[RemoteFile, ...], Callable, Callable]:  # fmt: skip
    """(files, ready, published) for one of torchvision's MNIST-format classes (its mirrors and checksums).

    ``published(root)`` gives Keras' arrays: uint8 ``(N, 28, 28)`` images and uint8 ``(N,)`` labels.
    """
    files = tuple(
        RemoteFile(f"{tv_class}/raw/{name}.gz", tuple(f"{m}{name}.gz" for m in mirrors), md5=md5, size=size)
        for name, md5, size in zip(_IDX, md5s, sizes)
    )

    def ready(root: Path) -> bool:
        raw = root / tv_class / "raw"
        return all((raw / name).exists() or (raw / f"{name}.gz").exists() for name in _IDX)

    def published(root: Path) -> tuple[tuple[np.ndarray, np.ndarray], tuple[np.ndarray, np.ndarray]]:
        raw = root / tv_class / "raw"
        for name in _IDX:
            if not (raw / name).exists():
                unpack_gzip(raw / f"{name}.gz", raw / name)
        import torchvision.datasets as tv  # imported here: it takes seconds

        try:
            splits = [getattr(tv, tv_class)(str(root), train=train, download=False) for train in (True, False)]
        except (AssertionError, ValueError, TypeError, RuntimeError, KeyError) as e:
            raise DataError(f"{raw}: not valid IDX files ({e or type(e).__name__}); delete them, try again") from None
        return tuple((s.data.numpy(), s.targets.numpy().astype(np.uint8)) for s in splits)  # type: ignore[return-value]

    return files, ready, published


def _register_mnist(name: str, tv_class: str, classes: list[str], description: str, augment: str,
                    mirrors: tuple[str, ...], md5s: tuple[str, ...], sizes: tuple[int, ...]) -> None:  # fmt: skip
    files, ready, published = _mnist_family(tv_class, mirrors, md5s, sizes)

    def loader(root: Path) -> Dataset:
        train, test = (arrays_from_uint8(*split) for split in published(root))
        return Dataset(name=name, class_names=classes, train=train, test=test)

    register_dataset(DatasetInfo(
        name=name, loader=loader, num_classes=10, image_shape=(28, 28, 1), description=description,
        source=f"torchvision.datasets.{tv_class} (download)", builtin=False, augment=augment,
        sizes={"train": 60000, "test": 10000}, files=files, ready=ready, published=published,
    ))  # fmt: skip


# The mirrors and checksums are torchvision's (torchvision.datasets.MNIST.resources and friends).
_register_mnist(
    "mnist", "MNIST", [str(d) for d in range(10)], "handwritten digits 0-9 (LeCun et al.)", "crop",
    ("https://ossci-datasets.s3.amazonaws.com/mnist/", "http://yann.lecun.com/exdb/mnist/"),
    ("f68b3c2dcbeaaa9fbdd348bbdeb94873", "d53e105ee54ea40749a09fcbcd1e9432",
     "9fb629c4189551a2d022fa330f9573f3", "ec29112dd5afa0611ce80d1b7f02629c"),
    (9912422, 28881, 1648877, 4542),
)  # fmt: skip
_register_mnist(
    "fashion-mnist", "FashionMNIST",
    ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot"],
    "Zalando's clothing images, 10 kinds", "flip-crop",
    ("http://fashion-mnist.s3-website.eu-central-1.amazonaws.com/",),
    ("8d4fb7e6c68d591d4c3dfef9ec88bf0d", "25c81989df183df01b3e8a0aad5dffbe",
     "bef4ecab320f06d8554ea6380940ec79", "bb300cfdad3c16e7a12a480ee83cd310"),
    (26421880, 29515, 4422102, 5148),
)  # fmt: skip
_register_mnist(
    "kmnist", "KMNIST", ["o", "ki", "su", "tsu", "na", "ha", "ma", "ya", "re", "wo"],
    "Kuzushiji (cursive Japanese) characters, 10 classes", "crop",
    ("http://codh.rois.ac.jp/kmnist/dataset/kmnist/",),
    ("bdb82020997e1d708af4cf47b453dcf7", "e144d726b3acfaa3e44228e80efcd344",
     "5c965bf0a639b31b8f53240b1b52f4d7", "7320c461ea6c1c855c0b718fb2a4b134"),
    (18165135, 29497, 3041136, 5120),
)  # fmt: skip


# -- SVHN: MATLAB files ---------------------------------------------------------------------------------
_SVHN = "http://ufldl.stanford.edu/housenumbers/"
_SVHN_FILES = (
    RemoteFile("SVHN/train_32x32.mat", (f"{_SVHN}train_32x32.mat",), md5="e26dedcc434d2e4c54c9b2d4a06d8373",
               size=182040794),
    RemoteFile("SVHN/test_32x32.mat", (f"{_SVHN}test_32x32.mat",), md5="eb5a983be6a315427106f1b164d9cef3",
               size=64275384),
)  # fmt: skip


def _read_svhn(path: Path) -> ImageArrays:
    from scipy.io import loadmat  # MAT v5: a plain array container, nothing executable

    try:
        mat = loadmat(path, variable_names=["X", "y"])
        images, labels = mat["X"], mat["y"]  # (32, 32, 3, N), (N, 1) with 10 for the digit 0
        if images.ndim != 4 or images.shape[2] != 3 or images.shape[3] != len(labels):
            raise ValueError(f"X is {images.shape} for {len(labels)} labels")
    except Exception as e:  # noqa: BLE001 (a damaged MAT file fails in many ways inside scipy; all mean the same)
        raise DataError(f"{path}: not an SVHN .mat file ({e}); delete it and try again") from None
    return arrays_from_uint8(images.transpose(3, 0, 1, 2), labels.reshape(-1) % 10)


def load_svhn(root: Path) -> Dataset:
    """SVHN's cropped digits: 73,257 train and 26,032 test 32x32 RGB images."""
    train, test = (_read_svhn(root / remote.path) for remote in _SVHN_FILES)
    return Dataset(name="svhn", class_names=[str(d) for d in range(10)], train=train, test=test)


register_dataset(DatasetInfo(
    name="svhn", loader=load_svhn, num_classes=10, image_shape=(32, 32, 3),
    description="house numbers from Google Street View, digits 0-9", source="Stanford UFLDL (download)",
    builtin=False, augment="crop", sizes={"train": 73257, "test": 26032}, files=_SVHN_FILES,
))  # fmt: skip
