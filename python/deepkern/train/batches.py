"""What ``fit``, ``evaluate`` and ``predict`` accept as data: arrays checked and converted once,
or a batch source (an object with ``len()`` that yields ``(x, y)`` pairs every pass)."""
from __future__ import annotations

from typing import Any

import numpy as np

from ..autograd import Tensor


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



def _is_batch_source(X: Any) -> bool:
    """True for an object that yields (x, y) batches and has len(), rather than an array."""
    if isinstance(X, (np.ndarray, Tensor, list, tuple)) or hasattr(X, "shape"):
        return False
    return hasattr(X, "__iter__") and hasattr(X, "__len__")

