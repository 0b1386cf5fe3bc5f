"""TF1 math, reduction, random and comparison ops as graph nodes over core tensor operations."""
from __future__ import annotations

from typing import Any, Optional, Sequence

import numpy as np

from ...autograd import Tensor as _Core
from ...nn import functional as _F
from ...nn import init as _init
from ._graph import Tensor, as_dtype, convert_to_tensor

__all__ = ["matmul", "add", "subtract", "multiply", "divide", "negative", "square", "sqrt", "exp", "log",
           "abs", "pow", "sigmoid", "tanh", "reduce_sum", "reduce_mean", "reduce_max", "argmax", "argmin",
           "equal", "not_equal", "less", "greater", "cast", "reshape", "transpose", "zeros", "ones", "constant",
           "fill", "random_normal", "random_uniform", "truncated_normal", "identity"]


def _node(op: str, inputs: Sequence[Any], fn: Any, name: Optional[str] = None) -> Tensor:
    return Tensor(op, [convert_to_tensor(x) for x in inputs], fn, name=name)


def _plain(a: _Core, values: Any) -> _Core:
    """A non-differentiable result (indices, booleans)."""
    return _Core._wrap(np.ascontiguousarray(values))


def matmul(a: Any, b: Any, transpose_a: bool = False, transpose_b: bool = False, name: Optional[str] = None) -> Tensor:
    """``a @ b`` (2-D float32 runs on the compiled GEMM)."""
    def fn(x: _Core, y: _Core) -> _Core:
        return (x.T if transpose_a else x) @ (y.T if transpose_b else y)
    return _node("MatMul", (a, b), fn, name)


def add(x: Any, y: Any, name: Optional[str] = None) -> Tensor:
    return _node("Add", (x, y), lambda a, b: a + b, name)


def subtract(x: Any, y: Any, name: Optional[str] = None) -> Tensor:
    return _node("Sub", (x, y), lambda a, b: a - b, name)


def multiply(x: Any, y: Any, name: Optional[str] = None) -> Tensor:
    return _node("Mul", (x, y), lambda a, b: a * b, name)


def divide(x: Any, y: Any, name: Optional[str] = None) -> Tensor:
    return _node("Div", (x, y), lambda a, b: a / b, name)


def negative(x: Any, name: Optional[str] = None) -> Tensor:
    return _node("Neg", (x,), lambda a: -a, name)


def square(x: Any, name: Optional[str] = None) -> Tensor:
    return _node("Square", (x,), lambda a: a * a, name)


def sqrt(x: Any, name: Optional[str] = None) -> Tensor:
    return _node("Sqrt", (x,), lambda a: a.sqrt(), name)


def exp(x: Any, name: Optional[str] = None) -> Tensor:
    return _node("Exp", (x,), lambda a: a.exp(), name)


def log(x: Any, name: Optional[str] = None) -> Tensor:
    return _node("Log", (x,), lambda a: a.log(), name)


def abs(x: Any, name: Optional[str] = None) -> Tensor:
    return _node("Abs", (x,), lambda a: a.abs(), name)


def pow(x: Any, y: float, name: Optional[str] = None) -> Tensor:
    return _node("Pow", (x,), lambda a: a ** y, name)


def sigmoid(x: Any, name: Optional[str] = None) -> Tensor:
    return _node("Sigmoid", (x,), _F.sigmoid, name)


def tanh(x: Any, name: Optional[str] = None) -> Tensor:
    return _node("Tanh", (x,), _F.tanh, name)


def identity(x: Any, name: Optional[str] = None) -> Tensor:
    return _node("Identity", (x,), lambda a: a, name)


def _axis(axis: Any, reduction_indices: Any) -> Any:
    axis = reduction_indices if axis is None else axis
    return tuple(axis) if isinstance(axis, list) else axis


def reduce_sum(input_tensor: Any, axis: Any = None, keepdims: bool = False, name: Optional[str] = None,
               reduction_indices: Any = None, keep_dims: Optional[bool] = None) -> Tensor:
    ax, keep = _axis(axis, reduction_indices), bool(keep_dims if keep_dims is not None else keepdims)
    return _node("Sum", (input_tensor,), lambda a: a.sum(axis=ax, keepdims=keep), name)


def reduce_mean(input_tensor: Any, axis: Any = None, keepdims: bool = False, name: Optional[str] = None,
                reduction_indices: Any = None, keep_dims: Optional[bool] = None) -> Tensor:
    ax, keep = _axis(axis, reduction_indices), bool(keep_dims if keep_dims is not None else keepdims)

    def fn(a: _Core) -> _Core:
        if a.dtype.kind != "f":  # TF keeps the dtype (an integer mean truncates)
            return _plain(a, np.asarray(a.data.mean(axis=ax, keepdims=keep)).astype(a.dtype))
        return a.mean(axis=ax, keepdims=keep)
    return _node("Mean", (input_tensor,), fn, name)


def reduce_max(input_tensor: Any, axis: Any = None, keepdims: bool = False, name: Optional[str] = None) -> Tensor:
    """Largest value (not differentiable here: use it for metrics)."""
    ax = _axis(axis, None)
    return _node("Max", (input_tensor,), lambda a: _plain(a, np.asarray(a.data.max(axis=ax, keepdims=keepdims))),
                 name)


def argmax(input: Any, axis: Any = None, name: Optional[str] = None, dimension: Any = None,
           output_type: Any = np.int64) -> Tensor:
    """Index of the largest value along ``axis`` (default 0, as in TF), int64."""
    ax = 0 if axis is None and dimension is None else (axis if axis is not None else dimension)
    dtype = as_dtype(output_type)
    return _node("ArgMax", (input,), lambda a: _plain(a, a.data.argmax(axis=ax).astype(dtype)), name)


def argmin(input: Any, axis: Any = None, name: Optional[str] = None, output_type: Any = np.int64) -> Tensor:
    ax, dtype = 0 if axis is None else axis, as_dtype(output_type)
    return _node("ArgMin", (input,), lambda a: _plain(a, a.data.argmin(axis=ax).astype(dtype)), name)


def _compare(op: str, ufunc: Any, x: Any, y: Any, name: Optional[str]) -> Tensor:
    return _node(op, (x, y), lambda a, b: _plain(a, ufunc(a.data, b.data)), name)


def equal(x: Any, y: Any, name: Optional[str] = None) -> Tensor:
    return _compare("Equal", np.equal, x, y, name)


def not_equal(x: Any, y: Any, name: Optional[str] = None) -> Tensor:
    return _compare("NotEqual", np.not_equal, x, y, name)


def less(x: Any, y: Any, name: Optional[str] = None) -> Tensor:
    return _compare("Less", np.less, x, y, name)


def greater(x: Any, y: Any, name: Optional[str] = None) -> Tensor:
    return _compare("Greater", np.greater, x, y, name)


def cast(x: Any, dtype: Any, name: Optional[str] = None) -> Tensor:
    """Convert the dtype; float to float32 stays differentiable."""
    target = as_dtype(dtype)

    def fn(a: _Core) -> _Core:
        if a.dtype == target:
            return a
        if target == np.float32 and a.dtype.kind == "f" and a.requires_grad:
            return a * 1.0
        return _plain(a, a.data.astype(target))
    return _node("Cast", (x,), fn, name)


def reshape(tensor: Any, shape: Sequence[int], name: Optional[str] = None) -> Tensor:
    shape = tuple(shape)
    return _node("Reshape", (tensor,), lambda a: a.reshape(shape), name)


def transpose(a: Any, perm: Optional[Sequence[int]] = None, name: Optional[str] = None) -> Tensor:
    return _node("Transpose", (a,), lambda x: x.transpose(*(perm or ())), name)


def _source(op: str, shape: Sequence[int], make: Any, dtype: Any, name: Optional[str]) -> Tensor:
    shape, dt = tuple(int(n) for n in shape), as_dtype(dtype)
    node = Tensor(op, (), lambda: _Core._wrap(np.ascontiguousarray(make(shape), dtype=dt)), name=name,
                  shape=shape)
    return node


def zeros(shape: Sequence[int], dtype: Any = np.float32, name: Optional[str] = None) -> Tensor:
    return _source("Zeros", shape, np.zeros, dtype, name)


def ones(shape: Sequence[int], dtype: Any = np.float32, name: Optional[str] = None) -> Tensor:
    return _source("Ones", shape, np.ones, dtype, name)


def fill(dims: Sequence[int], value: Any, name: Optional[str] = None) -> Tensor:
    return _source("Fill", dims, lambda s: np.full(s, value), np.asarray(value).dtype if not isinstance(
        value, float) else np.float32, name)


def constant(value: Any, dtype: Any = None, shape: Optional[Sequence[int]] = None,
             name: Optional[str] = None) -> Tensor:
    arr = np.asarray(value, dtype=None if dtype is None else as_dtype(dtype))
    if shape is not None:
        arr = np.broadcast_to(arr, tuple(shape))
    return convert_to_tensor(np.ascontiguousarray(arr), dtype)


def _generator(seed: Optional[int]) -> np.random.Generator:
    # an op-level seed gives the op its own reproducible stream; else deepkern's global one
    return np.random.default_rng(seed) if seed is not None else _init.get_generator()


def random_normal(shape: Sequence[int], mean: float = 0.0, stddev: float = 1.0, dtype: Any = np.float32,
                  seed: Optional[int] = None, name: Optional[str] = None) -> Tensor:
    """Fresh N(mean, stddev^2) samples on every evaluation."""
    rng = _generator(seed)
    return _source("RandomNormal", shape, lambda s: rng.normal(mean, stddev, s), dtype, name)


def truncated_normal(shape: Sequence[int], mean: float = 0.0, stddev: float = 1.0, dtype: Any = np.float32,
                     seed: Optional[int] = None, name: Optional[str] = None) -> Tensor:
    """Normal samples, redrawn until each lies within two standard deviations of the mean."""
    rng = _generator(seed)

    def draw(s: tuple) -> np.ndarray:
        z = rng.standard_normal(s)
        bad = np.abs(z) > 2
        while bad.any():
            z[bad] = rng.standard_normal(int(bad.sum()))
            bad = np.abs(z) > 2
        return mean + stddev * z
    return _source("TruncatedNormal", shape, draw, dtype, name)


def random_uniform(shape: Sequence[int], minval: float = 0.0, maxval: Optional[float] = None,
                   dtype: Any = np.float32, seed: Optional[int] = None, name: Optional[str] = None) -> Tensor:
    """Fresh U(minval, maxval) samples (maxval defaults to 1) on every evaluation."""
    rng, high = _generator(seed), 1.0 if maxval is None else maxval
    return _source("RandomUniform", shape, lambda s: rng.uniform(minval, high, s), dtype, name)
