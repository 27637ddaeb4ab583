"""Tiny data sets written in their publishers' own formats, for tests that must never download.

Each writer puts the files where the data cache expects them (torchvision's layouts) and
returns what it wrote, so tests can compare what cnnkit reads with what went in.
"""

from __future__ import annotations

import gzip
import io
import pickle
import struct
import tarfile
from pathlib import Path

import numpy as np
from PIL import Image


def _idx(array: np.ndarray) -> bytes:
    """The IDX format: 0, 0, type 0x08 (uint8), rank; big-endian dimensions; the bytes."""
    header = struct.pack(">BBBB", 0, 0, 0x08, array.ndim) + struct.pack(f">{array.ndim}I", *array.shape)
    return header + array.astype(np.uint8).tobytes()


def write_mnist(root: Path, folder: str = "MNIST", n_train: int = 40, n_test: int = 20, seed: int = 0) -> dict:
    """``<root>/<folder>/raw/*-idx?-ubyte.gz`` with random 28x28 digits whose brightness encodes the label."""
    rng = np.random.default_rng(seed)
    out = {}
    raw = root / folder / "raw"
    raw.mkdir(parents=True, exist_ok=True)
    for prefix, n in (("train", n_train), ("t10k", n_test)):
        labels = np.arange(n) % 10
        images = (rng.integers(0, 20, (n, 28, 28)) + labels[:, None, None] * 20).astype(np.uint8)
        (raw / f"{prefix}-images-idx3-ubyte.gz").write_bytes(gzip.compress(_idx(images)))
        (raw / f"{prefix}-labels-idx1-ubyte.gz").write_bytes(gzip.compress(_idx(labels)))
        out[prefix] = (images, labels)
    return out


def _records(images: np.ndarray, labels: np.ndarray, coarse: bool) -> bytes:
    planes = images.transpose(0, 3, 1, 2).reshape(len(images), -1)  # (N, 3072): R, G, B planes
    label_bytes = [labels // 5, labels] if coarse else [labels]  # CIFAR-100: (coarse, fine)
    return np.concatenate([*(lb[:, None] for lb in label_bytes), planes], axis=1).astype(np.uint8).tobytes()


def _add(tar: tarfile.TarFile, name: str, data: bytes) -> None:
    info = tarfile.TarInfo(name)
    info.size = len(data)
    tar.addfile(info, io.BytesIO(data))


def _cifar_arrays(n: int, classes: int, seed: int) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    labels = np.arange(n) % classes
    return rng.integers(0, 256, (n, 32, 32, 3), dtype=np.uint8), labels


def write_cifar10_binary(root: Path, per_batch: int = 4, n_test: int = 10) -> dict:
    """``cifar-10-binary.tar.gz`` as the University of Toronto publishes it."""
    batches = [_cifar_arrays(per_batch, 10, i) for i in range(5)]
    test = _cifar_arrays(n_test, 10, 9)
    with tarfile.open(root / "cifar-10-binary.tar.gz", "w:gz") as tar:
        for i, (x, y) in enumerate(batches, 1):
            _add(tar, f"cifar-10-batches-bin/data_batch_{i}.bin", _records(x, y, coarse=False))
        _add(tar, "cifar-10-batches-bin/test_batch.bin", _records(*test, coarse=False))
        names = ["airplane", "automobile", "bird", "cat", "deer", "dog", "frog", "horse", "ship", "truck"]
        _add(tar, "cifar-10-batches-bin/batches.meta.txt", ("\n".join(names) + "\n\n").encode())
    return {"train": tuple(np.concatenate(a) for a in zip(*batches)), "test": test, "names": names}


def write_cifar100_binary(root: Path, n_train: int = 20, n_test: int = 10) -> dict:
    train, test = _cifar_arrays(n_train, 100, 1), _cifar_arrays(n_test, 100, 2)
    names = [f"class_{i}" for i in range(100)]
    with tarfile.open(root / "cifar-100-binary.tar.gz", "w:gz") as tar:
        _add(tar, "cifar-100-binary/train.bin", _records(*train, coarse=True))
        _add(tar, "cifar-100-binary/test.bin", _records(*test, coarse=True))
        _add(tar, "cifar-100-binary/fine_label_names.txt", "\n".join(names).encode())
        _add(tar, "cifar-100-binary/coarse_label_names.txt", b"a\nb\n")
    return {"train": train, "test": test, "names": names}


def cifar_python_batch(images: np.ndarray, labels: np.ndarray, key: bytes = b"labels") -> bytes:
    """A CIFAR Python batch: a pickled dict with bytes keys, as the Python 2 originals unpickle."""
    data = images.transpose(0, 3, 1, 2).reshape(len(images), -1)
    return pickle.dumps({b"batch_label": b"testing batch", key: [int(v) for v in labels], b"data": data}, protocol=2)


def write_cifar10_python(root: Path, per_batch: int = 3) -> dict:
    """``cifar-10-python.tar.gz`` (the pickled version torchvision downloads)."""
    batches = [_cifar_arrays(per_batch, 10, i) for i in range(5)]
    test = _cifar_arrays(6, 10, 7)
    names = [f"thing{i}" for i in range(10)]
    with tarfile.open(root / "cifar-10-python.tar.gz", "w:gz") as tar:
        for i, (x, y) in enumerate(batches, 1):
            _add(tar, f"cifar-10-batches-py/data_batch_{i}", cifar_python_batch(x, y))
        _add(tar, "cifar-10-batches-py/test_batch", cifar_python_batch(*test))
        meta = pickle.dumps({b"label_names": [n.encode() for n in names], b"num_vis": 3072}, protocol=2)
        _add(tar, "cifar-10-batches-py/batches.meta", meta)
    return {"train": tuple(np.concatenate(a) for a in zip(*batches)), "test": test, "names": names}


def write_svhn(root: Path, n_train: int = 20, n_test: int = 10) -> dict:
    """``SVHN/{train,test}_32x32.mat``: X is (32, 32, 3, N), y is (N, 1) with 10 for the digit 0."""
    from scipy.io import savemat

    out = {}
    (root / "SVHN").mkdir(parents=True, exist_ok=True)
    for split, n in (("train", n_train), ("test", n_test)):
        x, digits = _cifar_arrays(n, 10, n)
        y = np.where(digits == 0, 10, digits).astype(np.uint8)[:, None]
        savemat(root / "SVHN" / f"{split}_32x32.mat", {"X": x.transpose(1, 2, 3, 0), "y": y})
        out[split] = (x, digits)
    return out


def write_medmnist(root: Path, name: str, classes: int, channels: int = 1, n: int = 12) -> dict:
    """``medmnist/<name>.npz`` with the official keys: {train,val,test}_{images,labels}."""
    rng = np.random.default_rng(3)
    arrays = {}
    for split, count in (("train", n), ("val", n // 2), ("test", n // 2)):
        shape = (count, 28, 28) if channels == 1 else (count, 28, 28, 3)
        arrays[f"{split}_images"] = rng.integers(0, 256, shape, dtype=np.uint8)
        arrays[f"{split}_labels"] = (np.arange(count) % classes)[:, None].astype(np.uint8)
    (root / "medmnist").mkdir(parents=True, exist_ok=True)
    np.savez(root / "medmnist" / f"{name}.npz", **arrays)
    return arrays


def write_gtsrb(root: Path, classes: int = 3, per_class: int = 4, n_test: int = 6) -> dict:
    """torchvision's GTSRB layout: Training/<class>/*.ppm, Final_Test/Images/*.ppm and GT-final_test.csv."""
    base = root / "gtsrb"
    rng = np.random.default_rng(5)
    for c in range(classes):
        folder = base / "GTSRB" / "Training" / f"{c:05d}"
        folder.mkdir(parents=True)
        for i in range(per_class):
            size = int(rng.integers(20, 50))
            Image.fromarray(rng.integers(0, 256, (size, size, 3), dtype=np.uint8)).save(folder / f"00000_{i:05d}.ppm")
        (folder / f"GT-{c:05d}.csv").write_text("Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId\n")
    images = base / "GTSRB" / "Final_Test" / "Images"
    images.mkdir(parents=True)
    rows = ["Filename;Width;Height;Roi.X1;Roi.Y1;Roi.X2;Roi.Y2;ClassId"]
    for i in range(n_test):
        Image.fromarray(rng.integers(0, 256, (30, 30, 3), dtype=np.uint8)).save(images / f"{i:05d}.ppm")
        rows.append(f"{i:05d}.ppm;30;30;5;5;25;25;{i % classes}")
    (base / "GT-final_test.csv").write_text("\n".join(rows) + "\n")
    return {"train": classes * per_class, "test": n_test}


def write_lfw(root: Path, people: dict[str, int]) -> Path:
    """torchvision's LFW layout: lfw-py/lfw_funneled/<Name>/<Name>_0001.jpg, small grey-ish faces."""
    folder = root / "lfw-py" / "lfw_funneled"
    for k, (name, count) in enumerate(people.items()):
        person = folder / name
        person.mkdir(parents=True)
        for i in range(1, count + 1):
            Image.new("RGB", (50, 50), (40 * k + i % 7, 90, 120)).save(person / f"{name}_{i:04d}.jpg", quality=60)
    return folder
