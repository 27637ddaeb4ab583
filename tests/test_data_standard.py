"""Standard data sets read from files in their official formats, placed in a data cache by hand: no network."""

from __future__ import annotations

import pickle
import tarfile

import numpy as np
import pytest

from cnnkit import datasets
from cnnkit.data.cifar import read_python_batch
from cnnkit.errors import DataError
from official_formats import (
    cifar_python_batch,
    write_cifar10_binary,
    write_cifar10_python,
    write_cifar100_binary,
    write_gtsrb,
    write_lfw,
    write_medmnist,
    write_mnist,
    write_svhn,
)


@pytest.fixture(autouse=True)
def no_network(monkeypatch):
    """Any attempt to download in these tests is a failure, not a slow test."""
    import cnnkit.data.downloads as downloads

    def refuse(url, timeout):  # noqa: ARG001
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(downloads, "_open", refuse)


@pytest.mark.parametrize("name,folder", [("mnist", "MNIST"), ("fashion-mnist", "FashionMNIST"), ("kmnist", "KMNIST")])
def test_mnist_family_from_idx_gz(tmp_path, name, folder):
    written = write_mnist(tmp_path, folder)
    (x, y), (xt, yt) = datasets.load_data(name, data_dir=tmp_path)
    assert x.shape == (40, 28, 28, 1) and xt.shape == (20, 28, 28, 1) and x.dtype == np.float32
    np.testing.assert_array_equal(x[..., 0], written["train"][0] / np.float32(255))
    np.testing.assert_array_equal(y, written["train"][1])
    np.testing.assert_array_equal(yt, written["t10k"][1])
    assert (tmp_path / folder / "raw" / "train-images-idx3-ubyte").exists()  # unpacked once, as torchvision keeps it
    assert len(datasets.class_names(name, data_dir=tmp_path)) == 10


def test_cifar10_binary_and_cifar100_fine_labels(tmp_path):
    c10, c100 = write_cifar10_binary(tmp_path), write_cifar100_binary(tmp_path)
    ds = datasets.load_dataset("cifar10", data_dir=tmp_path)
    assert ds.class_names == c10["names"] and ds.image_shape == (32, 32, 3)
    np.testing.assert_array_equal(ds.train.images * 255, c10["train"][0].astype(np.float32))  # planes -> HWC
    np.testing.assert_array_equal(ds.test.labels, c10["test"][1])
    assert not (tmp_path / "cifar-10-batches-py").exists()  # no pickle anywhere on this path
    ds100 = datasets.load_dataset("CIFAR-100", data_dir=tmp_path)  # any spelling
    assert len(ds100.class_names) == 100 and ds100.class_names[7] == "class_7"
    np.testing.assert_array_equal(ds100.train.labels, c100["train"][1])  # the fine label, not the coarse one
    np.testing.assert_array_equal(ds100.test.images * 255, c100["test"][0].astype(np.float32))


def test_cifar10_python_batches_through_the_allow_list_unpickler(tmp_path):
    written = write_cifar10_python(tmp_path)
    ds = datasets.load_dataset("cifar10", data_dir=tmp_path)
    assert ds.class_names == written["names"] and len(ds.train) == 15 and len(ds.test) == 6
    np.testing.assert_array_equal(ds.train.images * 255, written["train"][0].astype(np.float32))
    np.testing.assert_array_equal(ds.train.labels, written["train"][1])


class _Exploit:
    def __reduce__(self):
        return (print, ("pwned",))


def test_a_pickle_that_would_run_code_is_refused(tmp_path, capsys):
    with pytest.raises(DataError, match="refusing to load (__builtin__|builtins).print"):
        read_python_batch(pickle.dumps({b"data": _Exploit()}, protocol=2), "evil")
    assert "pwned" not in capsys.readouterr().out
    # the same inside a CIFAR archive placed in the cache
    with tarfile.open(tmp_path / "cifar-10-python.tar.gz", "w:gz") as tar:
        for name in [f"data_batch_{i}" for i in range(1, 6)] + ["test_batch", "batches.meta"]:
            data = pickle.dumps({b"data": _Exploit()}, protocol=2)
            info = tarfile.TarInfo(f"cifar-10-batches-py/{name}")
            info.size = len(data)
            tar.addfile(info, __import__("io").BytesIO(data))
    with pytest.raises(DataError, match="refusing"):
        datasets.load_dataset("cifar10", data_dir=tmp_path)
    assert "pwned" not in capsys.readouterr().out
    assert read_python_batch(cifar_python_batch(np.zeros((1, 32, 32, 3), np.uint8), np.array([3])), "ok")["labels"] == [
        3
    ]


def test_svhn_mat_maps_label_10_to_digit_0(tmp_path):
    written = write_svhn(tmp_path)
    (x, y), (xt, yt) = datasets.load_data("svhn", data_dir=tmp_path)
    assert x.shape == (20, 32, 32, 3) and xt.shape == (10, 32, 32, 3)
    np.testing.assert_array_equal(x * 255, written["train"][0].astype(np.float32))
    np.testing.assert_array_equal(y, written["train"][1])
    assert 0 in y and y.max() <= 9


def test_medmnist_npz_has_its_own_validation_split(tmp_path):
    written = write_medmnist(tmp_path, "bloodmnist", classes=8, channels=3)
    write_medmnist(tmp_path, "pneumoniamnist", classes=2)
    ds = datasets.load_dataset("bloodmnist", data_dir=tmp_path)
    assert ds.image_shape == (28, 28, 3) and len(ds.class_names) == 8 and len(ds.val) == 6
    np.testing.assert_array_equal(ds.val.labels, written["val_labels"][:, 0])
    grey = datasets.load_dataset("pneumoniamnist", data_dir=tmp_path)
    assert grey.image_shape == (28, 28, 1) and grey.class_names == ["normal", "pneumonia"]
    # an .npz holding a pickled object array is refused, not unpickled
    np.savez(tmp_path / "medmnist" / "dermamnist.npz", train_images=np.array([object()], dtype=object))
    with pytest.raises(DataError, match="dermamnist.npz: not a MedMNIST .npz"):
        datasets.load_dataset("dermamnist", data_dir=tmp_path)


def test_gtsrb_folders_and_csv(tmp_path):
    written = write_gtsrb(tmp_path)
    ds = datasets.load_dataset("gtsrb", data_dir=tmp_path)
    assert len(ds.train) == written["train"] and len(ds.test) == written["test"]
    assert ds.image_shape == (32, 32, 3) and len(ds.class_names) == 43 and ds.class_names[14] == "stop"
    assert sorted(set(ds.train.labels.tolist())) == [0, 1, 2] and ds.test.labels.tolist() == [0, 1, 2, 0, 1, 2]
    assert list((tmp_path / "gtsrb").glob("cnnkit-v1-32x32x3.npz"))  # decoded once, kept beside the photos
    again = datasets.load_dataset("gtsrb", data_dir=tmp_path)
    np.testing.assert_array_equal(again.train.images, ds.train.images)


def test_lfw_people_keeps_people_with_enough_photos(tmp_path, monkeypatch):
    from cnnkit.data import photos

    monkeypatch.setattr(photos, "LFW_MIN_FACES", 10)  # 70 in the real thing; fewer photos to write here
    write_lfw(tmp_path, {"Ada_Lovelace": 10, "Alan_Turing": 15, "Grace_Hopper": 9})
    ds = datasets.load_dataset("lfw-people", data_dir=tmp_path)
    assert ds.class_names == ["Ada_Lovelace", "Alan_Turing"] and ds.image_shape == (64, 64, 3)
    assert len(ds.train) + len(ds.test) == 25 and len(ds.test) == 5
    assert np.bincount(ds.test.labels).tolist() == [2, 3]  # stratified


def test_cached_status_and_damaged_files(tmp_path):
    from cnnkit.data import get_dataset_info

    info = get_dataset_info("mnist")
    assert not info.is_cached(tmp_path)
    write_mnist(tmp_path)
    assert info.is_cached(tmp_path)
    # a hand-placed file that is not what it claims to be: a clear error naming it, never a traceback
    (tmp_path / "SVHN").mkdir()
    for name in ("train_32x32.mat", "test_32x32.mat"):
        (tmp_path / "SVHN" / name).write_bytes(b"MATLAB 5.0 MAT-file, but cut short")
    with pytest.raises(DataError, match="train_32x32.mat: not an SVHN .mat file"):
        datasets.load_dataset("svhn", data_dir=tmp_path)
    (tmp_path / "cifar-10-batches-bin").mkdir()
    for name in [f"data_batch_{i}.bin" for i in range(1, 6)] + ["test_batch.bin"]:
        (tmp_path / "cifar-10-batches-bin" / name).write_bytes(b"\x01" * 3000)
    (tmp_path / "cifar-10-batches-bin" / "batches.meta.txt").write_text("a\n")
    with pytest.raises(DataError, match="not a whole number of 3,073-byte CIFAR records"):
        datasets.load_dataset("cifar10", data_dir=tmp_path)
