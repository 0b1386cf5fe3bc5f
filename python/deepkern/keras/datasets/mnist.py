"""``mnist.load_data()`` like Keras's: ``((x_train, y_train), (x_test, y_test))``, uint8, 28x28.

With a folder of the standard MNIST IDX files (argument ``path`` or ``$DEEPKERN_MNIST_DIR``)
it returns the full 60,000 / 10,000 split, read and validated by ``dk.data.read_mnist_idx``.
Otherwise (no download ever happens) it returns the embedded 5,000 real MNIST digits split
stratified 4,000 / 1,000 (``dk.data.load_mnist5k``, seed 0) and says so once on stderr.
"""
from __future__ import annotations

import sys
from typing import Optional, Tuple

import numpy as np

from ... import data

__all__ = ["load_data"]

_notice_shown = False


def load_data(path: Optional[data.PathLike] = None
              ) -> Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]:
    """MNIST as Keras returns it: images uint8 ``(N, 28, 28)`` in 0-255, labels uint8 ``(N,)``.

    Args:
        path: a folder with ``train-images-idx3-ubyte`` etc. (plain or ``.gz``); default
            ``$DEEPKERN_MNIST_DIR``; neither set: the embedded 5,000-digit sample.
    """
    global _notice_shown
    folder = data.mnist_dir(path)
    if folder is not None:
        x_train, y_train, x_test, y_test = data.read_mnist_idx(folder)
        return (x_train, y_train), (x_test, y_test)
    if not _notice_shown:
        print(f"deepkern.keras.datasets.mnist: no full MNIST folder (set ${data.MNIST_DIR_ENV}); "
              f"using the embedded 5,000-digit sample split 4,000 train / 1,000 test", file=sys.stderr)
        _notice_shown = True
    x_train, y_train, x_test, y_test = data.load_mnist5k(seed=0)

    def as_uint8(images: np.ndarray) -> np.ndarray:
        # the sample stores integer pixels divided by 255, so rounding recovers them exactly
        return np.rint(images.reshape(-1, 28, 28) * 255.0).astype(np.uint8)

    return (as_uint8(x_train), y_train.astype(np.uint8)), (as_uint8(x_test), y_test.astype(np.uint8))
