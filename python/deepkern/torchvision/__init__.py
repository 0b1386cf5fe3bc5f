"""``deepkern.torchvision``: ``datasets.MNIST``/``FashionMNIST`` and ``transforms`` for ``deepkern.torch``.

Swap ``from torchvision import datasets, transforms`` for
``from deepkern.torchvision import datasets, transforms``. Datasets never download: they read the
user's copy (torchvision's ``root/MNIST/raw``, Keras's cache, an IDX folder; see
``dk.data.load_mnist_arrays``), else MNIST falls back to the embedded 5,000-digit sample.
"""
from __future__ import annotations

from . import datasets, transforms

__all__ = ["datasets", "transforms"]
