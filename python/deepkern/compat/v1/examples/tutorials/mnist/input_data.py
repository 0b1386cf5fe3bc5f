"""``read_data_sets(train_dir, one_hot=True)`` as in TF1's MNIST tutorial reader; never downloads.

The data come from ``dk.data.load_mnist_arrays`` (``train_dir`` is searched first: IDX files,
``mnist.npz``), so the full 60,000 / 10,000 MNIST when the user has it, else the embedded
5,000-digit sample. As in TF, the first ``validation_size`` training images become the
validation set (5,000 of 60,000; on the 4,000-image sample a twelfth, 333, keeping the ratio).
Images are float32 ``(N, 784)`` in [0, 1] (``reshape=False``: ``(N, 28, 28, 1)``); labels are
float32 one-hot ``(N, 10)`` with ``one_hot=True``, else uint8 class indices.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any, Optional, Tuple

import numpy as np

from ...... import data as _data
from ......nn import init as _init

__all__ = ["read_data_sets", "DataSet", "Datasets"]

Datasets = namedtuple("Datasets", ["train", "validation", "test"])


class DataSet:
    """Images and labels with ``next_batch``: consecutive batches of a shuffled order, reshuffled per epoch."""

    def __init__(self, images: np.ndarray, labels: np.ndarray, seed: Optional[int] = None) -> None:
        if len(images) != len(labels):
            raise ValueError(f"images ({len(images)}) and labels ({len(labels)}) differ in length")
        self._images, self._labels = images, labels
        self._rng = np.random.default_rng(seed) if seed is not None else _init.get_generator()
        self._epochs_completed = 0
        self._index_in_epoch = 0
        self._order = np.arange(len(images))

    images = property(lambda self: self._images)
    labels = property(lambda self: self._labels)
    num_examples = property(lambda self: len(self._images))
    epochs_completed = property(lambda self: self._epochs_completed)

    def _take(self, start: int, stop: int) -> Tuple[np.ndarray, np.ndarray]:
        idx = self._order[start:stop]
        return self._images[idx], self._labels[idx]

    def next_batch(self, batch_size: int, fake_data: bool = False,
                   shuffle: bool = True) -> Tuple[np.ndarray, np.ndarray]:
        """The next ``batch_size`` examples; an epoch's tail is completed from the next epoch's start."""
        if batch_size < 1 or batch_size > self.num_examples:
            raise ValueError(f"batch_size: expected 1..{self.num_examples}, got {batch_size}")
        start = self._index_in_epoch
        if start == 0 and self._epochs_completed == 0 and shuffle:
            self._order = self._rng.permutation(self.num_examples)
        if start + batch_size <= self.num_examples:
            self._index_in_epoch = start + batch_size
            return self._take(start, self._index_in_epoch)
        rest_x, rest_y = self._take(start, self.num_examples)
        self._epochs_completed += 1
        if shuffle:
            self._order = self._rng.permutation(self.num_examples)
        self._index_in_epoch = batch_size - len(rest_x)
        new_x, new_y = self._take(0, self._index_in_epoch)
        return np.concatenate([rest_x, new_x]), np.concatenate([rest_y, new_y])


def _prepare(images: np.ndarray, labels: np.ndarray, one_hot: bool, reshape: bool,
             dtype: Any) -> Tuple[np.ndarray, np.ndarray]:
    x = images.astype(np.float32) * np.float32(1.0 / 255.0) if np.dtype(dtype) == np.float32 else images
    x = x.reshape(len(x), -1) if reshape else x[..., None]
    y = _data.one_hot(labels.astype(np.int64), 10).astype(np.float32) if one_hot else labels
    return np.ascontiguousarray(x), np.ascontiguousarray(y)


def read_data_sets(train_dir: Any = None, fake_data: bool = False, one_hot: bool = False, dtype: Any = np.float32,
                   reshape: bool = True, validation_size: int = 5000, seed: Optional[int] = None,
                   source_url: Any = None) -> Datasets:
    """MNIST as ``Datasets(train, validation, test)`` of :class:`DataSet`; nothing is downloaded."""
    search = [train_dir] if train_dir else []
    (x_train, y_train), (x_test, y_test) = _data.load_mnist_arrays("mnist", search=search)
    if len(x_train) < 60000:
        validation_size = min(validation_size, len(x_train) // 12)  # the full set's 5,000 / 60,000 ratio
    if not 0 <= validation_size < len(x_train):
        raise ValueError(f"validation_size: expected 0..{len(x_train) - 1}, got {validation_size}")
    x_train, y_train = _prepare(x_train, y_train, one_hot, reshape, dtype)
    x_test, y_test = _prepare(x_test, y_test, one_hot, reshape, dtype)
    cut = validation_size
    return Datasets(train=DataSet(x_train[cut:], y_train[cut:], seed),
                    validation=DataSet(x_train[:cut], y_train[:cut], seed),
                    test=DataSet(x_test, y_test, seed))
