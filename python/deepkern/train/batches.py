"""What ``fit``, ``evaluate`` and ``predict`` accept as data, and the batches ``fit`` iterates.

Two kinds of data, one protocol:

* arrays (anything NumPy converts): checked and converted once (float32 inputs, targets as
  the loss needs), then cut into batches by :class:`ArrayBatches` with a fresh permutation
  per epoch, on the training device;
* a **batch source**: an object with ``len()`` (batches per epoch) whose every iteration
  yields ``(x_batch, y_batch)`` pairs, such as ``dk.data.ImageFlow`` or ``dk.data.BatchIterator``.
  :func:`is_batch_source` is the one test of "is this a batch source" (the Keras front end
  uses it too); :class:`SourceBatches` checks and moves each batch it yields.

Either way ``fit`` sees a :class:`BatchSource`: ``len()`` batches per epoch, ``epoch(i)`` the
``(x, y)`` pairs of epoch ``i`` on the device.
"""
from __future__ import annotations

from typing import Any, Callable, Iterator, Optional, Protocol, Tuple, runtime_checkable

import numpy as np

from .._device import to_device
from ..autograd import Tensor

__all__ = ["BatchSource", "is_batch_source", "ArrayBatches", "SourceBatches"]


@runtime_checkable
class BatchSource(Protocol):
    """``len()`` batches per epoch; iterating yields ``(x_batch, y_batch)`` pairs, anew each pass."""

    def __len__(self) -> int: ...

    def __iter__(self) -> Iterator[Tuple[Any, Any]]: ...


def is_batch_source(x: Any) -> bool:
    """True for something that yields batches rather than being an array: not an ndarray,
    Tensor, list or tuple, nothing with a ``shape``, but iterable (or an iterator).

    ``fit`` then also needs ``len()`` (batches per epoch); the Keras front end accepts an
    endless generator with ``steps_per_epoch`` instead.
    """
    if isinstance(x, (np.ndarray, Tensor, list, tuple)) or hasattr(x, "shape"):
        return False
    return hasattr(x, "__iter__") or hasattr(x, "__next__")


def _as_features(x: Any, name: str) -> np.ndarray:
    """Inputs as a float32, C-contiguous array of rank >= 2 (a copy only when needed)."""
    if isinstance(x, Tensor):
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric inputs, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(f"{name}: expected an array of shape (samples, features...) with rank >= 2, "
                         f"got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: has no samples")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    return arr


def _as_targets(y: Any, n: int, loss_kind: str, name: str) -> np.ndarray:
    """Targets checked against the loss: int64 class labels for cross-entropy, float32 otherwise."""
    if isinstance(y, Tensor):
        y = y.numpy()
    arr = np.asarray(y)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric targets, got dtype {arr.dtype}")
    if arr.ndim == 0 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} targets (one per input sample), got shape {arr.shape}")
    if loss_kind == "cross_entropy":
        if arr.ndim != 1:
            raise ValueError(f"{name}: cross_entropy needs integer class labels of shape ({n},), "
                             f"got shape {arr.shape}")
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise TypeError(f"{name}: cross_entropy needs integer class labels, got non-integer floats")
        labels = np.ascontiguousarray(arr, dtype=np.int64)
        if labels.min() < 0:
            raise ValueError(f"{name}: class labels must be >= 0, got {labels.min()}")
        return labels
    if loss_kind == "binary_cross_entropy":
        targets = np.ascontiguousarray(arr, dtype=np.float32)
        targets = targets.reshape(n, 1) if targets.ndim == 1 else targets  # one logit per sample
        if not np.all((targets >= 0) & (targets <= 1)):
            raise ValueError(f"{name}: binary_cross_entropy needs targets in [0, 1]")
        return targets
    if loss_kind == "custom":  # a user's loss gets the targets as given, only made contiguous
        return np.ascontiguousarray(arr, dtype=np.int64 if arr.dtype.kind in "iu" else np.float32)
    targets = np.ascontiguousarray(arr, dtype=np.float32)
    if targets.ndim == 1:
        targets = targets.reshape(n, 1)  # one output unit per sample
    if not np.isfinite(targets).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    return targets



class ArrayBatches:
    """Batches of ``(x, y)`` arrays on ``device``: ``batch_size`` rows each (the last may be
    smaller), in a fresh order per epoch drawn from ``rng`` when ``shuffle`` is set.

    ``shard`` (data-parallel training) maps each epoch's order of all ``n`` samples to this
    rank's part of it (``dk.distributed.shard_indices``)."""

    def __init__(self, x: Any, y: Any, batch_size: int, shuffle: bool, rng: np.random.Generator,
                 device: str = "cpu", shard: Optional[Callable[[np.ndarray], np.ndarray]] = None) -> None:
        self.x, self.y = to_device(x, device), to_device(y, device)
        self.n = len(x)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.rng = rng
        self.device = device
        self.shard = shard
        self.local_n = self.n if shard is None else len(shard(np.arange(self.n)))

    def __len__(self) -> int:
        return -(-self.local_n // self.batch_size)

    def __iter__(self) -> Iterator[Tuple[Any, Any]]:
        order = None
        if self.shuffle:
            # drawn on the host, as before, so a seed gives the same order on every device
            order = self.rng.permutation(self.n)
        if self.shard is not None:
            order = self.shard(np.arange(self.n) if order is None else order)
        if order is not None:
            order = to_device(order, self.device)
        for begin in range(0, self.local_n, self.batch_size):
            if order is None:
                yield self.x[begin:begin + self.batch_size], self.y[begin:begin + self.batch_size]
            else:
                idx = order[begin:begin + self.batch_size]
                yield self.x[idx], self.y[idx]


class SourceBatches:
    """A user's batch source as ``fit`` consumes it: each pair checked like arrays (inputs
    float32, targets for the loss) and moved to ``device``."""

    def __init__(self, source: Any, loss_kind: str, device: str = "cpu") -> None:
        if not hasattr(source, "__len__"):
            raise ValueError("X: a batch source needs len() (batches per epoch); an endless generator "
                             "needs a wrapper that takes a fixed number of batches per epoch")
        if len(source) < 1:
            raise ValueError("X: the batch source yields no batches (len() is 0)")
        self.source = source
        self.loss_kind = loss_kind
        self.device = device
        self.n: Optional[int] = getattr(source, "n", None)
        self.batch_size: Optional[int] = getattr(source, "batch_size", None)

    def __len__(self) -> int:
        return len(self.source)

    def __iter__(self) -> Iterator[Tuple[Any, Any]]:
        for i, batch in enumerate(self.source):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise TypeError(f"X: batch {i} of the source is not an (x, y) pair")
            xb = _as_features(batch[0], f"X batch {i}")
            yb = _as_targets(batch[1], len(xb), self.loss_kind, f"y batch {i}")
            yield to_device(xb, self.device), to_device(yb, self.device)
