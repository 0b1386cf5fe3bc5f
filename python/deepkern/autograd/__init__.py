"""Reverse-mode automatic differentiation.

* :mod:`.tensor`: ``Tensor`` and the tape (each op records its inputs and a backward closure);
* :mod:`.grad_mode`: ``no_grad`` / ``enable_grad``, a per-thread switch (PyTorch's rule);
* :mod:`.functional`: the differentiable functions over ``deepkern.ops`` (``nn.functional`` re-exports them);
* :mod:`.rng`: the global generator behind ``dk.manual_seed`` (initial weights, dropout masks).
"""
from __future__ import annotations

from .._device import canonical_device as _normalise_device  # noqa: F401  (old private names,
from .._device import move as _move  # noqa: F401                          kept for nn.module and optim)
from .grad_mode import enable_grad, is_grad_enabled, no_grad, set_grad_enabled
from .tensor import Array, Tensor, as_array, from_dlpack, tensor, xp_of

__all__ = ["Tensor", "tensor", "from_dlpack", "no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled",
           "as_array", "xp_of", "Array"]
