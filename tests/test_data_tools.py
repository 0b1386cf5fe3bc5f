"""Data tools: IDX reader (incl. broken files), normalisation, standardisation, one-hot,
splits, batching and augmentation."""
from __future__ import annotations

import gzip

import numpy as np
import pytest
from scipy import ndimage

from deepkern import data


# -- IDX files -----------------------------------------------------------------------------

def idx_bytes(array: np.ndarray, type_code: int = 0x08) -> bytes:
    header = bytes([0, 0, type_code, array.ndim])
    header += b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    return header + array.astype(array.dtype.newbyteorder(">")).tobytes()


def write_mnist(folder, rng, n_train=12, n_test=5, compress=(), side=28):
    """Synthetic MNIST files under the standard names; names in ``compress`` get .gz."""
    arrays = {
        "train_images": rng.integers(0, 256, (n_train, side, side), dtype=np.uint8),
        "train_labels": rng.integers(0, 10, n_train, dtype=np.uint8),
        "test_images": rng.integers(0, 256, (n_test, side, side), dtype=np.uint8),
        "test_labels": rng.integers(0, 10, n_test, dtype=np.uint8),
    }
    for key, array in arrays.items():
        name = data.MNIST_IDX_FILES[key]
        payload = idx_bytes(array)
        if key in compress:
            (folder / (name + ".gz")).write_bytes(gzip.compress(payload))
        else:
            (folder / name).write_bytes(payload)
    return arrays


@pytest.mark.parametrize("compress", [(), ("train_images", "test_labels")])
def test_read_mnist_idx_plain_and_gz(tmp_path, rng, compress):
    arrays = write_mnist(tmp_path, rng, compress=compress)
    x_train, y_train, x_test, y_test = data.read_mnist_idx(tmp_path)
    for got, key in zip((x_train, y_train, x_test, y_test),
                        ("train_images", "train_labels", "test_images", "test_labels")):
        assert got.dtype == np.uint8
        np.testing.assert_array_equal(got, arrays[key])


def test_load_mnist_from_env_folder(tmp_path, rng, monkeypatch):
    arrays = write_mnist(tmp_path, rng)
    monkeypatch.setenv(data.MNIST_DIR_ENV, str(tmp_path))
    x_train, y_train, x_test, y_test = data.load_mnist()
    assert x_train.shape == (12, 1, 28, 28) and x_train.dtype == np.float32
    assert y_train.dtype == np.int64 and x_test.shape == (5, 1, 28, 28)
    np.testing.assert_allclose(x_train[:, 0] * 255.0, arrays["train_images"], atol=1e-4)
    flat = data.load_mnist(tmp_path, flatten=True)
    assert flat[0].shape == (12, 784)


def test_read_idx_other_type_codes(tmp_path, rng):
    values = rng.standard_normal((3, 4)).astype(np.float32)
    (tmp_path / "f.idx").write_bytes(idx_bytes(values, 0x0D))
    np.testing.assert_array_equal(data.read_idx(tmp_path / "f.idx"), values)
    ints = rng.integers(-1000, 1000, 7).astype(np.int32)
    (tmp_path / "i.idx").write_bytes(idx_bytes(ints, 0x0C))
    got = data.read_idx(tmp_path / "i.idx")
    assert got.dtype == np.int32 and got.dtype.isnative
    np.testing.assert_array_equal(got, ints)


def _break(folder, key, mutate):
    path = folder / data.MNIST_IDX_FILES[key]
    path.write_bytes(mutate(path.read_bytes()))
    return str(path)


@pytest.mark.parametrize("key, mutate, message", [
    ("train_images", lambda b: b"\x00\x00\x09\x03" + b[4:], "bad magic number"),
    ("train_labels", lambda b: b"\x12\x34" + b[2:], "bad magic number"),
    ("test_images", lambda b: b[:-7], "truncated"),
    ("test_labels", lambda b: b[:6], "truncated IDX header"),
    ("train_images", lambda b: b[:2], "truncated"),
    ("train_labels", lambda b: b + b"\x01\x02", "unexpected bytes"),
])
def test_broken_files_raise_naming_the_file(tmp_path, rng, key, mutate, message):
    write_mnist(tmp_path, rng)
    path = _break(tmp_path, key, mutate)
    with pytest.raises(ValueError, match=message) as info:
        data.read_mnist_idx(tmp_path)
    assert path in str(info.value)


def test_count_mismatch_names_both_files(tmp_path, rng):
    write_mnist(tmp_path, rng)
    labels = rng.integers(0, 10, 11, dtype=np.uint8)  # 12 images, 11 labels
    (tmp_path / data.MNIST_IDX_FILES["train_labels"]).write_bytes(idx_bytes(labels))
    with pytest.raises(ValueError, match="12 images but .* 11 labels") as info:
        data.read_mnist_idx(tmp_path)
    assert data.MNIST_IDX_FILES["train_images"] in str(info.value)
    assert data.MNIST_IDX_FILES["train_labels"] in str(info.value)


def test_wrong_rank_bad_labels_corrupt_gzip_and_missing(tmp_path, rng):
    arrays = write_mnist(tmp_path, rng)
    images = tmp_path / data.MNIST_IDX_FILES["train_images"]
    images.write_bytes(idx_bytes(arrays["train_images"].reshape(12, -1)))
    with pytest.raises(ValueError, match="bad magic number 2050") as info:
        data.read_mnist_idx(tmp_path)
    assert str(images) in str(info.value)
    write_mnist(tmp_path, rng)
    labels = tmp_path / data.MNIST_IDX_FILES["test_labels"]
    labels.write_bytes(idx_bytes(np.array([1, 2, 12, 3, 4], dtype=np.uint8)))
    with pytest.raises(ValueError, match="digits 0-9"):
        data.read_mnist_idx(tmp_path)
    labels.unlink()
    gz = tmp_path / (data.MNIST_IDX_FILES["test_labels"] + ".gz")
    gz.write_bytes(gzip.compress(idx_bytes(arrays["test_labels"]))[:-9])
    with pytest.raises(ValueError, match="gzip") as info:
        data.read_mnist_idx(tmp_path)
    assert str(gz) in str(info.value)
    gz.unlink()
    with pytest.raises(FileNotFoundError, match="t10k-labels-idx1-ubyte"):
        data.read_mnist_idx(tmp_path)
    with pytest.raises(FileNotFoundError, match="does not exist"):
        data.read_mnist_idx(tmp_path / "nowhere")


def test_no_folder_configured(monkeypatch):
    monkeypatch.delenv(data.MNIST_DIR_ENV, raising=False)
    assert data.mnist_dir() is None
    with pytest.raises(FileNotFoundError, match=data.MNIST_DIR_ENV):
        data.read_mnist_idx()


# -- normalisation, standardisation, one-hot --------------------------------------------------

def test_normalize_ranges(rng):
    pixels = rng.integers(0, 256, (6, 5), dtype=np.uint8)
    pixels[0, 0], pixels[0, 1] = 0, 255
    unit = data.normalize(pixels)
    assert unit.dtype == np.float32 and unit.min() == 0.0 and unit.max() == 1.0
    np.testing.assert_allclose(unit, pixels / 255.0, rtol=1e-6)
    sym = data.normalize(pixels, feature_range=(-1, 1))
    assert sym.min() == -1.0 and sym.max() == 1.0
    np.testing.assert_allclose(sym, pixels / 127.5 - 1.0, atol=1e-6)
    np.testing.assert_allclose(data.normalize(unit, (-1, 1), input_range=(0, 1)), sym, atol=1e-6)
    with pytest.raises(ValueError, match="outside input_range"):
        data.normalize(pixels.astype(np.float32) * 2)
    with pytest.raises(ValueError, match="feature_range"):
        data.normalize(pixels, feature_range=(1, 0))
    with pytest.raises(TypeError, match="x"):
        data.normalize(np.array(["a"]))


@pytest.mark.parametrize("per_feature", [False, True])
def test_standardizer_fits_on_training_split_only(rng, per_feature):
    x_train = rng.normal(3.0, 2.0, (50, 7)).astype(np.float32)
    x_train[:, 2] = 4.0  # a constant feature: centred, not blown up
    x_test = rng.normal(3.0, 2.0, (9, 7)).astype(np.float32)
    std = data.Standardizer(per_feature=per_feature).fit(x_train)
    z = std.transform(x_train)
    axis = 0 if per_feature else None
    np.testing.assert_allclose(z.mean(axis=axis), 0.0, atol=1e-5)
    expected_std = np.where(np.arange(7) == 2, 0.0, 1.0) if per_feature else 1.0
    np.testing.assert_allclose(z.std(axis=axis), expected_std, atol=1e-5)
    # the test split uses the training statistics, not its own
    mean = x_train.mean(axis=axis, dtype=np.float64)
    spread = x_train.std(axis=axis, dtype=np.float64)
    spread = np.where(spread < 1e-7, 1.0, spread)
    np.testing.assert_allclose(std.transform(x_test), (x_test - mean) / spread, rtol=1e-5, atol=1e-5)
    np.testing.assert_allclose(std.inverse_transform(std.transform(x_test)), x_test, rtol=1e-5, atol=1e-5)
    assert std.transform(x_test).dtype == np.float32


def test_standardizer_errors():
    with pytest.raises(RuntimeError, match="not fitted"):
        data.Standardizer().transform(np.ones((2, 2)))
    std = data.Standardizer(per_feature=True).fit(np.ones((3, 4)))
    with pytest.raises(ValueError, match="do not match"):
        std.transform(np.ones((3, 5)))
    with pytest.raises(ValueError, match="at least one sample"):
        data.Standardizer().fit(np.ones((0, 3)))


def test_one_hot(rng):
    labels = rng.integers(0, 7, 23)
    labels[0] = 6
    encoded = data.one_hot(labels)
    assert encoded.shape == (23, 7) and encoded.dtype == np.float32
    np.testing.assert_array_equal(encoded.argmax(1), labels)
    np.testing.assert_array_equal(encoded.sum(1), 1.0)
    assert data.one_hot(labels, num_classes=10).shape == (23, 10)
    with pytest.raises(ValueError, match="num_classes=5"):
        data.one_hot(labels, num_classes=5)
    with pytest.raises(ValueError, match=">= 0"):
        data.one_hot(np.array([0, -1]))
    with pytest.raises(TypeError, match="integer"):
        data.one_hot(np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="1-D"):
        data.one_hot(np.zeros((2, 2), dtype=int))


# -- splits and batches -----------------------------------------------------------------------

def test_train_val_test_split_is_stratified_seeded_and_disjoint(rng):
    y = np.repeat(np.arange(5), [40, 60, 80, 100, 120])
    x = np.arange(len(y)) * 10 + rng.integers(0, 10, len(y))  # unique ids
    parts = data.train_val_test_split(x, y, val_fraction=0.15, test_fraction=0.25, seed=4)
    x_tr, y_tr, x_val, y_val, x_te, y_te = parts
    assert len(x_tr) + len(x_val) + len(x_te) == len(x)
    assert len(x_te) == 100 and len(x_val) == 60
    assert len(set(x_tr) | set(x_val) | set(x_te)) == len(x)
    for xs, ys in ((x_tr, y_tr), (x_val, y_val), (x_te, y_te)):
        np.testing.assert_array_equal(y[xs // 10], ys)  # labels follow their samples
        share = np.bincount(ys, minlength=5) / np.bincount(y)
        np.testing.assert_allclose(share, len(ys) / len(y), atol=0.02)
    again = data.train_val_test_split(x, y, val_fraction=0.15, test_fraction=0.25, seed=4)
    for u, v in zip(parts, again):
        np.testing.assert_array_equal(u, v)
    other = data.train_val_test_split(x, y, val_fraction=0.15, test_fraction=0.25, seed=5)
    assert not np.array_equal(parts[0], other[0])
    no_val = data.train_val_test_split(x, y, val_fraction=0.0, test_fraction=0.2)
    assert len(no_val[2]) == 0 and len(no_val[0]) == 320


def test_split_errors():
    x, y = np.zeros((10, 2)), np.arange(10) % 2
    with pytest.raises(ValueError, match="< 1"):
        data.train_val_test_split(x, y, 0.5, 0.5)
    with pytest.raises(ValueError, match="val_fraction"):
        data.train_val_test_split(x, y, 1.5, 0.1)
    with pytest.raises(ValueError, match="same number"):
        data.train_val_test_split(x, y[:9])
    with pytest.raises(TypeError, match="seed"):
        data.train_val_test_split(x, y, seed=-1)


def test_batch_iterator_covers_every_sample_each_pass(rng):
    x = rng.standard_normal((23, 3)).astype(np.float32)
    y = np.arange(23)
    batches = data.BatchIterator(x, y, batch_size=5, seed=7)
    assert len(batches) == 5
    first = list(batches)
    assert [len(yb) for _, yb in first] == [5, 5, 5, 5, 3]
    seen = np.concatenate([yb for _, yb in first])
    assert sorted(seen) == list(range(23)) and not np.array_equal(seen, np.arange(23))
    for xb, yb in first:
        np.testing.assert_array_equal(xb, x[yb])
    second = np.concatenate([yb for _, yb in batches])
    assert not np.array_equal(seen, second)  # a new order every pass
    replay = data.BatchIterator(x, y, batch_size=5, seed=7)
    np.testing.assert_array_equal(np.concatenate([yb for _, yb in replay]), seen)
    ordered = data.iterate_batches(x, batch_size=10, shuffle=False, drop_last=True)
    assert len(ordered) == 2
    np.testing.assert_array_equal(np.concatenate(list(ordered)), x[:20])
    with pytest.raises(ValueError, match="batch_size"):
        data.BatchIterator(x, y, batch_size=0)
    with pytest.raises(ValueError, match="samples"):
        data.BatchIterator(x, y[:4])


# -- augmentation --------------------------------------------------------------------------

def test_apply_transform_matches_scipy_and_numpy(rng):
    image = rng.random((9, 9)).astype(np.float32)
    gen = data.ImageDataGenerator(fill_mode="constant")
    np.testing.assert_allclose(gen.apply_transform(image, {"theta": 90}), np.rot90(image), atol=1e-5)
    np.testing.assert_allclose(gen.apply_transform(image, {"theta": 25}),
                               ndimage.rotate(image, 25, reshape=False, order=1, mode="constant"),
                               atol=1e-5)
    shifted = gen.apply_transform(image, {"tx": 2, "ty": -1})
    np.testing.assert_allclose(shifted[:-2, 1:], image[2:, :-1], atol=1e-6)
    assert np.all(shifted[-2:] == 0) and np.all(shifted[:, 0] == 0)
    np.testing.assert_array_equal(gen.apply_transform(image, {"flip_horizontal": True}), image[:, ::-1])
    np.testing.assert_array_equal(gen.apply_transform(image, {"flip_vertical": True}), image[::-1])
    np.testing.assert_array_equal(gen.apply_transform(image, {}), image)
    # zoom 0.5 samples the central half of the image: a 2x enlargement about the centre
    zoomed = gen.apply_transform(image, {"zx": 0.5, "zy": 0.5})
    np.testing.assert_allclose(zoomed[::2, ::2], image[2:7, 2:7], atol=1e-5)
    # shear keeps the centre row in place and slides the others
    sheared = gen.apply_transform(image, {"shear": 20})
    assert not np.allclose(sheared, image)
    with pytest.raises(ValueError, match="unknown keys"):
        gen.apply_transform(image, {"angle": 3})


def test_channel_layouts_agree(rng):
    batch = rng.random((4, 3, 10, 12)).astype(np.float32)  # NCHW
    options = dict(rotation_range=20, width_shift_range=0.2, height_shift_range=2.0,
                   shear_range=10, zoom_range=0.2, horizontal_flip=True, fill_mode="reflect")
    first = data.ImageDataGenerator(**options).augment(batch, seed=3)
    last = data.ImageDataGenerator(data_format="channels_last", **options).augment(
        batch.transpose(0, 2, 3, 1), seed=3)
    np.testing.assert_allclose(last.transpose(0, 3, 1, 2), first, atol=1e-6)
    # every channel of an image gets the same transform
    gray = data.ImageDataGenerator(**options).augment(np.repeat(batch[:, :1], 3, axis=1), seed=3)
    np.testing.assert_allclose(gray[:, 0], gray[:, 2], atol=1e-6)
    # (N, H, W) batches are single-channel images and keep their shape
    plain = data.ImageDataGenerator(**options).augment(batch[:, 0], seed=3)
    assert plain.shape == (4, 10, 12)


@pytest.mark.parametrize("fill_mode", ["nearest", "constant", "reflect", "wrap"])
def test_augment_is_seeded_and_changes_images(rng, fill_mode):
    x = rng.random((6, 1, 12, 12)).astype(np.float32)
    gen = data.ImageDataGenerator(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1,
                                  shear_range=0.1, zoom_range=0.1, fill_mode=fill_mode, cval=0.5)
    a, b, c = gen.augment(x, seed=1), gen.augment(x, seed=1), gen.augment(x, seed=2)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert a.dtype == np.float32 and a.shape == x.shape
    assert np.all(np.abs(a - x).reshape(6, -1).max(1) > 0)  # every image moved
    assert 0.0 <= a.min() and a.max() <= 1.0 + 1e-6  # bilinear stays in the input's range
    np.testing.assert_array_equal(data.ImageDataGenerator().augment(x, seed=0), x)


def test_flips_and_rescale(rng):
    x = rng.random((40, 1, 5, 6)).astype(np.float32)
    out = data.ImageDataGenerator(horizontal_flip=True, rescale=2.0).augment(x, seed=0)
    flipped = np.array([np.allclose(o, 2 * xi[:, :, ::-1]) for o, xi in zip(out, x)])
    kept = np.array([np.allclose(o, 2 * xi) for o, xi in zip(out, x)])
    assert np.all(flipped ^ kept) and 5 < flipped.sum() < 35


def test_flow_batches_and_seeding(rng):
    x = rng.random((11, 8, 8, 1)).astype(np.float32)
    y = np.arange(11)
    gen = data.ImageDataGenerator(rotation_range=15, data_format="channels_last")
    flow = gen.flow(x, y, batch_size=4, seed=0)
    assert len(flow) == 3 and flow.n == 11
    epoch = list(flow)
    assert [xb.shape for xb, _ in epoch] == [(4, 8, 8, 1), (4, 8, 8, 1), (3, 8, 8, 1)]
    assert sorted(np.concatenate([yb for _, yb in epoch])) == list(range(11))
    replay = list(gen.flow(x, y, batch_size=4, seed=0))
    for (xa, ya), (xb, yb) in zip(epoch, replay):
        np.testing.assert_array_equal(xa, xb)
        np.testing.assert_array_equal(ya, yb)
    # next() goes on past one epoch, like Keras's iterator
    endless = gen.flow(x, batch_size=4, seed=0, shuffle=False)
    shapes = [next(endless).shape[0] for _ in range(7)]
    assert shapes == [4, 4, 3, 4, 4, 3, 4]
    with pytest.raises(ValueError, match="samples"):
        gen.flow(x, y[:3])


def test_generator_argument_errors():
    with pytest.raises(ValueError, match="fill_mode"):
        data.ImageDataGenerator(fill_mode="mirror")
    with pytest.raises(ValueError, match="rotation_range"):
        data.ImageDataGenerator(rotation_range=-1)
    with pytest.raises(ValueError, match="zoom_range"):
        data.ImageDataGenerator(zoom_range=1.5)
    with pytest.raises(ValueError, match="data_format"):
        data.ImageDataGenerator(data_format="NCHW")
    with pytest.raises(ValueError, match="batch of images"):
        data.ImageDataGenerator().augment(np.zeros((3, 4)))


def test_flow_and_batch_iterator_feed_train_fit(rng):
    import deepkern as dk

    x = rng.random((40, 1, 6, 6)).astype(np.float32)
    y = (x.mean(axis=(1, 2, 3)) > 0.5).astype(np.int64)
    dk.manual_seed(0)
    model = dk.nn.Sequential(dk.nn.Flatten(), dk.nn.Linear(36, 2))
    flow = data.ImageDataGenerator(rotation_range=5).flow(x, y, batch_size=16, seed=0)
    history = dk.train.fit(model, flow, None, epochs=2, progress=False, validation_data=(x, y))
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert history.params["samples"] == 40 and history.params["batch_size"] == 16
    history = dk.train.fit(model, data.BatchIterator(x, y, batch_size=8, seed=1), None, epochs=1,
                           progress=False)
    assert len(history.history["loss"]) == 1
    with pytest.raises(ValueError, match="y must be None"):
        dk.train.fit(model, flow, y, epochs=1, progress=False)
    with pytest.raises(ValueError, match="validation_split"):
        dk.train.fit(model, flow, None, epochs=1, validation_split=0.2, progress=False)
    with pytest.raises(TypeError, match="not an \\(x, y\\) pair"):
        dk.train.fit(model, data.BatchIterator(x, batch_size=8), None, epochs=1, progress=False)
