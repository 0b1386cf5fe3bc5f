"""The fused conv + ReLU (+ 2x2 max-pool) layer composed from a backend's own ops.

The C++ backend runs it as one kernel (``csrc/cpu/conv2d_fused.cpp``, and composes it here in bf16
precision); the NumPy reference and the numba, CuPy and CUDA backends compose it here
(``backend_ops``) from their ``conv2d``, ``relu``, ``relu_backward`` and ``conv2d_backward`` plus the
window routing below, written once against the array API that NumPy and CuPy share (``xp`` is
the array module). The route of a pooled output is the window position
(0 a, 1 b / 2 c, 3 d, row-major) of its first maximum, a NaN counting as the maximum, when the
output is > 0, else ``NO_ROUTE``: the same rule as ``max_pool2d_backward`` then ``relu_backward``.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, Dict, List, Tuple

from .._validate import window_shape

#: route of an output whose gradient the ReLU blocks (output <= 0 or NaN)
NO_ROUTE = 4


def _taps(y: Any, ph: int, pw: int) -> List[Any]:
    """The windows' taps a, b, c, d (row-major) of y (N, C, H, W): strided (N, C, PH, PW) views."""
    return [y[:, :, i:2 * ph:2, j:2 * pw:2] for i in (0, 1) for j in (0, 1)]


def pool_with_routes(xp: ModuleType, y: Any) -> Tuple[Any, Any]:
    """2x2 / stride-2 max-pool of the rectified y (N, C, H, W) and the routes (uint8)."""
    ph, pw = y.shape[2] // 2, y.shape[3] // 2
    taps = _taps(y, ph, pw)
    best = xp.maximum(xp.maximum(taps[0], taps[1]), xp.maximum(taps[2], taps[3]))  # NaN propagates
    nan = xp.isnan(best)
    at = xp.full(best.shape, 3, dtype=xp.uint8)
    for k in (2, 1, 0):  # the first tap that is the maximum (a NaN one where the window has a NaN)
        at = xp.where((taps[k] == best) | (xp.isnan(taps[k]) & nan), xp.uint8(k), at)
    route = xp.where(best > 0, at, xp.uint8(NO_ROUTE))
    return xp.ascontiguousarray(best), xp.ascontiguousarray(route)


def unpool_routes(xp: ModuleType, grad_out: Any, route: Any, shape: Tuple[int, ...]) -> Any:
    """The conv output's gradient (shape) from the pooled one: each at its route, 0 elsewhere."""
    g = xp.zeros(shape, dtype=grad_out.dtype)
    zero = xp.zeros((), dtype=grad_out.dtype)
    for k, tap in enumerate(_taps(g, route.shape[2], route.shape[3])):
        tap[...] = xp.where(route == k, grad_out, zero)
    return g


def backend_ops(namespace: Dict[str, Any], array_module: Callable[[Any], ModuleType]) -> Tuple[Callable, Callable]:
    """``conv2d_relu`` and ``conv2d_relu_backward`` (the contract's signatures) composed from the
    backend whose module globals are ``namespace``: its ``conv2d``, ``relu``, ``conv2d_backward`` and
    ``relu_backward``, looked up at each call; ``array_module(x)`` is the array module of x."""

    def conv2d_relu(x, w, bias, stride, padding, pool):
        y = namespace["relu"](namespace["conv2d"](x, w, bias, stride, padding))
        return pool_with_routes(array_module(x), y) if pool else (y, None)

    def conv2d_relu_backward(grad_out, x, w, out, route, stride, padding, want_bias, want_input=True):
        if route is None:
            g = namespace["relu_backward"](grad_out, out)
        else:
            oh, ow = window_shape(x.shape[2], x.shape[3], w.shape[2:], stride, padding)
            g = unpool_routes(array_module(x), grad_out, route, (x.shape[0], w.shape[0], oh, ow))
        return namespace["conv2d_backward"](g, x, w, stride, padding, want_bias, want_input)

    return conv2d_relu, conv2d_relu_backward
