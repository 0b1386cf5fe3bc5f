"""``deepkern.torch.nn``: PyTorch's layer names over the core ``dk.nn`` layers.

Each class here is the core layer with PyTorch's argument names (``dim``, ``start_dim``) whose
parameters are :class:`deepkern.torch.Parameter` and whose outputs are
:class:`deepkern.torch.Tensor`; the computation is the core's. Subclass :class:`Module` as in
PyTorch (``super().__init__()``, assign layers, define ``forward``).
"""
from __future__ import annotations

from typing import Any

from ... import nn as _nn
from .._tensor import Parameter, wrap
from ...nn.module import Parameter as _CoreParameter
from . import functional, init

__all__ = ["Module", "Parameter", "Sequential", "Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU",
           "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Flatten", "Dropout", "BatchNorm1d", "BatchNorm2d",
           "CrossEntropyLoss", "NLLLoss", "MSELoss", "BCEWithLogitsLoss", "functional", "init"]


class Module(_nn.Module):
    """PyTorch's ``nn.Module`` over the core one: parameters become ``torch.Parameter``."""

    def __setattr__(self, name: str, value: Any) -> None:
        if type(value) is _CoreParameter:
            value.__class__ = Parameter  # same object and storage, PyTorch's methods
        super().__setattr__(name, value)

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return wrap(super().__call__(*args, **kwargs))

    def zero_grad(self, set_to_none: bool = True) -> None:
        for p in self.parameters():
            p.grad = None


class Linear(Module, _nn.Linear):
    """``y = x @ weight.T + bias``; weight ``(out_features, in_features)``."""


class Conv2d(Module, _nn.Conv2d):
    """2-D convolution, NCHW, weight ``(out_channels, in_channels, kh, kw)``."""


class MaxPool2d(Module, _nn.MaxPool2d):
    pass


class AvgPool2d(Module, _nn.AvgPool2d):
    pass


class ReLU(Module, _nn.ReLU):
    def __init__(self, inplace: bool = False) -> None:
        super().__init__()


class Sigmoid(Module, _nn.Sigmoid):
    pass


class Tanh(Module, _nn.Tanh):
    pass


class Softmax(Module, _nn.Softmax):
    def __init__(self, dim: int = -1) -> None:
        super().__init__(axis=dim)


class LogSoftmax(Module, _nn.LogSoftmax):
    def __init__(self, dim: int = -1) -> None:
        super().__init__(axis=dim)


class Flatten(Module, _nn.Flatten):
    def __init__(self, start_dim: int = 1, end_dim: int = -1) -> None:
        if end_dim != -1:
            raise ValueError("Flatten: only end_dim=-1 is supported")
        super().__init__(start_axis=start_dim)


class Dropout(Module, _nn.Dropout):
    def __init__(self, p: float = 0.5, inplace: bool = False) -> None:
        super().__init__(p=p)


class BatchNorm1d(Module, _nn.BatchNorm1d):
    """Batch normalisation of ``(N, C)`` or ``(N, C, L)``; running statistics are buffers."""


class BatchNorm2d(Module, _nn.BatchNorm2d):
    """Batch normalisation of ``(N, C, H, W)`` per channel; running statistics are buffers."""


class Sequential(Module, _nn.Sequential):
    pass


class CrossEntropyLoss(Module, _nn.CrossEntropyLoss):
    """Mean cross entropy of logits ``(N, C)`` against class indices ``(N,)``."""


class NLLLoss(Module):
    """Mean negative log-likelihood of log-probabilities ``(N, C)`` against class indices."""

    def forward(self, log_probs: Any, target: Any) -> Any:
        return functional.nll_loss(log_probs, target)


class MSELoss(Module, _nn.MSELoss):
    pass


class BCEWithLogitsLoss(Module, _nn.BCEWithLogitsLoss):
    pass

