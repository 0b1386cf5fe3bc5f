"""dk.data.load_mnist_arrays: the one resolver of full-size MNIST / Fashion-MNIST (never a download)."""
from __future__ import annotations

import os
from pathlib import Path

import numpy as np
import pytest

from deepkern import data
from deepkern.data import full as datasets_full
from deepkern.keras import datasets

from .conftest import write_idx


def write_idx_set(folder: Path, n_train: int = 3, n_test: int = 2, offset: int = 0) -> tuple:
    folder.mkdir(parents=True, exist_ok=True)
    x_train = (np.arange(n_train * 28 * 28) + offset).astype(np.uint8).reshape(n_train, 28, 28)
    x_test = (np.arange(n_test * 28 * 28) + offset + 1).astype(np.uint8).reshape(n_test, 28, 28)
    y_train = (np.arange(n_train) % 10).astype(np.uint8)
    y_test = ((np.arange(n_test) + 1) % 10).astype(np.uint8)
    for stem, array in (("train-images-idx3-ubyte", x_train), ("train-labels-idx1-ubyte", y_train),
                        ("t10k-images-idx3-ubyte", x_test), ("t10k-labels-idx1-ubyte", y_test)):
        write_idx(folder / stem, array)
    return (x_train, y_train), (x_test, y_test)


@pytest.fixture
def no_user_data(tmp_path, monkeypatch):
    """No environment folders, an empty Keras cache and no Debian package."""
    monkeypatch.delenv(data.MNIST_DIR_ENV, raising=False)
    monkeypatch.delenv(datasets_full.FASHION_DIR_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "keras"))
    monkeypatch.setattr(datasets_full, "DEBIAN_FASHION_DIR", str(tmp_path / "no-debian"))
    return tmp_path


def assert_same(got: tuple, expected: tuple) -> None:
    for g, e in zip(got[0] + got[1], expected[0] + expected[1]):
        np.testing.assert_array_equal(g, e)
        assert g.dtype == np.uint8


def test_sample_with_a_notice_that_says_how_to_get_the_full_set(no_user_data, monkeypatch, capsys):
    monkeypatch.setattr(datasets_full, "_notices_shown", set())
    (x_train, y_train), (x_test, y_test) = data.load_mnist_arrays()
    assert x_train.shape == (4000, 28, 28) and x_test.shape == (1000, 28, 28) and y_train.dtype == np.uint8
    err = capsys.readouterr().err
    assert "(4000, 28, 28)" in err and data.MNIST_DIR_ENV in err and "mnist.npz" in err
    data.load_mnist_arrays()
    assert capsys.readouterr().err == ""  # once per process
    assert_same(data.load_mnist_arrays(source="sample"), ((x_train, y_train), (x_test, y_test)))


def test_keras_cache_npz(no_user_data):
    cache = no_user_data / "keras" / "datasets"
    cache.mkdir(parents=True)
    arrays = ((np.full((5, 28, 28), 7, np.uint8), np.arange(5, dtype=np.uint8)),
              (np.full((2, 28, 28), 9, np.uint8), np.arange(2, dtype=np.uint8)))
    np.savez(cache / "mnist.npz", x_train=arrays[0][0], y_train=arrays[0][1], x_test=arrays[1][0], y_test=arrays[1][1])
    assert_same(datasets.mnist.load_data(), arrays)
    assert_same(data.load_mnist_arrays(source=cache / "mnist.npz"), arrays)
    np.savez(no_user_data / "bad.npz", x_train=arrays[0][0])
    with pytest.raises(ValueError, match="bad.npz: not a Keras MNIST"):
        data.load_mnist_arrays(source=no_user_data / "bad.npz")


def test_fashion_from_keras_cache_env_folder_and_torchvision_raw(no_user_data, monkeypatch):
    keras_copy = write_idx_set(no_user_data / "keras" / "datasets" / "fashion-mnist", offset=1)
    assert_same(datasets.fashion_mnist.load_data(), keras_copy)
    env_copy = write_idx_set(no_user_data / "env", offset=2)
    monkeypatch.setenv(datasets_full.FASHION_DIR_ENV, str(no_user_data / "env"))
    assert_same(data.load_mnist_arrays("fashion"), env_copy)          # the variable wins over the cache
    raw_copy = write_idx_set(no_user_data / "root" / "FashionMNIST" / "raw", offset=3)
    assert_same(data.load_mnist_arrays("fashion", search=[no_user_data / "root"]), raw_copy)
    # MNIST files in the same root are not mistaken for Fashion-MNIST and vice versa
    mnist_copy = write_idx_set(no_user_data / "root" / "MNIST" / "raw", offset=4)
    assert_same(data.load_mnist_arrays("mnist", search=[no_user_data / "root"]), mnist_copy)


def test_fashion_missing_says_how_to_get_it(no_user_data):
    with pytest.raises(FileNotFoundError, match="apt-get install dataset-fashion-mnist"):
        datasets.fashion_mnist.load_data()
    with pytest.raises(ValueError, match="only MNIST has an embedded sample"):
        data.load_mnist_arrays("fashion", source="sample")


def test_bad_arguments(no_user_data):
    with pytest.raises(ValueError, match="kind"):
        data.load_mnist_arrays("cifar")
    with pytest.raises(FileNotFoundError, match="no MNIST there"):
        data.load_mnist_arrays(source=no_user_data)


requires_debian_fashion = pytest.mark.skipif(
    not os.path.isdir(datasets_full.DEBIAN_FASHION_DIR) and not os.environ.get("DEEPKERN_REQUIRE_FASHION"),
    reason="the Debian package dataset-fashion-mnist is not installed (.ci/fashion.sh installs it)")


@requires_debian_fashion
def test_full_fashion_mnist_from_the_debian_package(monkeypatch, tmp_path):
    monkeypatch.delenv(datasets_full.FASHION_DIR_ENV, raising=False)
    monkeypatch.setenv("KERAS_HOME", str(tmp_path))
    (x_train, y_train), (x_test, y_test) = datasets.fashion_mnist.load_data()
    assert x_train.shape == (60000, 28, 28) and x_test.shape == (10000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    np.testing.assert_array_equal(np.bincount(y_train), 6000)   # the published class balance
    np.testing.assert_array_equal(np.bincount(y_test), 1000)
    from deepkern.torchvision import datasets as tv_datasets, transforms
    test = tv_datasets.FashionMNIST(str(tmp_path), train=False, transform=transforms.ToTensor())
    assert len(test) == 10000 and test.classes[9] == "Ankle boot"
    np.testing.assert_allclose(test[0][0].numpy()[0], x_test[0] / 255.0, rtol=1e-6)
