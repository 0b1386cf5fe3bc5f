"""ctypes access to the emulated CUDA kernels (see build.py): NumPy arrays in, NumPy arrays out.

Each function mirrors a host launcher of csrc/cuda and raises EmuError when it throws (a refused
shape, a failed launch). Arrays must be float32 (labels int32/int64) and C-contiguous; they may be
offset views (``offset_copy``) so that the kernels' unaligned paths run.
"""
from __future__ import annotations

import ctypes
from typing import Optional, Sequence, Tuple

import numpy as np

from .build import build


class EmuError(RuntimeError):
    """A host launcher threw: the text is the C++ exception's."""


_P = ctypes.c_void_p
_I = ctypes.c_int
_L = ctypes.c_longlong
_F = ctypes.c_float
_SIGS = {
    "emu_set_matmul_variant": [ctypes.c_char_p],
    "emu_matmul": [_P, _P, _P, _P, _I, _I, _I, _I, _I, _I],
    "emu_matmul_backward": [_P] * 8 + [_I] * 5,
    "emu_column_sum": [_P, _P, _I, _I],
    "emu_conv2d": [_P] * 5,
    "emu_conv2d_backward": [_P] * 7,
    "emu_pool": [_I, _P, _P, _P, _P],
    "emu_relu": [_P, _P, _L],
    "emu_relu_backward": [_P, _P, _P, _L],
    "emu_softmax": [_P, _P, _L, _L, _L, _I],
    "emu_softmax_backward": [_P, _P, _P, _L, _L, _L, _I],
    "emu_cross_entropy": [_P, _P, _I, _P, _P, _I, _I],
    "emu_cross_entropy_backward": [_P, _P, _I, _P, _I, _I, _F],
    "emu_batch_norm": [_P] * 9 + [_L, _L, _L, _I, _F, _F, _I],
    "emu_batch_norm_backward": [_P] * 9 + [_L, _L, _L, _I],
    "emu_sgd": [_P, _P, _P, _L, _F, _F, _F, _I],
    "emu_adam": [_P, _P, _P, _P, _L, _L, _F, _F, _F, _F, _F],
    "emu_rmsprop": [_P, _P, _P, _L, _F, _F, _F, _F],
}
_lib = None


def lib() -> ctypes.CDLL:
    """The emulation library, built (or taken from the cache) on first use."""
    global _lib
    if _lib is None:
        handle = ctypes.CDLL(str(build("lib")))
        for name, argtypes in _SIGS.items():
            fn = getattr(handle, name)
            fn.argtypes = argtypes
            fn.restype = ctypes.c_int
        handle.emu_message.restype = ctypes.c_char_p
        handle.emu_batch_norm_workspace.argtypes = [_L, _L, _L]
        handle.emu_batch_norm_workspace.restype = _L
        handle.emu_set_device.argtypes = [_I, _I]
        handle.emu_keep_blocks.argtypes = [_L, _L]
        handle.emu_blocks_run.restype = _L
        handle.emu_launch_budget.argtypes = [_L]
        handle.emu_probe.argtypes = [_I]
        _lib = handle
    return _lib


def _ptr(a: Optional[np.ndarray]):
    if a is None:
        return None
    assert a.flags.c_contiguous, "emulated kernels take C-contiguous arrays"
    return a.ctypes.data


def _call(name: str, *args) -> None:
    if getattr(lib(), name)(*args) != 0:
        raise EmuError(lib().emu_message().decode())


def offset_copy(a: np.ndarray, offset: int = 1) -> np.ndarray:
    """A copy of a whose data starts `offset` elements into a larger buffer (misaligned for float4)."""
    buf = np.empty(a.size + offset, dtype=a.dtype)
    view = buf[offset:].reshape(a.shape)
    view[...] = a
    return view


def set_device(sms: int = 132, major: int = 9) -> None:
    """The multiprocessor count and compute capability the launchers see (they pick tiles by them)."""
    lib().emu_set_device(sms, major)


def keep_blocks(first: int = -1, last: int = -1) -> None:
    """Run only the first/last blocks of every grid (huge shapes); (-1, -1) runs all."""
    lib().emu_keep_blocks(first, last)


def launch_budget(n: int = -1) -> None:
    """Only the next n launches run, later ones are skipped (-1: all)."""
    lib().emu_launch_budget(n)


def blocks_run() -> int:
    return lib().emu_blocks_run()


def reset() -> None:
    """The default emulated GPU (132 SMs, sm_90, fp32 GEMM), every block and launch run."""
    set_device()
    keep_blocks()
    launch_budget()
    set_matmul_variant("fp32")


def set_matmul_variant(name: str) -> None:
    _call("emu_set_matmul_variant", name.encode())


# ---------------------------------------------------------------------------- ops
def matmul(a, b, bias, relu: bool, trans_a: bool, trans_b: bool, out=None):
    m = a.shape[1] if trans_a else a.shape[0]
    k = a.shape[0] if trans_a else a.shape[1]
    n = b.shape[0] if trans_b else b.shape[1]
    c = np.full((m, n), np.nan, np.float32) if out is None else out
    _call("emu_matmul", _ptr(a), _ptr(b), _ptr(bias), _ptr(c), m, n, k, trans_a, trans_b, relu)
    return c


def matmul_backward(g, a, b, out, trans_a: bool, trans_b: bool, want_bias: bool):
    m, n = g.shape
    k = a.shape[0] if trans_a else a.shape[1]
    da, db = np.full(a.shape, np.nan, np.float32), np.full(b.shape, np.nan, np.float32)
    dbias = np.full((n,), np.nan, np.float32) if want_bias else None
    gmask = np.empty_like(g) if out is not None else None
    _call("emu_matmul_backward", _ptr(g), _ptr(a), _ptr(b), _ptr(out), _ptr(gmask), _ptr(da), _ptr(db),
          _ptr(dbias), m, n, k, trans_a, trans_b)
    return da, db, dbias


def _conv_dims(x, w, stride, padding):
    return (ctypes.c_int * 11)(*x.shape, w.shape[0], w.shape[2], w.shape[3], *stride, *padding)


def _out(h: int, k: int, s: int, p: int) -> int:
    return (h + 2 * p - k) // s + 1


def conv2d(x, w, bias, stride: Tuple[int, int], padding: Tuple[int, int], out=None):
    oh, ow = _out(x.shape[2], w.shape[2], stride[0], padding[0]), _out(x.shape[3], w.shape[3], stride[1], padding[1])
    y = np.full((x.shape[0], w.shape[0], oh, ow), np.nan, np.float32) if out is None else out
    _call("emu_conv2d", _conv_dims(x, w, stride, padding), _ptr(x), _ptr(w), _ptr(bias), _ptr(y))
    return y


def conv2d_backward(gy, x, w, stride, padding, want_bias: bool, want_input: bool = True, gx=None, gw=None):
    if gx is None and want_input:
        gx = np.full(x.shape, np.nan, np.float32)
    gw = np.full(w.shape, np.nan, np.float32) if gw is None else gw
    gb = np.full((w.shape[0],), np.nan, np.float32) if want_bias else None
    _call("emu_conv2d_backward", _conv_dims(x, w, stride, padding), _ptr(gy), _ptr(x), _ptr(w),
          _ptr(gx if want_input else None), _ptr(gw), _ptr(gb))
    return (gx if want_input else None), gw, gb


def _pool_dims(x, kernel, stride, padding):
    return (ctypes.c_int * 10)(*x.shape, *kernel, *stride, *padding)


def pool(kind: str, x, kernel, stride, padding, grad_out=None, out=None):
    """kind: max/avg forward ("max", "avg") or backward ("max_bwd", "avg_bwd", given grad_out)."""
    code = {"max": 0, "max_bwd": 1, "avg": 2, "avg_bwd": 3}[kind]
    if code in (1, 3):
        res = np.full(x.shape, np.nan, np.float32) if out is None else out
        src = grad_out
    else:
        oh = _out(x.shape[2], kernel[0], stride[0], padding[0])
        ow = _out(x.shape[3], kernel[1], stride[1], padding[1])
        res = np.full((x.shape[0], x.shape[1], oh, ow), np.nan, np.float32) if out is None else out
        src = x
    _call("emu_pool", code, _pool_dims(x, kernel, stride, padding), _ptr(src), _ptr(x), _ptr(res))
    return res


def relu(x):
    y = np.full_like(x, np.nan)
    _call("emu_relu", _ptr(x), _ptr(y), x.size)
    return y


def relu_backward(g, x):
    gx = np.full_like(x, np.nan)
    _call("emu_relu_backward", _ptr(g), _ptr(x), _ptr(gx), x.size)
    return gx


def _split(shape: Sequence[int], axis: int):
    return int(np.prod(shape[:axis])), shape[axis], int(np.prod(shape[axis + 1:]))


def softmax(x, axis: int, log: bool = False, out=None):
    y = np.full(x.shape, np.nan, np.float32) if out is None else out
    _call("emu_softmax", _ptr(x), _ptr(y), *_split(x.shape, axis), log)
    return y


def softmax_backward(g, y, axis: int, log: bool = False):
    gx = np.full(y.shape, np.nan, np.float32)
    _call("emu_softmax_backward", _ptr(g), _ptr(y), _ptr(gx), *_split(y.shape, axis), log)
    return gx


def cross_entropy(logits, labels):
    """(mean loss, count of labels outside [0, C)) as the kernel leaves them on the device."""
    n, c = logits.shape
    rows = np.full((n,), np.nan, np.float32)
    loss = np.full((2,), np.nan, np.float32)
    _call("emu_cross_entropy", _ptr(logits), _ptr(labels), labels.dtype == np.int64, _ptr(rows), _ptr(loss), n, c)
    return loss[0], loss[1]


def cross_entropy_backward(logits, labels, grad: float):
    n, c = logits.shape
    gl = np.full(logits.shape, np.nan, np.float32)
    _call("emu_cross_entropy_backward", _ptr(logits), _ptr(labels), labels.dtype == np.int64, _ptr(gl), n, c, grad)
    return gl


def _bn_workspace(shape) -> Tuple[Tuple[int, int, int], np.ndarray]:
    n, c = shape[0], shape[1]
    s = int(np.prod(shape[2:], dtype=np.int64))
    return (n, c, s), np.full((lib().emu_batch_norm_workspace(n, c, s),), np.nan)


def batch_norm(x, w, b, rm, rv, training: bool, momentum: float, eps: float, unbiased: bool):
    """(y, mean, invstd); rm/rv (running statistics) are updated in place when training."""
    dims, ws = _bn_workspace(x.shape)
    y = np.full(x.shape, np.nan, np.float32)
    mean = np.full((x.shape[1],), np.nan, np.float32)
    invstd = np.full((x.shape[1],), np.nan, np.float32)
    _call("emu_batch_norm", _ptr(x), _ptr(w), _ptr(b), _ptr(rm), _ptr(rv), _ptr(y), _ptr(mean), _ptr(invstd),
          _ptr(ws), *dims, training, momentum, eps, unbiased)
    return y, mean, invstd


def batch_norm_backward(g, x, w, mean, invstd, training: bool, want_affine: bool):
    dims, ws = _bn_workspace(x.shape)
    gx = np.full(x.shape, np.nan, np.float32)
    gw = np.full((x.shape[1],), np.nan, np.float32) if want_affine else None
    gb = np.full((x.shape[1],), np.nan, np.float32) if want_affine else None
    _call("emu_batch_norm_backward", _ptr(g), _ptr(x), _ptr(w), _ptr(mean), _ptr(invstd), _ptr(gx), _ptr(gw),
          _ptr(gb), _ptr(ws), *dims, training)
    return gx, gw, gb


def sgd_update(p, g, v, lr, momentum, wd, nesterov):
    _call("emu_sgd", _ptr(p), _ptr(g), _ptr(v), p.size, lr, momentum, wd, nesterov)


def adam_update(p, g, m, v, step, lr, b1, b2, eps, wd):
    _call("emu_adam", _ptr(p), _ptr(g), _ptr(m), _ptr(v), p.size, step, lr, b1, b2, eps, wd)


def rmsprop_update(p, g, s, lr, alpha, eps, wd):
    _call("emu_rmsprop", _ptr(p), _ptr(g), _ptr(s), p.size, lr, alpha, eps, wd)
