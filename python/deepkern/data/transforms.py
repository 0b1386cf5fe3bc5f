"""Array transforms: ``normalize``, ``Standardizer``, ``one_hot``."""
from __future__ import annotations

from typing import Any, Optional, Tuple

import numpy as np

__all__ = ["normalize", "Standardizer", "one_hot"]


def normalize(x: np.ndarray, feature_range: Tuple[float, float] = (0.0, 1.0),
              input_range: Tuple[float, float] = (0.0, 255.0)) -> np.ndarray:
    """Map values linearly from ``input_range`` onto ``feature_range``, as float32.

    The defaults take 0-255 pixels to [0, 1]; ``feature_range=(-1, 1)`` gives [-1, 1].
    Values outside ``input_range`` raise ``ValueError`` (it catches normalising twice).
    """
    lo, hi = _check_range(feature_range, "feature_range")
    in_lo, in_hi = _check_range(input_range, "input_range")
    x = np.asarray(x)
    if not (np.issubdtype(x.dtype, np.number) and not np.issubdtype(x.dtype, np.complexfloating)):
        raise TypeError(f"x: expected a real numeric array, got dtype {x.dtype}")
    if x.size:
        x_min, x_max = float(x.min()), float(x.max())
        if x_min < in_lo or x_max > in_hi:
            raise ValueError(f"x: values span [{x_min:g}, {x_max:g}], outside input_range "
                             f"[{in_lo:g}, {in_hi:g}]")
    scale = (hi - lo) / (in_hi - in_lo)
    out = (x.astype(np.float64) - in_lo) * scale + lo  # float64 so 255 lands exactly on hi
    return np.ascontiguousarray(out, dtype=np.float32)


def _check_range(value: Tuple[float, float], name: str) -> Tuple[float, float]:
    try:
        lo, hi = (float(v) for v in value)
    except (TypeError, ValueError):
        raise TypeError(f"{name}: expected a pair of numbers (low, high), got {value!r}") from None
    if not (np.isfinite(lo) and np.isfinite(hi) and lo < hi):
        raise ValueError(f"{name}: expected finite low < high, got ({lo:g}, {hi:g})")
    return lo, hi


class Standardizer:
    """Zero mean, unit variance with statistics fitted on the training split only.

    ``per_feature=False`` (default) uses one mean and standard deviation for all values,
    which suits images; ``per_feature=True`` standardises every feature (position) on its
    own statistics over the samples (axis 0). Features with zero spread are only centred.

        std = Standardizer().fit(x_train)
        x_train, x_test = std.transform(x_train), std.transform(x_test)
    """

    def __init__(self, per_feature: bool = False, eps: float = 1e-7) -> None:
        if not isinstance(per_feature, (bool, np.bool_)):
            raise TypeError(f"per_feature: expected a bool, got {per_feature!r}")
        if not float(eps) > 0:
            raise ValueError(f"eps: expected a positive float, got {eps!r}")
        self.per_feature = bool(per_feature)
        self.eps = float(eps)
        self.mean_: Optional[np.ndarray] = None
        self.std_: Optional[np.ndarray] = None

    def fit(self, x: np.ndarray) -> "Standardizer":
        """Compute the mean and standard deviation of ``x`` (float64 accumulation)."""
        x = np.asarray(x, dtype=np.float64)
        if x.ndim == 0 or len(x) == 0:
            raise ValueError(f"x: expected at least one sample, got shape {x.shape}")
        axis = 0 if self.per_feature else None
        mean, std = x.mean(axis=axis), x.std(axis=axis)
        # a constant feature carries no scale to remove: divide by 1 instead of ~0
        std = np.where(std < self.eps, 1.0, std)
        self.mean_, self.std_ = np.asarray(mean, np.float32), np.asarray(std, np.float32)
        return self

    def _fitted(self) -> Tuple[np.ndarray, np.ndarray]:
        if self.mean_ is None or self.std_ is None:
            raise RuntimeError("Standardizer is not fitted yet; call fit(x_train) first")
        return self.mean_, self.std_

    def _check_shape(self, x: np.ndarray) -> None:
        if self.per_feature and x.shape[1:] != self.mean_.shape:
            raise ValueError(f"x: samples of shape {x.shape[1:]} do not match the fitted "
                             f"features {self.mean_.shape}")

    def transform(self, x: np.ndarray) -> np.ndarray:
        """``(x - mean) / std`` as a new float32 array."""
        mean, std = self._fitted()
        x = np.asarray(x, dtype=np.float32)
        self._check_shape(x)
        return np.ascontiguousarray((x - mean) / std, dtype=np.float32)

    def fit_transform(self, x: np.ndarray) -> np.ndarray:
        """Fit on ``x`` and return it standardised."""
        return self.fit(x).transform(x)

    def inverse_transform(self, x: np.ndarray) -> np.ndarray:
        """Undo :meth:`transform`: ``x * std + mean``."""
        mean, std = self._fitted()
        x = np.asarray(x, dtype=np.float32)
        self._check_shape(x)
        return np.ascontiguousarray(x * std + mean, dtype=np.float32)


def _check_labels(labels: np.ndarray, name: str = "labels") -> np.ndarray:
    labels = np.asarray(labels)
    if labels.ndim != 1:
        raise ValueError(f"{name}: expected a 1-D array of class indices, got shape {labels.shape}")
    if labels.size and not np.issubdtype(labels.dtype, np.integer):
        if not np.issubdtype(labels.dtype, np.floating) or np.any(labels != np.round(labels)):
            raise TypeError(f"{name}: expected integer class indices, got dtype {labels.dtype}")
    return labels.astype(np.int64)


def one_hot(labels: np.ndarray, num_classes: Optional[int] = None,
            dtype: Any = np.float32) -> np.ndarray:
    """Class indices ``(N,)`` -> one-hot rows ``(N, num_classes)`` (default: max label + 1)."""
    labels = _check_labels(labels)
    if labels.size and labels.min() < 0:
        raise ValueError(f"labels: class indices must be >= 0, got {int(labels.min())}")
    needed = int(labels.max()) + 1 if labels.size else 0
    if num_classes is None:
        num_classes = needed
    elif isinstance(num_classes, bool) or not isinstance(num_classes, (int, np.integer)) or num_classes < 1:
        raise ValueError(f"num_classes: expected a positive int, got {num_classes!r}")
    elif needed > num_classes:
        raise ValueError(f"labels: class index {needed - 1} does not fit num_classes={num_classes}")
    out = np.zeros((len(labels), int(num_classes)), dtype=dtype)
    out[np.arange(len(labels)), labels] = 1
    return out


