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
from typing import Any, Callable, Dict, Tuple

from .._validate import window_shape

#: route of an output whose gradient the ReLU blocks (output <= 0 or NaN)
NO_ROUTE = 4


def _windows(y: Any, ph: int, pw: int) -> Any:
    """(N, C, 2*PH, 2*PW) -> (N, C, PH, PW, 4) window taps in row-major order."""
    n, c = y.shape[:2]
    return y.reshape(n, c, ph, 2, pw, 2).transpose(0, 1, 2, 4, 3, 5).reshape(n, c, ph, pw, 4)


def pool_with_routes(xp: ModuleType, y: Any) -> Tuple[Any, Any]:
    """2x2 / stride-2 max-pool of the rectified y (N, C, H, W) and the routes (uint8)."""
    ph, pw = y.shape[2] // 2, y.shape[3] // 2
    win = _windows(y[:, :, :2 * ph, :2 * pw], ph, pw)
    best = win.max(axis=4)  # max propagates a NaN
    is_max = (win == best[..., None]) | (xp.isnan(win) & xp.isnan(best)[..., None])
    at = is_max.argmax(axis=4)  # the first True: the first maximum, or the first NaN
    route = xp.where(best > 0, at, NO_ROUTE).astype(xp.uint8)
    return xp.ascontiguousarray(best), route


def unpool_routes(xp: ModuleType, grad_out: Any, route: Any, shape: Tuple[int, ...]) -> Any:
    """The conv output's gradient (shape) from the pooled one: each at its route, 0 elsewhere."""
    n, c, ph, pw = route.shape
    taps = xp.arange(4, dtype=route.dtype)
    win = xp.where(route[..., None] == taps, grad_out[..., None], xp.zeros((), dtype=grad_out.dtype))
    g = xp.zeros(shape, dtype=grad_out.dtype)
    g[:, :, :2 * ph, :2 * pw] = win.reshape(n, c, ph, pw, 2, 2).transpose(0, 1, 2, 4, 3, 5).reshape(
        n, c, 2 * ph, 2 * pw)
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
