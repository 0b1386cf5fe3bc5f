"""Layers: Linear, Conv2d, pooling, activations, Flatten, Dropout, BatchNorm1d/2d and Sequential.

Weights are drawn from the global generator (``dk.manual_seed``) or an explicit ``rng``;
``init="he"`` (default, for ReLU nets) or ``"xavier"`` (sigmoid/tanh) picks the scheme,
biases start at zero (see ``deepkern.nn.init``).
"""
from __future__ import annotations

from typing import Any, Iterator, List, Optional, Tuple, Union

import numpy as np

from .._validate import pair, window_shape
from ..autograd import Tensor
from . import functional as F
from .init import initialize_, zeros_
from .module import Module, Parameter

__all__ = ["Linear", "Conv2d", "MaxPool2d", "AvgPool2d", "ReLU", "Sigmoid", "Tanh", "Softmax",
           "LogSoftmax", "Flatten", "Dropout", "BatchNorm1d", "BatchNorm2d", "Sequential"]

IntPair = Union[int, Tuple[int, int]]


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, bool) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return int(value)


class Linear(Module):
    """``y = x @ weight.T + bias``, weight (out_features, in_features).

    ``activation="relu"`` fuses a ReLU into the same kernel call. ``init`` is "he" or "xavier".
    """

    def __init__(self, in_features: int, out_features: int, bias: bool = True,
                 activation: Optional[str] = None, init: str = "he",
                 rng: Optional[np.random.Generator] = None) -> None:
        super().__init__()
        self.in_features = _positive_int(in_features, "in_features")
        self.out_features = _positive_int(out_features, "out_features")
        if activation not in (None, "relu"):
            raise ValueError(f"activation: expected None or 'relu', got {activation!r}")
        self.activation = activation
        self.weight = Parameter(np.empty((self.out_features, self.in_features), dtype=np.float32))
        initialize_(self.weight, init, rng)
        self.bias = zeros_(Parameter(np.empty(self.out_features, dtype=np.float32))) if bias else None

    def forward(self, x: Tensor, activation: Optional[str] = None) -> Tensor:
        return F.linear(x, self.weight, self.bias, activation or self.activation)

    def extra_repr(self) -> str:
        act = f", activation={self.activation!r}" if self.activation else ""
        return f"in_features={self.in_features}, out_features={self.out_features}, bias={self.bias is not None}{act}"


class Conv2d(Module):
    """2-D convolution, weight (out_channels, in_channels, kh, kw); input NCHW."""

    def __init__(self, in_channels: int, out_channels: int, kernel_size: IntPair, stride: IntPair = 1,
                 padding: IntPair = 0, bias: bool = True, init: str = "he",
                 rng: Optional[np.random.Generator] = None) -> None:
        super().__init__()
        self.in_channels = _positive_int(in_channels, "in_channels")
        self.out_channels = _positive_int(out_channels, "out_channels")
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)
        self.weight = Parameter(np.empty((self.out_channels, self.in_channels) + self.kernel_size,
                                         dtype=np.float32))
        initialize_(self.weight, init, rng)
        self.bias = zeros_(Parameter(np.empty(self.out_channels, dtype=np.float32))) if bias else None

    def forward(self, x: Tensor) -> Tensor:
        return F.conv2d(x, self.weight, self.bias, self.stride, self.padding)

    def forward_relu(self, x: Tensor, pool: bool = False) -> Tensor:
        """``relu(self(x))``, then with ``pool=True`` a 2x2 / stride-2 max-pool, as one fused kernel
        (``F.conv2d_relu``): what ``Sequential`` runs for Conv2d, ReLU[, MaxPool2d(2)]."""
        return F.conv2d_relu(x, self.weight, self.bias, self.stride, self.padding, pool)

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        """(OH, OW) for an input of (height, width); either may be < 1 for a too-small input."""
        return window_shape(height, width, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return (f"{self.in_channels}, {self.out_channels}, kernel_size={self.kernel_size}, "
                f"stride={self.stride}, padding={self.padding}, bias={self.bias is not None}")


class _Pool2d(Module):
    def __init__(self, kernel_size: IntPair, stride: Optional[IntPair] = None, padding: IntPair = 0) -> None:
        super().__init__()
        self.kernel_size = pair(kernel_size, "kernel_size", 1)
        self.stride = self.kernel_size if stride is None else pair(stride, "stride", 1)
        self.padding = pair(padding, "padding", 0)

    def output_size(self, height: int, width: int) -> Tuple[int, int]:
        return window_shape(height, width, self.kernel_size, self.stride, self.padding)

    def extra_repr(self) -> str:
        return f"kernel_size={self.kernel_size}, stride={self.stride}, padding={self.padding}"


class MaxPool2d(_Pool2d):
    """Max over kernel_size windows (stride defaults to kernel_size)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.max_pool2d(x, self.kernel_size, self.stride, self.padding)

    def is_2x2(self) -> bool:
        """2x2 windows, stride 2, no padding: the pool the fused conv layer (``F.conv2d_relu``) does."""
        return self.kernel_size == (2, 2) and self.stride == (2, 2) and self.padding == (0, 0)


class AvgPool2d(_Pool2d):
    """Mean over kernel_size windows (stride defaults to kernel_size)."""

    def forward(self, x: Tensor) -> Tensor:
        return F.avg_pool2d(x, self.kernel_size, self.stride, self.padding)


class ReLU(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.relu(x)


class Sigmoid(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.sigmoid(x)


class Tanh(Module):
    def forward(self, x: Tensor) -> Tensor:
        return F.tanh(x)


class Softmax(Module):
    """Softmax along ``axis`` (for probabilities; train on logits with CrossEntropyLoss)."""

    def __init__(self, axis: int = -1) -> None:
        super().__init__()
        self.axis = axis

    def forward(self, x: Tensor) -> Tensor:
        return F.softmax(x, self.axis)

    def extra_repr(self) -> str:
        return f"axis={self.axis}"


class LogSoftmax(Softmax):
    def forward(self, x: Tensor) -> Tensor:
        return F.log_softmax(x, self.axis)


class Flatten(Module):
    """(N, d1, d2, ...) -> (N, d1*d2*...) (from ``start_axis``, 1 by default)."""

    def __init__(self, start_axis: int = 1) -> None:
        super().__init__()
        self.start_axis = start_axis

    def forward(self, x: Tensor) -> Tensor:
        return F.flatten(x, self.start_axis)


class Dropout(Module):
    """Inverted dropout with drop probability ``p`` while training; the identity in eval mode."""

    def __init__(self, p: float = 0.5, rng: Optional[np.random.Generator] = None) -> None:
        super().__init__()
        if isinstance(p, bool) or not isinstance(p, (int, float)) or not 0.0 <= p <= 1.0:
            raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
        self.p = float(p)
        self.rng = rng

    def forward(self, x: Tensor) -> Tensor:
        return F.dropout(x, self.p, self.training, self.rng)

    def extra_repr(self) -> str:
        return f"p={self.p}"


class _BatchNorm(Module):
    """Shared by BatchNorm1d/2d: PyTorch's semantics and defaults.

    Training normalises with the batch's statistics and moves the running ones (buffers
    ``running_mean``, ``running_var``, ``num_batches_tracked``) by ``momentum`` (None: a
    cumulative average), with the unbiased batch variance; ``eval()`` normalises with the
    running statistics. ``affine`` adds the learnable ``weight`` (ones) and ``bias`` (zeros).
    """

    _dims: Tuple[int, ...] = ()

    def __init__(self, num_features: int, eps: float = 1e-5, momentum: Optional[float] = 0.1,
                 affine: bool = True, track_running_stats: bool = True) -> None:
        super().__init__()
        self.num_features = _positive_int(num_features, "num_features")
        if isinstance(eps, bool) or not isinstance(eps, (int, float)) or not eps > 0:
            raise ValueError(f"eps: expected a number > 0, got {eps!r}")
        if momentum is not None and (isinstance(momentum, bool) or not isinstance(momentum, (int, float))
                                     or not 0.0 <= momentum <= 1.0):
            raise ValueError(f"momentum: expected a number in [0, 1] or None, got {momentum!r}")
        self.eps, self.momentum = float(eps), momentum
        self.affine, self.track_running_stats = bool(affine), bool(track_running_stats)
        c = self.num_features
        self.weight = Parameter(np.ones(c, dtype=np.float32)) if affine else None
        self.bias = Parameter(np.zeros(c, dtype=np.float32)) if affine else None
        if track_running_stats:
            self.register_buffer("running_mean", np.zeros(c, dtype=np.float32))
            self.register_buffer("running_var", np.ones(c, dtype=np.float32))
            self.register_buffer("num_batches_tracked", np.zeros((), dtype=np.int64))
        else:
            for name in ("running_mean", "running_var", "num_batches_tracked"):
                self.register_buffer(name, None)

    def reset_running_stats(self) -> None:
        if self.track_running_stats:
            self.running_mean.data[...] = 0
            self.running_var.data[...] = 1
            self.num_batches_tracked.data[...] = 0

    def forward(self, x: Tensor) -> Tensor:
        if x.ndim not in self._dims:
            want = " or ".join(f"{d}D" for d in self._dims)
            raise ValueError(f"{type(self).__name__}: expected {want} input, got shape {x.shape} ({x.ndim}D)")
        if x.shape[1] != self.num_features:
            raise ValueError(f"{type(self).__name__}: expected {self.num_features} channels in axis 1, "
                             f"got shape {x.shape}")
        momentum = 0.0 if self.momentum is None else self.momentum
        if self.training and self.track_running_stats:
            self.num_batches_tracked.data += 1
            if self.momentum is None:  # cumulative moving average
                momentum = 1.0 / float(self.num_batches_tracked.data)
        return F.batch_norm(x, self.running_mean, self.running_var, self.weight, self.bias,
                            self.training or not self.track_running_stats, momentum, self.eps)

    def extra_repr(self) -> str:
        return (f"{self.num_features}, eps={self.eps}, momentum={self.momentum}, affine={self.affine}, "
                f"track_running_stats={self.track_running_stats}")


class BatchNorm1d(_BatchNorm):
    """Batch normalisation of (N, C) or (N, C, L) inputs over N (and L), per feature C."""

    _dims = (2, 3)


class BatchNorm2d(_BatchNorm):
    """Batch normalisation of (N, C, H, W) images over N, H and W, per channel C."""

    _dims = (4,)


def _plain(layer: Module, cls: type) -> bool:
    """``layer`` is a ``cls`` (or a subclass) that keeps ``cls.forward``: a rewrite of cls is valid."""
    return isinstance(layer, cls) and type(layer).forward is cls.forward


class Sequential(Module):
    """Modules applied in order; indexable, sliceable and sized like a list.

    These rewrites keep results (and gradients) identical while doing less work (each applies to
    subclasses too, unless they override ``forward``):

    * ``Linear`` then ``ReLU`` runs as one fused matmul+bias+ReLU kernel call;
    * ``Conv2d``, ``ReLU`` and a 2x2 / stride-2 ``MaxPool2d`` run as one fused kernel that pools
      each image's conv output while it is in cache (``F.conv2d_relu``; the un-pooled activation
      is never stored), and ``Conv2d`` then ``ReLU`` alone as a conv with the ReLU in its store;
    * ``ReLU`` then ``MaxPool2d`` runs as pool then ReLU: ReLU is monotonic, so the max of the
      rectified window is the rectified max, and the ReLU touches a kernel_size-times smaller tensor.
    """

    def __init__(self, *modules: Module) -> None:
        super().__init__()
        if len(modules) == 1 and isinstance(modules[0], (list, tuple)):
            modules = tuple(modules[0])
        for module in modules:
            self.append(module)

    def append(self, module: Module) -> "Sequential":
        if not isinstance(module, Module):
            raise TypeError(f"module: expected a Module, got {type(module).__name__}")
        setattr(self, str(len(self._module_names)), module)
        return self

    def _layers(self) -> List[Module]:
        return [self.__dict__[name] for name in self._module_names]

    def __len__(self) -> int:
        return len(self._module_names)

    def __iter__(self) -> Iterator[Module]:
        return iter(self._layers())

    def __getitem__(self, index: Union[int, slice]) -> Any:
        layers = self._layers()
        if isinstance(index, slice):
            return Sequential(*layers[index])
        return layers[index]

    def forward(self, x: Tensor) -> Tensor:
        layers = self._layers()
        i, n = 0, len(layers)
        while i < n:
            layer = layers[i]
            following = layers[i + 1] if i + 1 < n else None
            if _plain(layer, Linear) and layer.activation is None and _plain(following, ReLU):
                x = layer(x, activation="relu")
                i += 2
            elif _plain(layer, Conv2d) and _plain(following, ReLU):
                third = layers[i + 2] if i + 2 < n else None
                pool = _plain(third, MaxPool2d) and third.is_2x2()
                x = layer.forward_relu(x, pool)
                i += 3 if pool else 2
            elif _plain(layer, ReLU) and _plain(following, MaxPool2d):
                x = layer(layers[i + 1](x))
                i += 2
            else:
                x = layer(x)
                i += 1
        return x

