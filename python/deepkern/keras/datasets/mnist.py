"""``mnist.load_data()`` like Keras's: ``((x_train, y_train), (x_test, y_test))``, uint8, 28x28.

The full 60,000 / 10,000 split when the user has it (``path``, ``$DEEPKERN_MNIST_DIR``, Keras's
cache ``~/.keras/datasets/mnist.npz``, ...); otherwise the embedded 5,000-digit sample split
4,000 / 1,000, with a notice on stderr. Never downloads; see ``dk.data.load_mnist_arrays``.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

from ... import data

__all__ = ["load_data"]


Arrays = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]


def load_data(path: Optional[data.PathLike] = None) -> Arrays:
    """MNIST as Keras returns it: images uint8 ``(N, 28, 28)`` in 0-255, labels uint8 ``(N,)``.

    Args:
        path: a Keras ``mnist.npz`` or a folder with the IDX files (plain or ``.gz``); default:
            searched as ``dk.data.load_mnist_arrays`` describes.
    """
    return data.load_mnist_arrays("mnist", source=path)
