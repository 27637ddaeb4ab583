"""keras.datasets.<name>.load_data(): Keras' exact arrays from cnnkit's cache, built here in the official formats."""

from __future__ import annotations

import numpy as np
import pytest

import cnnkit as keras
from cnnkit import datasets
from cnnkit.errors import CnnkitError
from official_formats import write_cifar10_binary, write_cifar10_python, write_cifar100_binary, write_mnist


@pytest.fixture(autouse=True)
def no_network(monkeypatch, tmp_path):
    import cnnkit.data.downloads as downloads

    def refuse(url, timeout):  # noqa: ARG001
        raise AssertionError(f"tried to download {url}")

    monkeypatch.setattr(downloads, "_open", refuse)
    monkeypatch.setenv("CNNKIT_DATA", str(tmp_path))  # load_data() without data_dir reads the cache, as in Keras


@pytest.mark.parametrize("module,folder", [("mnist", "MNIST"), ("fashion_mnist", "FashionMNIST")])
def test_mnist_family_is_uint8_as_keras_returns_it(tmp_path, module, folder):
    written = write_mnist(tmp_path, folder)
    (x, y), (xt, yt) = getattr(keras.datasets, module).load_data()
    assert x.dtype == np.uint8 and x.shape == (40, 28, 28) and xt.shape == (20, 28, 28)
    assert y.dtype == np.uint8 and y.shape == (40,) and yt.shape == (20,)
    np.testing.assert_array_equal(x, written["train"][0])
    np.testing.assert_array_equal(yt, written["t10k"][1])


def test_cifar10_labels_are_a_column_of_uint8(tmp_path):
    written = write_cifar10_binary(tmp_path)
    from cnnkit.datasets import cifar10  # `from keras.datasets import cifar10` works too

    (x, y), (xt, yt) = cifar10.load_data()
    assert x.dtype == np.uint8 and x.shape == (20, 32, 32, 3) and xt.shape == (10, 32, 32, 3)
    assert y.dtype == np.uint8 and y.shape == (20, 1) and yt.shape == (10, 1)
    np.testing.assert_array_equal(x, written["train"][0])
    np.testing.assert_array_equal(y[:, 0], written["train"][1])


def test_cifar10_from_python_batches_already_in_the_cache(tmp_path):
    written = write_cifar10_python(tmp_path)
    (x, y), _ = datasets.cifar10.load_data(data_dir=tmp_path)
    np.testing.assert_array_equal(x, written["train"][0])
    assert y.shape == (15, 1)


def test_cifar100_fine_and_coarse_labels(tmp_path):
    written = write_cifar100_binary(tmp_path)
    (x, fine), (_, fine_test) = datasets.cifar100.load_data()
    _, (_, coarse_test) = datasets.cifar100.load_data(label_mode="coarse")
    assert x.shape == (20, 32, 32, 3) and fine.shape == (20, 1) and fine.dtype == np.int64  # Keras': int64
    np.testing.assert_array_equal(fine[:, 0], written["train"][1])
    np.testing.assert_array_equal(coarse_test[:, 0], written["test"][1] // 5)
    assert not np.array_equal(coarse_test, fine_test)
    with pytest.raises(CnnkitError, match="label_mode must be"):
        datasets.cifar100.load_data(label_mode="medium")


def test_cnnkit_names_still_work_beside_keras_modules(tmp_path):
    (x, y), _ = datasets.load_data("digits")  # float32 in [0, 1], as before
    assert x.dtype == np.float32 and x.ndim == 4
    write_mnist(tmp_path)
    (xf, _), _ = datasets.load_data("mnist")
    (xu, _), _ = datasets.mnist.load_data()
    np.testing.assert_array_equal(xf[..., 0], xu / np.float32(255))  # one reader behind both


def test_a_missing_data_set_is_one_line_naming_the_files_and_never_downloads(monkeypatch):
    monkeypatch.setenv("CNNKIT_OFFLINE", "1")
    with pytest.raises(CnnkitError, match="train-images-idx3-ubyte.gz"):
        datasets.mnist.load_data()


def test_keras_text_data_sets_name_what_to_use():
    with pytest.raises(AttributeError, match=r"keras\.datasets\.imdb is not in cnnkit: cnnkit is for images"):
        keras.datasets.imdb  # noqa: B018
