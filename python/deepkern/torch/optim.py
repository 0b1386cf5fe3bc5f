"""``deepkern.torch.optim``: the core optimizers (fused update kernels), PyTorch's signatures."""
from __future__ import annotations

from ..optim import SGD, Adam, Optimizer, RMSprop

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop"]
