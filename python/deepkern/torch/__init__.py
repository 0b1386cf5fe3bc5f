"""``deepkern.torch``: a PyTorch-style front end over deepkern's core (one autograd, the same kernels).

A PyTorch tutorial runs after swapping its imports::

    import deepkern.torch as torch
    import deepkern.torch.nn as nn
    import deepkern.torch.optim as optim
    from deepkern.torch.utils.data import DataLoader
    from deepkern.torchvision import datasets, transforms

``torch.Tensor`` is the core ``dk.Tensor`` with PyTorch's methods (``size()``, ``view``,
``max(dim)``, comparisons, in-place ``uniform_``/``fill_``...); ``.data`` is a NumPy view of the
same storage with the in-place initialisers (see ``deepkern.torch._tensor``). CPU only here:
``device("cuda")`` and ``.to("cuda")`` need CuPy and a GPU, as in the core.
"""
from __future__ import annotations

from collections import OrderedDict
from typing import Any, Mapping, Optional, Sequence

import numpy as np

from .. import autograd as _ag
from ..autograd.tensor import _positive_axes
from ..autograd import enable_grad, is_grad_enabled, no_grad
from ..nn import init as _init
from ._tensor import Parameter, Size, Tensor, TensorData, wrap
from . import nn, optim, utils
from .nn import functional as _F

__all__ = ["Tensor", "Parameter", "Size", "TensorData", "tensor", "as_tensor", "from_numpy", "zeros", "ones",
           "zeros_like", "ones_like", "full", "randn", "rand", "arange", "cat", "stack", "relu", "sigmoid",
           "tanh", "softmax", "log_softmax", "max", "min", "argmax", "sum", "mean", "exp", "log", "matmul",
           "mm", "flatten", "manual_seed", "save", "load", "no_grad", "enable_grad", "is_grad_enabled",
           "device", "cuda",
           "float32", "float", "float64", "double", "int64", "long", "int32", "int", "uint8", "bool",
           "nn", "optim", "utils"]

# dtypes compare equal to NumPy's: t.dtype == torch.float32
float32 = float = np.dtype(np.float32)
float64 = double = np.dtype(np.float64)
int64 = long = np.dtype(np.int64)
int32 = int = np.dtype(np.int32)
uint8 = np.dtype(np.uint8)
bool = np.dtype(np.bool_)


def _array(data: Any, dtype: Any) -> np.ndarray:
    if isinstance(data, _ag.Tensor):
        data = data.numpy()
    arr = np.asarray(data)
    if dtype is not None:
        return np.ascontiguousarray(arr, dtype=dtype)
    if arr.dtype.kind == "f":
        return np.ascontiguousarray(arr, dtype=np.float32)   # PyTorch's default float dtype
    if arr.dtype.kind in "iu":
        return np.ascontiguousarray(arr, dtype=np.int64)     # ... and integer dtype
    return np.ascontiguousarray(arr)


def tensor(data: Any, dtype: Any = None, requires_grad: Any = False, device: Any = None) -> Tensor:
    """A new tensor holding a copy of ``data`` (floats become float32, integers int64)."""
    t = Tensor._wrap(np.array(_array(data, dtype), copy=True))
    return t.requires_grad_(True) if requires_grad else t


def as_tensor(data: Any, dtype: Any = None, device: Any = None) -> Tensor:
    """Like :func:`tensor` but shares memory with a NumPy array that already fits."""
    if isinstance(data, Tensor) and dtype is None:
        return data
    return Tensor._wrap(_array(data, dtype))


def from_numpy(array: np.ndarray) -> Tensor:
    """A tensor sharing ``array``'s memory (made C-contiguous when it is not)."""
    return Tensor._wrap(np.ascontiguousarray(array))


def _shape(size: Sequence[Any]) -> tuple:
    return tuple(size[0]) if len(size) == 1 and isinstance(size[0], (tuple, list)) else tuple(size)


def zeros(*size: Any, dtype: Any = None, requires_grad: Any = False) -> Tensor:
    return tensor(np.zeros(_shape(size), dtype or np.float32), requires_grad=requires_grad)


def ones(*size: Any, dtype: Any = None, requires_grad: Any = False) -> Tensor:
    return tensor(np.ones(_shape(size), dtype or np.float32), requires_grad=requires_grad)


def full(size: Sequence[Any], fill_value: Any, dtype: Any = None) -> Tensor:
    return tensor(np.full(tuple(size), fill_value, dtype or np.float32))


def zeros_like(t: Any) -> Tensor:
    return tensor(np.zeros(np.shape(t.data if isinstance(t, _ag.Tensor) else t), np.float32))


def ones_like(t: Any) -> Tensor:
    return tensor(np.ones(np.shape(t.data if isinstance(t, _ag.Tensor) else t), np.float32))


def randn(*size: Any, requires_grad: Any = False) -> Tensor:
    """Standard normal samples from the generator :func:`manual_seed` seeds."""
    return tensor(_init.get_generator().standard_normal(_shape(size)), requires_grad=requires_grad)


def rand(*size: Any, requires_grad: Any = False) -> Tensor:
    return tensor(_init.get_generator().random(_shape(size)), requires_grad=requires_grad)


def arange(start: Any, end: Any = None, step: Any = 1, dtype: Any = None) -> Tensor:
    values = np.arange(start, end, step) if end is not None else np.arange(start)
    return tensor(values, dtype=dtype)


def manual_seed(seed: Any) -> np.random.Generator:
    """Seed deepkern's global generator (weights, dropout, ``randn``, DataLoader shuffling)."""
    return _init.manual_seed(seed)


def _t(x: Any) -> Tensor:
    return wrap(x) if isinstance(x, _ag.Tensor) else Tensor(x)


def cat(tensors: Sequence[Any], dim: Any = 0) -> Tensor:
    """Concatenate along ``dim`` (gradients flow back to each input)."""
    parts = [_t(t) for t in tensors]
    axis = _positive_axes(dim, parts[0].ndim)[0]
    out = np.concatenate([np.asarray(p.data) for p in parts], axis=axis)
    bounds = np.cumsum([p.shape[axis] for p in parts])[:-1]

    def backward(g: Any) -> None:
        for p, piece in zip(parts, np.split(g, bounds, axis=axis)):
            if p.requires_grad:
                p._accumulate(piece)
    return wrap(_ag.Tensor._make(out, parts, backward))


def stack(tensors: Sequence[Any], dim: Any = 0) -> Tensor:
    parts = [_t(t) for t in tensors]
    return cat([p.unsqueeze(dim) for p in parts], dim)


def relu(input: Any) -> Tensor:
    return _F.relu(input)


def sigmoid(input: Any) -> Tensor:
    return _F.sigmoid(input)


def tanh(input: Any) -> Tensor:
    return _F.tanh(input)


def softmax(input: Any, dim: Any = -1) -> Tensor:
    return _F.softmax(input, dim)


def log_softmax(input: Any, dim: Any = -1) -> Tensor:
    return _F.log_softmax(input, dim)


def max(input: Any, dim: Optional[Any] = None, keepdim: Any = False) -> Any:
    """Largest element, or ``(values, indices)`` along ``dim``; accepts tensors and arrays (``x.data``)."""
    return _t(input).max(dim, keepdim)


def min(input: Any, dim: Optional[Any] = None, keepdim: Any = False) -> Any:
    return _t(input).min(dim, keepdim)


def argmax(input: Any, dim: Optional[Any] = None, keepdim: Any = False) -> Tensor:
    return _t(input).argmax(dim, keepdim)


def sum(input: Any, dim: Any = None, keepdim: Any = False) -> Tensor:
    return _t(input).sum(dim, keepdim)


def mean(input: Any, dim: Any = None, keepdim: Any = False) -> Tensor:
    return _t(input).mean(dim, keepdim)


def exp(input: Any) -> Tensor:
    return _t(input).exp()


def log(input: Any) -> Tensor:
    return _t(input).log()


def matmul(a: Any, b: Any) -> Tensor:
    return wrap(_t(a) @ b)


mm = matmul


def flatten(input: Any, start_dim: Any = 0, end_dim: Any = -1) -> Tensor:
    return _F.flatten(input, start_dim, end_dim)


def save(obj: Mapping[str, Any], f: Any) -> None:
    """``torch.save(model.state_dict(), path)``: a state dict (name -> tensor or array) as a NumPy
    ``.npz`` archive at exactly ``f`` (a path or a binary file). Only state dicts: no pickle, so
    :func:`load` never runs code from a file."""
    if not isinstance(obj, Mapping) or not all(isinstance(k, str) for k in obj):
        raise TypeError(f"save: expected a state dict (str -> tensor/array), got {type(obj).__name__}; "
                        f"save model.state_dict()")
    arrays = {k: np.asarray(v.numpy() if isinstance(v, _ag.Tensor) else v) for k, v in obj.items()}
    if hasattr(f, "write"):
        np.savez(f, **arrays)
        return
    with open(f, "wb") as handle:
        np.savez(handle, **arrays)


def load(f: Any, map_location: Any = None, weights_only: Any = True) -> "OrderedDict[str, np.ndarray]":
    """The state dict :func:`save` wrote, in its order (for ``model.load_state_dict``)."""
    with np.load(f, allow_pickle=False) as archive:
        return OrderedDict((k, archive[k]) for k in archive.files)


class device(str):
    """``torch.device("cpu")``: a device name the core's ``.to()`` accepts."""

    @property
    def type(self) -> str:
        return self.split(":")[0]


class cuda:
    """``torch.cuda.is_available()``: whether the core can run on a CUDA GPU here."""

    @staticmethod
    def is_available() -> Any:
        from .. import backends
        return any(backends.available(name) for name in ("cuda", "cupy"))
