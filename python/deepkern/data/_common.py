"""Types and checks shared by the data modules."""
from __future__ import annotations

import os
from typing import Tuple, Union

import numpy as np

Split = Tuple[np.ndarray, np.ndarray, np.ndarray, np.ndarray]
PathLike = Union[str, "os.PathLike[str]"]


def check_seed(seed: int) -> int:
    if isinstance(seed, (bool, np.bool_)) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise TypeError(f"seed must be a non-negative int, got {seed!r}")
    return int(seed)


