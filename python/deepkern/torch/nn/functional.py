"""``deepkern.torch.nn.functional`` (``F``): the core functional ops with PyTorch's names.

Every function runs the core op (compiled kernels, the one autograd) and returns a
:class:`deepkern.torch.Tensor`.
"""
from __future__ import annotations

from typing import Any, Optional

from ...autograd import xp_of
from ...autograd.functional import _labels, _tensor
from ...nn import functional as _F
from .._tensor import Tensor, wrap

__all__ = ["linear", "conv2d", "max_pool2d", "avg_pool2d", "relu", "sigmoid", "tanh", "softmax",
           "log_softmax", "cross_entropy", "nll_loss", "mse_loss", "dropout", "flatten",
           "binary_cross_entropy_with_logits"]


def linear(input: Any, weight: Any, bias: Any = None) -> Tensor:
    return wrap(_F.linear(input, weight, bias))


def conv2d(input: Any, weight: Any, bias: Any = None, stride: Any = 1, padding: Any = 0) -> Tensor:
    return wrap(_F.conv2d(input, weight, bias, stride, padding))


def max_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    return wrap(_F.max_pool2d(input, kernel_size, stride, padding))


def avg_pool2d(input: Any, kernel_size: Any, stride: Any = None, padding: Any = 0) -> Tensor:
    return wrap(_F.avg_pool2d(input, kernel_size, stride, padding))


def relu(input: Any, inplace: bool = False) -> Tensor:
    return wrap(_F.relu(input))


def sigmoid(input: Any) -> Tensor:
    return wrap(_F.sigmoid(input))


def tanh(input: Any) -> Tensor:
    return wrap(_F.tanh(input))


def softmax(input: Any, dim: int = -1) -> Tensor:
    return wrap(_F.softmax(input, dim))


def log_softmax(input: Any, dim: int = -1) -> Tensor:
    return wrap(_F.log_softmax(input, dim))


def _reduce(mean: Any, n: int, reduction: str) -> Tensor:
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    return wrap(mean if reduction == "mean" else mean * float(n))


def cross_entropy(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Cross entropy of logits ``(N, C)`` against class indices ``(N,)`` (one fused kernel), mean or sum."""
    loss = _F.cross_entropy(input, target)
    return _reduce(loss, len(input), reduction)


def nll_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    """Mean (or sum) of ``-input[i, target[i]]`` (``input`` holds log-probabilities)."""
    x = _tensor(input, "input")
    labels = _labels(target, x.data)
    picked = x[xp_of(x.data).arange(len(labels)), labels]
    return _reduce(-picked.mean(), len(labels), reduction)


def mse_loss(input: Any, target: Any, reduction: str = "mean") -> Tensor:
    return wrap(_F.mse_loss(input, target, reduction))


def binary_cross_entropy_with_logits(input: Any, target: Any) -> Tensor:
    return wrap(_F.binary_cross_entropy_with_logits(input, target))


def dropout(input: Any, p: float = 0.5, training: bool = True, inplace: bool = False) -> Tensor:
    return wrap(_F.dropout(input, p, training))


def flatten(input: Any, start_dim: int = 1, end_dim: Optional[int] = -1) -> Tensor:
    if end_dim != -1:
        raise ValueError("flatten: only end_dim=-1 is supported")
    return wrap(_F.flatten(input, start_dim))
