"""Weight initialisation (the library's random generator lives in ``autograd.rng``).

One design for randomness: a single global ``numpy.random.Generator`` that
``dk.manual_seed(n)`` resets. Layers draw their initial weights from it when built, and
``Dropout`` draws its masks from it while training, so ``dk.manual_seed(0)`` before building
and training a model makes the run reproducible (like ``torch.manual_seed``). Every function
here also takes an explicit ``rng`` for callers that manage their own generator.

Schemes (fan_in/fan_out from PyTorch's layouts: linear (out, in), conv (out, in, kh, kw)):

* ``he_uniform`` (Kaiming, for ReLU nets, the default of Linear and Conv2d):
  U(-b, b) with b = sqrt(6 / fan_in), keeping the activation variance through ReLU layers;
* ``xavier_uniform`` (Glorot, for sigmoid/tanh): b = sqrt(6 / (fan_in + fan_out));
* biases start at zero.
"""
from __future__ import annotations

import math
from typing import Optional, Tuple

import numpy as np

from ..autograd import Tensor, xp_of
from ..autograd.rng import get_generator, manual_seed

__all__ = ["manual_seed", "get_generator", "calculate_fans", "he_uniform_", "xavier_uniform_",
           "zeros_", "uniform_", "initialize_"]


def calculate_fans(shape: Tuple[int, ...]) -> Tuple[int, int]:
    """(fan_in, fan_out) of a weight: (out, in) or (out, in, *kernel)."""
    if len(shape) < 2:
        raise ValueError(f"shape: fans need a weight of rank >= 2, got {shape}")
    receptive = int(np.prod(shape[2:])) if len(shape) > 2 else 1
    return shape[1] * receptive, shape[0] * receptive


def _fill(t: Tensor, values: np.ndarray) -> Tensor:
    # write into the existing buffer so references to t.data (optimizer state) stay valid
    xp = xp_of(t.data)
    t.data[...] = values if xp is np else xp.asarray(values)
    return t


def uniform_(t: Tensor, low: float, high: float, rng: Optional[np.random.Generator] = None) -> Tensor:
    """Fill ``t`` in place with U(low, high)."""
    rng = rng or get_generator()
    return _fill(t, rng.uniform(low, high, size=t.shape).astype(np.float32))


def he_uniform_(t: Tensor, rng: Optional[np.random.Generator] = None) -> Tensor:
    """Kaiming/He uniform, gain sqrt(2) for ReLU: U(-sqrt(6/fan_in), sqrt(6/fan_in))."""
    fan_in, _ = calculate_fans(t.shape)
    bound = math.sqrt(6.0 / fan_in)
    return uniform_(t, -bound, bound, rng)


def xavier_uniform_(t: Tensor, rng: Optional[np.random.Generator] = None) -> Tensor:
    """Glorot/Xavier uniform: U(-sqrt(6/(fan_in+fan_out)), +...)."""
    fan_in, fan_out = calculate_fans(t.shape)
    bound = math.sqrt(6.0 / (fan_in + fan_out))
    return uniform_(t, -bound, bound, rng)


def zeros_(t: Tensor) -> Tensor:
    t.data[...] = 0
    return t


INITIALIZERS = {"he": he_uniform_, "kaiming": he_uniform_, "xavier": xavier_uniform_, "glorot": xavier_uniform_}


def initialize_(t: Tensor, scheme: str, rng: Optional[np.random.Generator] = None) -> Tensor:
    """Apply the named scheme ("he"/"kaiming" or "xavier"/"glorot") to ``t`` in place."""
    try:
        fn = INITIALIZERS[scheme]
    except (KeyError, TypeError):
        raise ValueError(f"init: expected one of {sorted(INITIALIZERS)}, got {scheme!r}") from None
    return fn(t, rng)
