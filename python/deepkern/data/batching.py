"""Mini-batches over arrays: ``BatchIterator`` and ``iterate_batches``."""
from __future__ import annotations

from typing import Optional

import numpy as np

from ._common import check_seed as _check_seed

__all__ = ["BatchIterator", "iterate_batches"]



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


