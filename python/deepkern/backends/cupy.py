"""The CuPy backend: GPU arrays when deepkern._cuda is not built.

Matmul and the im2col convolution go through ``cupy.matmul`` (cuBLAS); everything else is
CuPy's elementwise and reduction kernels, in float32. The code is written against the NumPy
API shared by both libraries and picks the array module from its inputs, so the same
functions also run on NumPy arrays (the CPU test-suite checks their semantics that way).
Arguments arrive validated and normalised by ``deepkern.ops``.
"""
from __future__ import annotations

from types import ModuleType
from typing import Optional, Tuple

import numpy

from .._validate import device_checked_loss

try:
    import cupy
except ImportError:  # reported by unavailable_reason(); the module stays importable
    cupy = None

from .._validate import window_shape
from . import _fused

Pair = Tuple[int, int]


def unavailable_reason() -> Optional[str]:
    """Why this backend cannot run here, or None when it can."""
    if cupy is None:
        return "cupy is not installed (pip install 'deepkern[cuda]')"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:  # CUDARuntimeError without a driver; never let the probe itself fail
        return f"no CUDA GPU is usable ({type(exc).__name__}: {exc})"
    if count == 0:
        return "no CUDA GPU is usable (device count is 0)"
    return None


def _xp(x) -> ModuleType:
    return cupy.get_array_module(x) if cupy is not None else numpy


def _windows(xp: ModuleType, x, kh: int, kw: int, stride: Pair, oh: int, ow: int):
    """View of x (N, C, Hp, Wp) as (N, C, OH, OW, KH, KW) windows (no copy)."""
    n, c = x.shape[:2]
    s0, s1, s2, s3 = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, shape=(n, c, oh, ow, kh, kw), strides=(s0, s1, s2 * stride[0], s3 * stride[1], s2, s3))


def _out_size(h: int, w: int, kh: int, kw: int, stride: Pair, padding: Pair) -> Pair:
    return window_shape(h, w, (kh, kw), stride, padding)


def _pad(xp: ModuleType, x, padding: Pair, value: float = 0.0):
    ph, pw = padding
    if ph == 0 and pw == 0:
        return x
    return xp.pad(x, ((0, 0), (0, 0), (ph, ph), (pw, pw)), mode="constant", constant_values=value)


def _unpad(xp: ModuleType, xp_grad, padding: Pair, h: int, w: int):
    ph, pw = padding
    return xp.ascontiguousarray(xp_grad[:, :, ph:ph + h, pw:pw + w])


# ---------------------------------------------------------------------------- matmul
def matmul(a, b, bias, relu: bool, trans_a: bool, trans_b: bool):
    xp = _xp(a)
    out = xp.matmul(a.T if trans_a else a, b.T if trans_b else b)  # (M, N), cuBLAS on the GPU
    if bias is not None:
        out += bias
    if relu:
        xp.maximum(out, 0, out=out)
    return out


def matmul_backward(grad_out, a, b, out, trans_a: bool, trans_b: bool, want_bias: bool, want_a: bool = True):
    xp = _xp(a)
    g = grad_out if out is None else xp.where(out > 0, grad_out, xp.float32(0))
    op_a = a.T if trans_a else a                     # (M, K)
    op_b = b.T if trans_b else b                     # (K, N)
    # d op(A) = g @ op(B)^T, d op(B) = op(A)^T @ g; transposed back to the stored layouts
    grad_a = None
    if want_a:
        grad_a = xp.ascontiguousarray(xp.matmul(op_b, g.T) if trans_a else xp.matmul(g, op_b.T))
    grad_b = xp.matmul(g.T, op_a) if trans_b else xp.matmul(op_a.T, g)
    grad_bias = g.sum(axis=0) if want_bias else None
    return grad_a, xp.ascontiguousarray(grad_b), grad_bias


# ---------------------------------------------------------------------------- conv2d
def _im2col(xp: ModuleType, x, kh: int, kw: int, stride: Pair, padding: Pair):
    """cols (N*OH*OW, C*KH*KW) of x (N, C, H, W), materialised once."""
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, kh, kw, stride, padding)
    win = _windows(xp, _pad(xp, x, padding), kh, kw, stride, oh, ow)   # (N, C, OH, OW, KH, KW)
    cols = xp.ascontiguousarray(win.transpose(0, 2, 3, 1, 4, 5)).reshape(n * oh * ow, c * kh * kw)
    return cols, oh, ow


def conv2d(x, w, bias, stride: Pair, padding: Pair):
    xp = _xp(x)
    n = x.shape[0]
    oc, _, kh, kw = w.shape
    cols, oh, ow = _im2col(xp, x, kh, kw, stride, padding)
    y = xp.matmul(cols, w.reshape(oc, -1).T)                            # (N*OH*OW, OC)
    if bias is not None:
        y += bias
    return xp.ascontiguousarray(y.reshape(n, oh, ow, oc).transpose(0, 3, 1, 2))


def conv2d_backward(grad_out, x, w, stride: Pair, padding: Pair, want_bias: bool, want_input: bool = True):
    xp = _xp(x)
    n, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    cols, oh, ow = _im2col(xp, x, kh, kw, stride, padding)
    g = grad_out.transpose(0, 2, 3, 1).reshape(n * oh * ow, oc)         # (N*OH*OW, OC)
    grad_w = xp.matmul(g.T, cols).reshape(w.shape)
    grad_b = grad_out.sum(axis=(0, 2, 3)) if want_bias else None
    if not want_input:
        return None, xp.ascontiguousarray(grad_w), grad_b
    dcols = xp.matmul(g, w.reshape(oc, -1)).reshape(n, oh, ow, c, kh, kw)
    # col2im: scatter each window offset's gradient back with one strided add per (i, j)
    dxp = xp.zeros((n, c, h + 2 * padding[0], wd + 2 * padding[1]), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + stride[0] * oh:stride[0], j:j + stride[1] * ow:stride[1]] += \
                dcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return _unpad(xp, dxp, padding, h, wd), xp.ascontiguousarray(grad_w), grad_b


# relu(conv2d) [2x2 max-pooled, with the routes] and its gradients from this backend's ops
conv2d_relu, conv2d_relu_backward = _fused.backend_ops(globals(), _xp)


# ---------------------------------------------------------------------------- pooling
def max_pool2d(x, kernel: Pair, stride: Pair, padding: Pair):
    xp = _xp(x)
    oh, ow = _out_size(x.shape[2], x.shape[3], kernel[0], kernel[1], stride, padding)
    win = _windows(xp, _pad(xp, x, padding, -numpy.inf), kernel[0], kernel[1], stride, oh, ow)
    return xp.ascontiguousarray(win.max(axis=(4, 5)))


def max_pool2d_backward(grad_out, x, kernel: Pair, stride: Pair, padding: Pair):
    xp = _xp(x)
    n, c, h, w = x.shape
    kh, kw = kernel
    oh, ow = _out_size(h, w, kh, kw, stride, padding)
    win = _windows(xp, _pad(xp, x, padding, -numpy.inf), kh, kw, stride, oh, ow).reshape(n, c, oh, ow, kh * kw)
    first_max = win.argmax(axis=4)      # the first maximum in row-major window order
    dxp = xp.zeros((n, c, h + 2 * padding[0], w + 2 * padding[1]), dtype=x.dtype)
    zero = xp.zeros((), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            routed = xp.where(first_max == i * kw + j, grad_out, zero)
            dxp[:, :, i:i + stride[0] * oh:stride[0], j:j + stride[1] * ow:stride[1]] += routed
    return _unpad(xp, dxp, padding, h, w)


def avg_pool2d(x, kernel: Pair, stride: Pair, padding: Pair):
    xp = _xp(x)
    oh, ow = _out_size(x.shape[2], x.shape[3], kernel[0], kernel[1], stride, padding)
    win = _windows(xp, _pad(xp, x, padding), kernel[0], kernel[1], stride, oh, ow)
    return xp.ascontiguousarray(win.sum(axis=(4, 5)) * xp.float32(1.0 / (kernel[0] * kernel[1])))


def avg_pool2d_backward(grad_out, x, kernel: Pair, stride: Pair, padding: Pair):
    xp = _xp(x)
    n, c, h, w = x.shape
    kh, kw = kernel
    oh, ow = _out_size(h, w, kh, kw, stride, padding)
    share = grad_out * xp.float32(1.0 / (kh * kw))
    dxp = xp.zeros((n, c, h + 2 * padding[0], w + 2 * padding[1]), dtype=x.dtype)
    for i in range(kh):
        for j in range(kw):
            dxp[:, :, i:i + stride[0] * oh:stride[0], j:j + stride[1] * ow:stride[1]] += share
    return _unpad(xp, dxp, padding, h, w)


# ---------------------------------------------------------------------------- activations
def relu(x):
    return _xp(x).maximum(x, x.dtype.type(0))


def relu_backward(grad_out, x):
    xp = _xp(x)
    return xp.where(x > 0, grad_out, xp.zeros((), dtype=grad_out.dtype))


def softmax(x, axis: int):
    xp = _xp(x)
    e = xp.exp(x - x.max(axis=axis, keepdims=True))
    e /= e.sum(axis=axis, keepdims=True)
    return e


def softmax_backward(grad_out, y, axis: int):
    return y * (grad_out - (grad_out * y).sum(axis=axis, keepdims=True))


def log_softmax(x, axis: int):
    xp = _xp(x)
    shifted = x - x.max(axis=axis, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=axis, keepdims=True))


def log_softmax_backward(grad_out, y, axis: int):
    xp = _xp(y)
    return grad_out - xp.exp(y) * grad_out.sum(axis=axis, keepdims=True)


# ---------------------------------------------------------------------------- loss
# Labels are range-checked here, on the device (deepkern.ops does not read them back): a bad
# label makes its row NaN, and the forward returns the count of bad labels with the loss.
def _bad_labels(xp: ModuleType, labels, classes: int):
    bad = (labels < 0) | (labels >= classes)
    return bad, xp.clip(labels, 0, classes - 1)   # clipped: indexing never wraps or reads outside


def cross_entropy(logits, labels):
    xp = _xp(logits)
    n, c = logits.shape
    bad, safe = _bad_labels(xp, labels, c)
    picked = xp.where(bad, logits.dtype.type(numpy.nan), log_softmax(logits, 1)[xp.arange(n), safe])
    loss = -picked.mean()
    return device_checked_loss(xp.stack([loss, bad.sum()]).astype(logits.dtype), c)


def cross_entropy_backward(logits, labels, grad: float):
    xp = _xp(logits)
    n, c = logits.shape
    bad, safe = _bad_labels(xp, labels, c)
    p = softmax(logits, 1)
    p[xp.arange(n), safe] -= 1
    p *= logits.dtype.type(grad / n)
    return xp.where(bad[:, None], logits.dtype.type(numpy.nan), p)


# ---------------------------------------------------------------------------- batch norm
def _by_channel(x):
    """x (N, C, *spatial) as an (N, C, S) view."""
    return x.reshape(x.shape[0], x.shape[1], -1)


def batch_norm(x, weight, bias, running_mean, running_var, training: bool, momentum: float, eps: float,
               unbiased: bool):
    xp = _xp(x)
    x3 = _by_channel(x)                                   # (N, C, S)
    if training:
        m = x3.shape[0] * x3.shape[2]
        mean64 = x3.mean(axis=(0, 2), dtype=xp.float64)   # (C,), float64 sums
        centred = x3 - mean64.astype(x.dtype)[None, :, None]
        var64 = (centred * centred).mean(axis=(0, 2), dtype=xp.float64)
        if running_mean is not None:
            batch_var = var64 * (m / (m - 1)) if unbiased else var64
            running_mean[...] = (1 - momentum) * running_mean + momentum * mean64
            running_var[...] = (1 - momentum) * running_var + momentum * batch_var
        mean = mean64.astype(x.dtype)
        invstd = (1.0 / xp.sqrt(var64 + eps)).astype(x.dtype)
    else:
        mean = running_mean.copy()
        invstd = (1.0 / xp.sqrt(running_var.astype(xp.float64) + eps)).astype(x.dtype)
    scale = invstd if weight is None else invstd * weight
    y = (x3 - mean[None, :, None]) * scale[None, :, None]
    if bias is not None:
        y += bias[None, :, None]
    return y.reshape(x.shape), mean, invstd


def batch_norm_backward(grad_out, x, weight, mean, invstd, training: bool, want_affine: bool):
    xp = _xp(x)
    g = _by_channel(grad_out)
    xhat = (_by_channel(x) - mean[None, :, None]) * invstd[None, :, None]
    k = invstd if weight is None else invstd * weight
    if training or want_affine:
        sum_g = g.sum(axis=(0, 2), dtype=xp.float64)
        sum_gx = (g * xhat).sum(axis=(0, 2), dtype=xp.float64)
    if training:
        m = g.shape[0] * g.shape[2]
        gx = k[None, :, None] * (g - (sum_g.astype(g.dtype)[None, :, None]
                                      + xhat * sum_gx.astype(g.dtype)[None, :, None]) / g.dtype.type(m))
    else:
        gx = k[None, :, None] * g
    gx = xp.ascontiguousarray(gx.reshape(x.shape))
    if not want_affine:
        return gx, None, None
    return gx, sum_gx.astype(g.dtype), sum_g.astype(g.dtype)


# ---------------------------------------------------------------------------- optimizer updates
def sgd_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    f = param.dtype.type
    g = grad + f(weight_decay) * param
    if momentum > 0:
        velocity *= f(momentum)
        velocity += g
        step = g + f(momentum) * velocity if nesterov else velocity
    else:
        step = g
    param -= f(lr) * step


def adam_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    xp = _xp(param)
    f = param.dtype.type
    g = grad + f(weight_decay) * param
    m *= f(beta1)
    m += f(1 - beta1) * g
    v *= f(beta2)
    v += f(1 - beta2) * g * g
    m_hat = m / f(1 - beta1 ** step)
    v_hat = v / f(1 - beta2 ** step)
    param -= f(lr) * m_hat / (xp.sqrt(v_hat) + f(eps))


def rmsprop_update(param, grad, square_avg, lr, alpha, eps, weight_decay):
    xp = _xp(param)
    f = param.dtype.type
    g = grad + f(weight_decay) * param
    square_avg *= f(alpha)
    square_avg += f(1 - alpha) * g * g
    param -= f(lr) * g / (xp.sqrt(square_avg) + f(eps))
