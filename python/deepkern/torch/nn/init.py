"""``deepkern.torch.nn.init``: PyTorch's in-place initialisers, drawing from ``torch.manual_seed``'s generator."""
from __future__ import annotations

from typing import Any

from ...nn import init as _init
from .._tensor import storage

__all__ = ["uniform_", "normal_", "constant_", "zeros_", "ones_", "xavier_uniform_", "kaiming_uniform_"]


def uniform_(tensor: Any, a: float = 0.0, b: float = 1.0) -> Any:
    storage(tensor).uniform_(a, b)
    return tensor


def normal_(tensor: Any, mean: float = 0.0, std: float = 1.0) -> Any:
    storage(tensor).normal_(mean, std)
    return tensor


def constant_(tensor: Any, val: float) -> Any:
    storage(tensor).fill_(val)
    return tensor


def zeros_(tensor: Any) -> Any:
    return constant_(tensor, 0.0)


def ones_(tensor: Any) -> Any:
    return constant_(tensor, 1.0)


def xavier_uniform_(tensor: Any) -> Any:
    return _init.xavier_uniform_(tensor)


def kaiming_uniform_(tensor: Any) -> Any:
    """He uniform for ReLU: U(-sqrt(6/fan_in), sqrt(6/fan_in))."""
    return _init.he_uniform_(tensor)
