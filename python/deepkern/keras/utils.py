"""Keras's ``utils.to_categorical``."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from .. import data

__all__ = ["to_categorical"]


def to_categorical(y: Any, num_classes: Optional[int] = None, dtype: Any = "float32") -> np.ndarray:
    """Class indices -> one-hot rows (``dk.data.one_hot``); Keras's argument names."""
    return data.one_hot(np.asarray(y).reshape(-1), num_classes=num_classes, dtype=dtype)
