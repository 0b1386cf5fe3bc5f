"""The plain NumPy reference. Never optimised: every other backend is tested against it.

Computes in float64 and returns the inputs' dtype (float32 from ``deepkern.ops``; float64 when
the gradient tests call it directly for finite differences). Arguments arrive validated and normalised by
``deepkern.ops`` (pairs for stride/padding/kernel, a bool for the fused ReLU, a positive axis).
"""
from __future__ import annotations

from typing import Tuple

import numpy as np

from .._validate import window_shape
from . import _fused

Pair = Tuple[int, int]


def _f64(x: np.ndarray) -> np.ndarray:
    return np.asarray(x, dtype=np.float64)


# ---------------------------------------------------------------------------- matmul
def matmul(a, b, bias, relu: bool, trans_a: bool, trans_b: bool):
    out_dtype = a.dtype
    # a is (M, K) [or (K, M)], b is (K, N) [or (N, K)], bias (N,), out (M, N)
    A = _f64(a).T if trans_a else _f64(a)
    B = _f64(b).T if trans_b else _f64(b)
    out = A @ B
    if bias is not None:
        out = out + _f64(bias)
    if relu:
        out = np.maximum(out, 0.0)
    return out.astype(out_dtype)


def matmul_backward(grad_out, a, b, out, trans_a: bool, trans_b: bool, want_bias: bool, want_a: bool = True):
    out_dtype = grad_out.dtype
    g = _f64(grad_out)
    if out is not None:  # fused relu: gradient flows where the output was positive
        g = np.where(_f64(out) > 0, g, 0.0)
    A = _f64(a).T if trans_a else _f64(a)   # op(a), (M, K)
    B = _f64(b).T if trans_b else _f64(b)   # op(b), (K, N)
    d_opb = A.T @ g                          # (K, N)
    grad_b = d_opb.T if trans_b else d_opb
    grad_bias = g.sum(axis=0).astype(out_dtype) if want_bias else None
    grad_a = None
    if want_a:
        d_opa = g @ B.T                      # (M, K)
        grad_a = np.ascontiguousarray(d_opa.T if trans_a else d_opa, dtype=out_dtype)
    return grad_a, np.ascontiguousarray(grad_b, dtype=out_dtype), grad_bias


# ---------------------------------------------------------------------------- conv2d
def _windows(x: np.ndarray, kh: int, kw: int, stride: Pair, oh: int, ow: int) -> np.ndarray:
    """View of x (N, C, Hp, Wp) as (N, C, OH, OW, KH, KW) windows."""
    n, c, _, _ = x.shape
    s0, s1, s2, s3 = x.strides
    return np.lib.stride_tricks.as_strided(
        x, shape=(n, c, oh, ow, kh, kw),
        strides=(s0, s1, s2 * stride[0], s3 * stride[1], s2, s3), writeable=False)


def _out_size(h: int, w: int, kh: int, kw: int, stride: Pair, padding: Pair) -> Pair:
    return window_shape(h, w, (kh, kw), stride, padding)


def _pad(x: np.ndarray, padding: Pair, value: float = 0.0) -> np.ndarray:
    ph, pw = padding
    return np.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), constant_values=value)


def conv2d(x, w, bias, stride: Pair, padding: Pair):
    out_dtype = x.dtype
    # x is (N, C, H, W), w is (OC, C, KH, KW), out is (N, OC, OH, OW)
    oc, c, kh, kw = w.shape
    oh, ow = _out_size(x.shape[2], x.shape[3], kh, kw, stride, padding)
    cols = _windows(_pad(_f64(x), padding), kh, kw, stride, oh, ow)
    out = np.einsum("ncpqij,ocij->nopq", cols, _f64(w), optimize=True)
    if bias is not None:
        out += _f64(bias)[None, :, None, None]
    return out.astype(out_dtype)


def conv2d_backward(grad_out, x, w, stride: Pair, padding: Pair, want_bias: bool, want_input: bool = True):
    out_dtype = grad_out.dtype
    n, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    oh, ow = _out_size(h, wd, kh, kw, stride, padding)
    g = _f64(grad_out)
    xp = _pad(_f64(x), padding)
    cols = _windows(xp, kh, kw, stride, oh, ow)
    grad_w = np.einsum("nopq,ncpqij->ocij", g, cols, optimize=True)
    grad_b = g.sum(axis=(0, 2, 3)).astype(out_dtype) if want_bias else None
    if not want_input:
        return None, grad_w.astype(out_dtype), grad_b
    # scatter each output's gradient back over its window
    dcols = np.einsum("nopq,ocij->ncpqij", g, _f64(w), optimize=True)
    dxp = np.zeros_like(xp)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + stride[0] * oh:stride[0], j:j + stride[1] * ow:stride[1]] += dcols[:, :, :, :, i, j]
    ph, pw = padding
    grad_x = dxp[:, :, ph:ph + h, pw:pw + wd]
    return np.ascontiguousarray(grad_x, dtype=out_dtype), grad_w.astype(out_dtype), grad_b


# relu(conv2d) [2x2 max-pooled, with the routes] and its gradients from this backend's ops
conv2d_relu, conv2d_relu_backward = _fused.backend_ops(globals(), lambda x: np)


# ---------------------------------------------------------------------------- pooling
def max_pool2d(x, kernel: Pair, stride: Pair, padding: Pair):
    out_dtype = x.dtype
    oh, ow = _out_size(x.shape[2], x.shape[3], kernel[0], kernel[1], stride, padding)
    win = _windows(_pad(_f64(x), padding, -np.inf), kernel[0], kernel[1], stride, oh, ow)
    return win.max(axis=(4, 5)).astype(out_dtype)


def max_pool2d_backward(grad_out, x, kernel: Pair, stride: Pair, padding: Pair):
    out_dtype = grad_out.dtype
    n, c, h, w = x.shape
    kh, kw = kernel
    oh, ow = _out_size(h, w, kh, kw, stride, padding)
    xp = _pad(_f64(x), padding, -np.inf)
    win = _windows(xp, kh, kw, stride, oh, ow).reshape(n, c, oh, ow, kh * kw)
    real = _windows(_pad(np.ones(x.shape, dtype=bool), padding, False), kh, kw, stride, oh, ow)
    real = real.reshape(n, c, oh, ow, kh * kw)
    # the gradient goes to the first input (never padding, even when every input is -inf) that
    # is the window's maximum; a NaN is the maximum (the first NaN takes it)
    m = np.where(real, win, -np.inf).max(axis=4, keepdims=True)   # max propagates NaN
    best = real & ((win == m) | (np.isnan(win) & np.isnan(m)))
    first_max = best.argmax(axis=4)
    di, dj = np.divmod(first_max, kw)
    rows = np.arange(oh)[None, None, :, None] * stride[0] + di
    cols = np.arange(ow)[None, None, None, :] * stride[1] + dj
    dxp = np.zeros_like(xp)
    nn_, cc = np.meshgrid(np.arange(n), np.arange(c), indexing="ij")
    g = np.where(best.any(axis=4), _f64(grad_out), 0.0)  # a window of padding only credits nothing
    np.add.at(dxp, (nn_[:, :, None, None], cc[:, :, None, None], rows, cols), g)
    ph, pw = padding
    return np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + w], dtype=out_dtype)


def avg_pool2d(x, kernel: Pair, stride: Pair, padding: Pair):
    out_dtype = x.dtype
    oh, ow = _out_size(x.shape[2], x.shape[3], kernel[0], kernel[1], stride, padding)
    win = _windows(_pad(_f64(x), padding), kernel[0], kernel[1], stride, oh, ow)
    return win.mean(axis=(4, 5)).astype(out_dtype)


def avg_pool2d_backward(grad_out, x, kernel: Pair, stride: Pair, padding: Pair):
    out_dtype = grad_out.dtype
    n, c, h, w = x.shape
    kh, kw = kernel
    oh, ow = _out_size(h, w, kh, kw, stride, padding)
    share = _f64(grad_out) / (kh * kw)
    dxp = np.zeros((n, c, h + 2 * padding[0], w + 2 * padding[1]))
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + stride[0] * oh:stride[0], j:j + stride[1] * ow:stride[1]] += share
    ph, pw = padding
    return np.ascontiguousarray(dxp[:, :, ph:ph + h, pw:pw + w], dtype=out_dtype)


# ---------------------------------------------------------------------------- activations
def relu(x):
    out_dtype = x.dtype
    return np.maximum(_f64(x), 0.0).astype(out_dtype)


def relu_backward(grad_out, x):
    out_dtype = grad_out.dtype
    return np.where(_f64(x) > 0, _f64(grad_out), 0.0).astype(out_dtype)


def softmax(x, axis: int):
    out_dtype = x.dtype
    z = _f64(x)
    e = np.exp(z - z.max(axis=axis, keepdims=True))
    return (e / e.sum(axis=axis, keepdims=True)).astype(out_dtype)


def softmax_backward(grad_out, y, axis: int):
    out_dtype = grad_out.dtype
    g, s = _f64(grad_out), _f64(y)
    return (s * (g - (g * s).sum(axis=axis, keepdims=True))).astype(out_dtype)


def _log_softmax64(z: np.ndarray, axis: int) -> np.ndarray:
    shifted = z - z.max(axis=axis, keepdims=True)
    return shifted - np.log(np.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax(x, axis: int):
    out_dtype = x.dtype
    return _log_softmax64(_f64(x), axis).astype(out_dtype)


def log_softmax_backward(grad_out, y, axis: int):
    out_dtype = grad_out.dtype
    g = _f64(grad_out)
    return (g - np.exp(_f64(y)) * g.sum(axis=axis, keepdims=True)).astype(out_dtype)


# ---------------------------------------------------------------------------- loss
def cross_entropy(logits, labels):
    out_dtype = logits.dtype
    logp = _log_softmax64(_f64(logits), 1)
    picked = logp[np.arange(logits.shape[0]), labels.astype(np.int64)]
    return np.asarray(-picked.mean(), dtype=out_dtype)


def cross_entropy_backward(logits, labels, grad: float):
    out_dtype = logits.dtype
    n = logits.shape[0]
    p = np.exp(_log_softmax64(_f64(logits), 1))
    p[np.arange(n), labels.astype(np.int64)] -= 1.0
    return (p * (grad / n)).astype(out_dtype)


# ---------------------------------------------------------------------------- optimizer updates
def sgd_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    g = _f64(grad) + weight_decay * _f64(param)
    if momentum > 0:
        v = momentum * _f64(velocity) + g
        velocity[...] = v
        step = g + momentum * v if nesterov else v
    else:
        step = g
    param[...] = _f64(param) - lr * step


def adam_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    g = _f64(grad) + weight_decay * _f64(param)
    m64 = beta1 * _f64(m) + (1 - beta1) * g
    v64 = beta2 * _f64(v) + (1 - beta2) * g * g
    m[...] = m64
    v[...] = v64
    m_hat = m64 / (1 - beta1 ** step)
    v_hat = v64 / (1 - beta2 ** step)
    param[...] = _f64(param) - lr * m_hat / (np.sqrt(v_hat) + eps)


def rmsprop_update(param, grad, square_avg, lr, alpha, eps, weight_decay):
    g = _f64(grad) + weight_decay * _f64(param)
    s = alpha * _f64(square_avg) + (1 - alpha) * g * g
    square_avg[...] = s
    param[...] = _f64(param) - lr * g / (np.sqrt(s) + eps)


# ---------------------------------------------------------------------------- batch norm
def _channels(x) -> Tuple[int, int, int]:
    """(N, C, S) of x (N, C, *spatial): S is the product of the spatial sizes (1 for (N, C))."""
    return x.shape[0], x.shape[1], int(np.prod(x.shape[2:], dtype=np.int64))


def batch_norm(x, weight, bias, running_mean, running_var, training: bool, momentum: float, eps: float,
               unbiased: bool):
    out_dtype = x.dtype
    n, c, s = _channels(x)
    x3 = _f64(x).reshape(n, c, s)                        # (N, C, S)
    if training:
        mean = x3.mean(axis=(0, 2))                      # (C,)
        var = ((x3 - mean[None, :, None]) ** 2).mean(axis=(0, 2))
        if running_mean is not None:
            m = n * s
            running_mean[...] = (1 - momentum) * _f64(running_mean) + momentum * mean
            running_var[...] = (1 - momentum) * _f64(running_var) + momentum * (var * m / (m - 1) if unbiased else var)
    else:
        mean, var = _f64(running_mean), _f64(running_var)
    invstd = 1.0 / np.sqrt(var + eps)
    scale = invstd if weight is None else invstd * _f64(weight)
    shift = -mean * scale if bias is None else _f64(bias) - mean * scale
    y = x3 * scale[None, :, None] + shift[None, :, None]
    return y.reshape(x.shape).astype(out_dtype), mean.astype(out_dtype), invstd.astype(out_dtype)


def batch_norm_backward(grad_out, x, weight, mean, invstd, training: bool, want_affine: bool):
    out_dtype = grad_out.dtype
    n, c, s = _channels(x)
    g = _f64(grad_out).reshape(n, c, s)
    xhat = (_f64(x).reshape(n, c, s) - _f64(mean)[None, :, None]) * _f64(invstd)[None, :, None]
    sum_g = g.sum(axis=(0, 2))                           # (C,): the bias gradient
    sum_gx = (g * xhat).sum(axis=(0, 2))                 # (C,): the weight gradient
    k = _f64(invstd) if weight is None else _f64(invstd) * _f64(weight)
    if training:  # the batch statistics depend on x too
        m = n * s
        gx = k[None, :, None] * (g - (sum_g[None, :, None] + xhat * sum_gx[None, :, None]) / m)
    else:
        gx = k[None, :, None] * g
    gx = gx.reshape(x.shape).astype(out_dtype)
    if not want_affine:
        return gx, None, None
    return gx, sum_gx.astype(out_dtype), sum_g.astype(out_dtype)
