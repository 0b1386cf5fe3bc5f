"""The PyTorch-style ``Tensor``: the core ``dk.Tensor`` with PyTorch's method spellings.

It is a subclass with no state of its own, so the core autograd records and differentiates it
unchanged (one autograd). What it adds:

* ``size()`` / ``size(dim)``, ``dim()``, ``numel()``, ``max(dim)`` / ``min(dim)`` returning
  ``(values, indices)``, ``argmax(dim)``, ``sum(dim, keepdim)``, ``mean(dim)``, comparisons
  returning bool tensors, ``float()``/``long()``, ``unsqueeze``/``squeeze``, ``clone``;
* in-place ``uniform_``, ``normal_``, ``fill_``, ``zero_``, ``copy_`` and ``+=``/``-=``/``*=``
  (on leaves only outside recording, as in PyTorch);
* ``.data`` and ``.grad`` as :class:`TensorData`: a NumPy array *view of the same storage*
  that also has ``uniform_``/``normal_``/``fill_``/``zero_``/``copy_``, so
  ``model.fc1.weight.data.uniform_(-0.1, 0.1)`` initialises the weight in place. They stay
  NumPy arrays (the core reads ``.data`` as an array everywhere; DESIGN's contract).

Results of core operations are core tensors; :func:`wrap` turns them into this class without
copying (the method wrappers below, ``deepkern.torch.nn`` modules and the free functions do).
``t.size`` without a call still reads as the element count (an ``int`` that can be called), so
core code that counts elements keeps working.
"""
from __future__ import annotations

from collections import namedtuple
from typing import Any, Optional, Tuple, Union

import numpy as np

from .. import autograd as _ag
from ..autograd.tensor import _positive_axes
from ..autograd import Tensor as _CoreTensor
from ..nn import init as _init
from ..nn.module import Parameter as _CoreParameter

__all__ = ["Tensor", "Parameter", "TensorData", "Size", "wrap", "storage", "return_types"]

_DATA_SLOT = _CoreTensor.__dict__["data"]  # the core slot holding the array
return_types = namedtuple("max", ["values", "indices"])


class Size(tuple):
    """``t.size()``: the shape as a tuple (PyTorch's ``torch.Size``)."""

    def numel(self) -> int:
        return int(np.prod(self, dtype=np.int64))


class _Numel(int):
    """``t.size``: the element count (core meaning) that, called, gives PyTorch's ``size()``."""

    def __new__(cls, shape: Tuple[int, ...]) -> "_Numel":
        obj = int.__new__(cls, int(np.prod(shape, dtype=np.int64)))
        obj._shape = Size(shape)
        return obj

    def __call__(self, dim: Optional[int] = None) -> Union[Size, int]:
        if dim is None:
            return self._shape
        return self._shape[_positive_axes(dim, len(self._shape))[0]]


def _rng() -> np.random.Generator:
    return _init.get_generator()


class TensorData(np.ndarray):
    """A NumPy view of a tensor's storage with PyTorch's in-place initialisers.

    Arithmetic on it gives plain ``numpy.ndarray`` results (the view type does not spread).
    """

    def __array_ufunc__(self, ufunc: Any, method: str, *inputs: Any, **kwargs: Any) -> Any:
        inputs = tuple(x.view(np.ndarray) if isinstance(x, TensorData) else x for x in inputs)
        if "out" in kwargs:
            kwargs["out"] = tuple(x.view(np.ndarray) if isinstance(x, TensorData) else x for x in kwargs["out"])
        return getattr(ufunc, method)(*inputs, **kwargs)

    def _set(self, values: Any) -> "TensorData":
        self[...] = values
        return self

    def uniform_(self, a: float = 0.0, b: float = 1.0) -> "TensorData":
        return self._set(_rng().uniform(a, b, size=self.shape))

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> "TensorData":
        return self._set(_rng().normal(mean, std, size=self.shape))

    def fill_(self, value: float) -> "TensorData":
        return self._set(value)

    def zero_(self) -> "TensorData":
        return self._set(0)

    def copy_(self, src: Any) -> "TensorData":
        return self._set(np.asarray(src))

    def numpy(self) -> np.ndarray:
        return self.view(np.ndarray)


def _view(a: Any) -> Any:
    return a.view(TensorData) if isinstance(a, np.ndarray) else a  # GPU arrays stay as they are


def storage(t: Any) -> Any:
    """The array of any tensor (core or this facade) as a :class:`TensorData` view."""
    return _view(_DATA_SLOT.__get__(t))


def _plain(a: Any) -> Any:
    return a.view(np.ndarray) if isinstance(a, TensorData) else a


def wrap(x: Any) -> Any:
    """Core tensors (also inside tuples/lists) as :class:`Tensor`, in place, no copy."""
    if type(x) is _CoreTensor:
        x.__class__ = Tensor
    elif isinstance(x, (tuple, list)):
        for item in x:
            wrap(item)
    return x


def _returning_torch(name: str):
    core = getattr(_CoreTensor, name)

    def method(self, *args: Any, **kwargs: Any) -> Any:
        return wrap(core(self, *args, **kwargs))
    method.__name__ = name
    method.__doc__ = core.__doc__
    return method


def _dim_kwargs(dim: Any, keepdim: bool, kwargs: dict) -> Tuple[Any, bool]:
    # PyTorch spells them dim/keepdim, NumPy and the core axis/keepdims: accept both
    dim = kwargs.pop("axis", dim)
    keepdim = kwargs.pop("keepdims", keepdim)
    if kwargs:
        raise TypeError(f"unexpected keyword arguments {sorted(kwargs)}")
    return dim, bool(keepdim)


class Tensor(_CoreTensor):
    """``dk.Tensor`` with PyTorch's methods (see the module docstring)."""

    __slots__ = ()
    __hash__ = _CoreTensor.__hash__  # identity hash, although == compares elementwise

    data = property(lambda self: _view(_DATA_SLOT.__get__(self)),
                    lambda self, value: _DATA_SLOT.__set__(self, _plain(value)),
                    doc="The storage as a NumPy view (:class:`TensorData`) with in-place initialisers.")

    @property
    def grad(self) -> Any:
        g = self._grad
        return None if g is None else _view(g)

    @grad.setter
    def grad(self, value: Any) -> None:
        _CoreTensor.grad.fset(self, _plain(value.data if isinstance(value, _CoreTensor) else value))

    @property
    def size(self) -> _Numel:  # type: ignore[override]
        return _Numel(_DATA_SLOT.__get__(self).shape)

    def dim(self) -> int:
        return self.ndim

    def numel(self) -> int:
        return int(_DATA_SLOT.__get__(self).size)

    def __bool__(self) -> bool:
        if _DATA_SLOT.__get__(self).size != 1:
            raise RuntimeError(f"the truth value of a tensor of shape {self.shape} is ambiguous")
        return bool(self.item())

    # -- conversions ---------------------------------------------------------------------
    def _astype(self, dtype: Any) -> "Tensor":
        a = _DATA_SLOT.__get__(self)
        dtype = np.dtype(dtype)
        if a.dtype == dtype:
            return self
        if dtype.kind == "f" and self.requires_grad:
            return wrap(self._cast_float(dtype))  # float to float stays differentiable
        return Tensor._wrap(a.astype(dtype))

    def _cast_float(self, dtype: Any) -> _CoreTensor:
        a = _DATA_SLOT.__get__(self)

        def backward(g: Any) -> None:
            self._accumulate(g.astype(a.dtype) if a.dtype.kind == "f" else g)
        return _CoreTensor._make(a.astype(dtype), (self,), backward)

    def float(self) -> "Tensor":
        return self._astype(np.float32)

    def long(self) -> "Tensor":
        return self._astype(np.int64)

    def int(self) -> "Tensor":
        return self._astype(np.int32)

    def bool(self) -> "Tensor":
        return self._astype(np.bool_)

    def type(self, dtype: Any) -> "Tensor":
        return self._astype(dtype)

    def clone(self) -> "Tensor":
        return wrap(self * 1) if self.dtype.kind == "f" else Tensor._wrap(_DATA_SLOT.__get__(self).copy())

    def requires_grad_(self, requires_grad: bool = True) -> "Tensor":
        if requires_grad and self.dtype.kind != "f":
            raise RuntimeError("only floating tensors can require gradients")
        self.requires_grad = bool(requires_grad)
        return self

    # -- reductions with PyTorch's dim ---------------------------------------------------
    def sum(self, dim: Any = None, keepdim: bool = False, **kwargs: Any) -> "Tensor":
        dim, keepdim = _dim_kwargs(dim, keepdim, kwargs)
        return wrap(_CoreTensor.sum(self, axis=dim, keepdims=keepdim))

    def mean(self, dim: Any = None, keepdim: bool = False, **kwargs: Any) -> "Tensor":
        dim, keepdim = _dim_kwargs(dim, keepdim, kwargs)
        return wrap(_CoreTensor.mean(self, axis=dim, keepdims=keepdim))

    def argmax(self, dim: Optional[int] = None, keepdim: bool = False) -> "Tensor":  # type: ignore[override]
        a = _DATA_SLOT.__get__(self)
        return Tensor._wrap(np.asarray(a.argmax(axis=dim, keepdims=keepdim and dim is not None)))

    def argmin(self, dim: Optional[int] = None, keepdim: bool = False) -> "Tensor":
        a = _DATA_SLOT.__get__(self)
        return Tensor._wrap(np.asarray(a.argmin(axis=dim, keepdims=keepdim and dim is not None)))

    def _extreme(self, find: str, dim: Optional[int], keepdim: bool) -> Any:
        a = _DATA_SLOT.__get__(self)
        if dim is None:
            flat = self.reshape(-1)
            return flat[int(getattr(a, find)())]
        axis = _positive_axes(dim, a.ndim)[0]
        idx = np.expand_dims(getattr(a, find)(axis=axis), axis)
        index = list(np.ix_(*[np.arange(n) for n in a.shape]))
        index[axis] = idx
        values = self[tuple(index)]                           # differentiable gather
        indices = Tensor._wrap(idx)
        if not keepdim:
            values = values.squeeze(axis)
            indices = indices.squeeze(axis)
        return return_types(wrap(values), indices)

    def max(self, dim: Optional[int] = None, keepdim: bool = False) -> Any:
        """Largest element (no ``dim``), or ``(values, indices)`` along ``dim``."""
        return self._extreme("argmax", dim, keepdim)

    def min(self, dim: Optional[int] = None, keepdim: bool = False) -> Any:
        return self._extreme("argmin", dim, keepdim)

    # -- shape ---------------------------------------------------------------------------
    def unsqueeze(self, dim: int) -> "Tensor":
        shape = list(self.shape)
        shape.insert(dim if dim >= 0 else len(shape) + dim + 1, 1)
        return self.reshape(shape)

    def squeeze(self, dim: Optional[int] = None) -> "Tensor":
        if dim is None:
            shape = [n for n in self.shape if n != 1]
        else:
            axis = _positive_axes(dim, self.ndim)[0]
            shape = [n for i, n in enumerate(self.shape) if i != axis or n != 1]
        return self.reshape(shape)

    def view_as(self, other: Any) -> "Tensor":
        return self.reshape(other.shape)

    reshape_as = view_as

    def t(self) -> "Tensor":
        return self.transpose()

    def permute(self, *dims: int) -> "Tensor":
        return self.transpose(*dims)

    def softmax(self, dim: int = -1) -> "Tensor":  # type: ignore[override]
        return wrap(_CoreTensor.softmax(self, dim))

    def log_softmax(self, dim: int = -1) -> "Tensor":  # type: ignore[override]
        return wrap(_CoreTensor.log_softmax(self, dim))

    # -- comparisons: bool tensors, never recorded -----------------------------------------
    def _compare(self, other: Any, op: Any) -> "Tensor":
        b = _DATA_SLOT.__get__(other) if isinstance(other, _CoreTensor) else other
        return Tensor._wrap(np.asarray(op(_DATA_SLOT.__get__(self), b)))

    def __eq__(self, other: Any) -> "Tensor":  # type: ignore[override]
        return self._compare(other, np.equal)

    def __ne__(self, other: Any) -> "Tensor":  # type: ignore[override]
        return self._compare(other, np.not_equal)

    def __lt__(self, other: Any) -> "Tensor":
        return self._compare(other, np.less)

    def __le__(self, other: Any) -> "Tensor":
        return self._compare(other, np.less_equal)

    def __gt__(self, other: Any) -> "Tensor":
        return self._compare(other, np.greater)

    def __ge__(self, other: Any) -> "Tensor":
        return self._compare(other, np.greater_equal)

    eq, ne, lt, le, gt, ge = __eq__, __ne__, __lt__, __le__, __gt__, __ge__

    # -- in place ------------------------------------------------------------------------
    def _check_inplace(self, what: str) -> None:
        if self.requires_grad and self.is_leaf and _ag.is_grad_enabled():
            raise RuntimeError(f"{what}: a leaf tensor that requires grad cannot change in place while the "
                               f"graph is recorded; wrap the update in `with torch.no_grad():`")

    def _inplace(self, what: str, values: Any) -> "Tensor":
        self._check_inplace(what)
        a = _DATA_SLOT.__get__(self)
        a[...] = _DATA_SLOT.__get__(values) if isinstance(values, _CoreTensor) else values
        return self

    def uniform_(self, a: float = 0.0, b: float = 1.0) -> "Tensor":
        return self._inplace("uniform_", _rng().uniform(a, b, size=self.shape))

    def normal_(self, mean: float = 0.0, std: float = 1.0) -> "Tensor":
        return self._inplace("normal_", _rng().normal(mean, std, size=self.shape))

    def fill_(self, value: float) -> "Tensor":
        return self._inplace("fill_", value)

    def zero_(self) -> "Tensor":
        return self._inplace("zero_", 0)

    def copy_(self, src: Any) -> "Tensor":
        return self._inplace("copy_", src)

    def __iadd__(self, other: Any) -> "Tensor":
        if self.requires_grad and _ag.is_grad_enabled():
            return self + other
        return self._inplace("+=", _DATA_SLOT.__get__(self) + _DATA_SLOT.__get__(self._operand(other)))

    def __isub__(self, other: Any) -> "Tensor":
        if self.requires_grad and _ag.is_grad_enabled():
            return self - other
        return self._inplace("-=", _DATA_SLOT.__get__(self) - _DATA_SLOT.__get__(self._operand(other)))

    def __imul__(self, other: Any) -> "Tensor":
        if self.requires_grad and _ag.is_grad_enabled():
            return self * other
        return self._inplace("*=", _DATA_SLOT.__get__(self) * _DATA_SLOT.__get__(self._operand(other)))

    def __repr__(self) -> str:
        return "tensor" + _CoreTensor.__repr__(self)[len("Tensor"):]


def _reflected(name: str):
    # ``scalar * t`` calls t.__rmul__; a subclass's reflected method also wins over the core's
    # forward one (``core * t``), so call the forward op directly instead of dispatching again
    forward = getattr(_CoreTensor, name)

    def method(self, other: Any) -> Any:
        return wrap(forward(self._operand(other), self))
    method.__name__ = name.replace("__", "__r", 1)
    return method


for _name in ("__add__", "__sub__", "__mul__", "__truediv__", "__matmul__"):
    setattr(Tensor, _name.replace("__", "__r", 1), _reflected(_name))

# every core method that returns a tensor hands back this class
for _name in ("__add__", "__sub__", "__mul__", "__truediv__",
              "__neg__", "__pow__", "__matmul__", "__getitem__", "exp", "log",
              "sqrt", "abs", "__abs__", "relu", "sigmoid", "tanh", "reshape", "transpose", "detach", "to",
              "cpu", "cuda"):
    setattr(Tensor, _name, _returning_torch(_name))
del _name


class Parameter(Tensor, _CoreParameter):
    """A trainable ``Tensor`` (PyTorch's ``nn.Parameter``); the core optimizers train it."""

    __slots__ = ()

    def __init__(self, data: Any = None, requires_grad: bool = True) -> None:
        data = np.empty(0, np.float32) if data is None else data
        _CoreParameter.__init__(self, _DATA_SLOT.__get__(data) if isinstance(data, _CoreTensor) else data,
                                requires_grad)

    __repr__ = _CoreParameter.__repr__
