"""Datasets with Keras's loaders: ``datasets.mnist.load_data()``, ``datasets.fashion_mnist.load_data()``."""
from __future__ import annotations

from . import fashion_mnist, mnist

__all__ = ["mnist", "fashion_mnist"]
