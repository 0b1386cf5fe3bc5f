"""The full MNIST from a folder of IDX files (``read_idx`` validates every header)."""
from __future__ import annotations

import gzip
import os
import zlib
from typing import Optional, Tuple

import numpy as np

from ._common import PathLike, Split
from .transforms import normalize

__all__ = ["MNIST_IDX_FILES", "MNIST_DIR_ENV", "read_idx", "read_mnist_idx", "mnist_dir", "load_mnist"]

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


