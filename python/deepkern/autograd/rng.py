"""The library's random generator.

One design for randomness: a single global ``numpy.random.Generator`` that
``dk.manual_seed(n)`` resets. Layers draw their initial weights from it when built, and
``dropout`` draws its masks from it while training, so ``dk.manual_seed(0)`` before building
and training a model makes the run reproducible (like ``torch.manual_seed``).
"""
from __future__ import annotations

import numpy as np

__all__ = ["manual_seed", "get_generator"]

_generator: np.random.Generator = np.random.default_rng()


def manual_seed(seed: int) -> np.random.Generator:
    """Reset the global generator used for initial weights and dropout masks; returns it."""
    global _generator
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed: expected an int >= 0, got {seed!r}")
    _generator = np.random.default_rng(int(seed))
    return _generator


def get_generator() -> np.random.Generator:
    """The global generator (see :func:`manual_seed`)."""
    return _generator
