"""Data for the seed networks: embedded datasets (never a download; see :mod:`.datasets` for
what each holds and the ``(x_train, y_train, x_test, y_test)`` convention), the user's full
MNIST / Fashion-MNIST, and the tools around them::

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
