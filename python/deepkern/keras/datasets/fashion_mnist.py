"""``fashion_mnist.load_data()`` like Keras's: ``((x_train, y_train), (x_test, y_test))``, uint8.

Read from where the user has it (``path``, ``$DEEPKERN_FASHION_MNIST_DIR``, Keras's cache
``~/.keras/datasets/fashion-mnist/``, the Debian package ``dataset-fashion-mnist``); never
downloads. There is no embedded sample: without the files a ``FileNotFoundError`` says how to
get them. See ``dk.data.load_mnist_arrays``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ... import data

__all__ = ["load_data"]


Arrays = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def load_data(path: Optional[data.PathLike] = None) -> Arrays:
    """Fashion-MNIST: images uint8 ``(60000, 28, 28)`` / ``(10000, 28, 28)``, labels uint8 0-9."""
    return data.load_mnist_arrays("fashion", source=path)
