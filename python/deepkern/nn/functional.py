"""Differentiable functions on Tensors; they live beside ``Tensor`` in :mod:`deepkern.autograd.functional`
and are re-exported here under PyTorch's name (``from deepkern.nn import functional as F``)."""
from __future__ import annotations

from ..autograd.functional import *  # noqa: F403
from ..autograd.functional import __all__  # noqa: F401
