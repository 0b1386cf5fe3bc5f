"""The functional array API: validate, then dispatch to the backend for the arrays' device.

Arrays are float32, C-contiguous ``numpy.ndarray`` (CPU) or ``cupy.ndarray`` (GPU). Layouts
follow PyTorch: activations NCHW, conv weights (out_channels, in_channels, kh, kw). Nothing
here copies silently: a wrong dtype, rank, shape, layout or device raises ``TypeError`` or
``ValueError`` naming the argument. Each forward op has a ``<name>_backward``.
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

import numpy as np

from . import backends
from ._validate import (INT64_MAX, check_array, check_axis, check_labels, check_no_overlap, pair, real,
                        same_device, window_output)

IntPair = Union[int, Tuple[int, int]]
Array = np.ndarray  # or cupy.ndarray

__all__ = [
    "matmul", "matmul_backward", "conv2d", "conv2d_backward", "conv2d_relu", "conv2d_relu_backward",
    "max_pool2d", "max_pool2d_backward", "avg_pool2d", "avg_pool2d_backward",
    "relu", "relu_backward", "softmax", "softmax_backward",
    "log_softmax", "log_softmax_backward", "cross_entropy", "cross_entropy_backward",
    "batch_norm", "batch_norm_backward",
    "sgd_update", "adam_update", "rmsprop_update",
]


def _activation(activation: Optional[str]) -> bool:
    if activation is None:
        return False
    if activation == "relu":
        return True
    raise ValueError(f"activation: expected None or 'relu', got {activation!r}")


def _matmul_dims(a: Array, b: Array, trans_a: bool, trans_b: bool) -> Tuple[int, int, int]:
    check_array(a, "a", 2)
    check_array(b, "b", 2)
    same_device("a", a, "b", b)
    m, k = (a.shape[1], a.shape[0]) if trans_a else a.shape
    kb, n = (b.shape[1], b.shape[0]) if trans_b else b.shape
    if k != kb:
        raise ValueError(f"a and b: inner dimensions differ: op(a) is ({m}, {k}) and op(b) is ({kb}, {n})"
                         f" (trans_a={trans_a}, trans_b={trans_b})")
    return m, n, k


# ---------------------------------------------------------------------------- matmul
def matmul(a: Array, b: Array, bias: Optional[Array] = None, activation: Optional[str] = None,
           trans_a: bool = False, trans_b: bool = False) -> Array:
    """``activation(op(a) @ op(b) + bias)`` with op = transpose when ``trans_*``.

    a is (M, K) or (K, M) with trans_a; b is (K, N) or (N, K) with trans_b; bias is (N,);
    the result is (M, N). ``activation`` is None or "relu" (fused in the store).
    """
    m, n, k = _matmul_dims(a, b, trans_a, trans_b)
    relu_ = _activation(activation)
    if bias is not None:
        check_array(bias, "bias", 1)
        same_device("a", a, "bias", bias)
        if bias.shape[0] != n:
            raise ValueError(f"bias: expected shape ({n},) to match the output columns, got {tuple(bias.shape)}")
    return backends.for_array(a).matmul(a, b, bias, relu_, bool(trans_a), bool(trans_b))


def matmul_backward(grad_out: Array, a: Array, b: Array, out: Optional[Array] = None,
                    activation: Optional[str] = None, trans_a: bool = False, trans_b: bool = False,
                    bias: bool = False, a_grad: bool = True) -> Tuple[Optional[Array], Array, Optional[Array]]:
    """Gradients of ``matmul`` for (a, b, bias), each shaped like its input.

    grad_out is (M, N). With activation="relu", ``out`` (the forward result) masks the
    gradient. ``bias=True`` also returns the bias gradient (sum of grad over rows), else None.
    With ``a_grad=False`` the gradient of ``a`` is not computed and is None (a network's first
    layer, whose input needs no gradient); the others are unchanged.
    """
    m, n, k = _matmul_dims(a, b, trans_a, trans_b)
    relu_ = _activation(activation)
    check_array(grad_out, "grad_out", 2)
    same_device("a", a, "grad_out", grad_out)
    if grad_out.shape != (m, n):
        raise ValueError(f"grad_out: expected shape {(m, n)}, got {tuple(grad_out.shape)}")
    if relu_:
        if out is None:
            raise ValueError("out: the forward output is required when activation='relu'")
        check_array(out, "out", 2)
        if out.shape != (m, n):
            raise ValueError(f"out: expected shape {(m, n)}, got {tuple(out.shape)}")
    return backends.for_array(a).matmul_backward(grad_out, a, b, out if relu_ else None,
                                                 bool(trans_a), bool(trans_b), bool(bias), bool(a_grad))


# ---------------------------------------------------------------------------- conv2d
def _conv_geometry(x: Array, w: Array, stride: IntPair, padding: IntPair):
    check_array(x, "x", 4)
    check_array(w, "w", 4)
    same_device("x", x, "w", w)
    sh, sw = pair(stride, "stride", 1)
    ph, pw = pair(padding, "padding", 0)
    n, c, h, wd = x.shape
    oc, ic, kh, kw = w.shape
    if ic != c:
        raise ValueError(f"w: expected {c} input channels (x is {tuple(x.shape)}), got w of shape {tuple(w.shape)}")
    oh = window_output(h, kh, sh, ph, "conv2d (height)")
    ow = window_output(wd, kw, sw, pw, "conv2d (width)")
    if c * kh * kw > 2**31 - 1 or oh * ow > 2**31 - 1:
        raise ValueError("x/w: the im2col matrix exceeds the kernels' 32-bit index limit")
    return (sh, sw), (ph, pw), (n, oc, oh, ow)


def conv2d(x: Array, w: Array, bias: Optional[Array] = None, stride: IntPair = 1,
           padding: IntPair = 0) -> Array:
    """2-D cross-correlation. x is (N, C, H, W), w is (OC, C, KH, KW), bias is (OC,);
    the result is (N, OC, OH, OW) with OH = (H + 2*ph - KH) // sh + 1."""
    st, pd, _ = _conv_geometry(x, w, stride, padding)
    _conv_bias(x, w, bias)
    return backends.for_array(x).conv2d(x, w, bias, st, pd)


def conv2d_backward(grad_out: Array, x: Array, w: Array, stride: IntPair = 1, padding: IntPair = 0,
                    bias: bool = False, input_grad: bool = True) -> Tuple[Optional[Array], Array, Optional[Array]]:
    """Gradients of ``conv2d`` for (x, w, bias): ``(gx, gw, gb)``.

    The bias gradient is None unless ``bias``. With ``input_grad=False`` the input gradient
    is not computed and ``gx`` is None (a network's first layer, whose input needs no
    gradient, saves the dX product and its scatter that way); gw and gb are unchanged."""
    st, pd, out_shape = _conv_geometry(x, w, stride, padding)
    check_array(grad_out, "grad_out", 4)
    same_device("x", x, "grad_out", grad_out)
    if tuple(grad_out.shape) != out_shape:
        raise ValueError(f"grad_out: expected shape {out_shape}, got {tuple(grad_out.shape)}")
    return backends.for_array(x).conv2d_backward(grad_out, x, w, st, pd, bool(bias), bool(input_grad))


def _conv_bias(x: Array, w: Array, bias: Optional[Array]) -> None:
    if bias is not None:
        check_array(bias, "bias", 1)
        same_device("x", x, "bias", bias)
        if bias.shape[0] != w.shape[0]:
            raise ValueError(f"bias: expected shape ({w.shape[0]},) (one per output channel), got {tuple(bias.shape)}")


def _fused_shape(out_shape: Tuple[int, int, int, int], pool: bool) -> Tuple[int, int, int, int]:
    n, oc, oh, ow = out_shape
    return (n, oc, oh // 2, ow // 2) if pool else out_shape


def conv2d_relu(x: Array, w: Array, bias: Optional[Array] = None, stride: IntPair = 1, padding: IntPair = 0,
                pool: bool = False) -> Tuple[Array, Optional[Array]]:
    """``relu(conv2d(x, w, bias, stride, padding))``, with ``pool=True`` then max-pooled over 2x2
    windows with stride 2 (an odd last row/column is dropped), as one pass over the conv output.

    Returns ``(out, route)``. ``route`` (uint8, out's shape; None without the pool) is what the
    backward needs instead of the un-pooled activation, which is never stored: the window
    position (0-3, row-major) of each output's first maximum (a NaN is the maximum), or 4 where
    the ReLU blocks the gradient (output <= 0 or NaN). Equal to the three ops in turn."""
    st, pd, _ = _conv_geometry(x, w, stride, padding)
    _conv_bias(x, w, bias)
    return backends.for_array(x).conv2d_relu(x, w, bias, st, pd, bool(pool))


def conv2d_relu_backward(grad_out: Array, x: Array, w: Array, out: Optional[Array] = None,
                         route: Optional[Array] = None, stride: IntPair = 1, padding: IntPair = 0,
                         bias: bool = False, input_grad: bool = True) -> Tuple[Optional[Array], Array, Optional[Array]]:
    """Gradients of ``conv2d_relu`` for (x, w, bias): ``(gx, gw, gb)`` as ``conv2d_backward``.

    With the pool, pass the forward's ``route`` (it selects the pooled form); without it, the
    forward's ``out`` (the gradient passes where out > 0)."""
    st, pd, out_shape = _conv_geometry(x, w, stride, padding)
    shape = _fused_shape(out_shape, route is not None)
    check_array(grad_out, "grad_out", 4)
    same_device("x", x, "grad_out", grad_out)
    if tuple(grad_out.shape) != shape:
        raise ValueError(f"grad_out: expected shape {shape}, got {tuple(grad_out.shape)}")
    if route is not None:
        if route.dtype != np.uint8 or tuple(route.shape) != shape or not route.flags.c_contiguous:
            raise ValueError(f"route: expected the forward's C-contiguous uint8 route of shape {shape}")
        same_device("x", x, "route", route)
        out = None
    else:
        if out is None:
            raise ValueError("out: the forward output is required without a route")
        check_array(out, "out", 4)
        same_device("x", x, "out", out)
        if tuple(out.shape) != shape:
            raise ValueError(f"out: expected shape {shape}, got {tuple(out.shape)}")
    return backends.for_array(x).conv2d_relu_backward(grad_out, x, w, out, route, st, pd, bool(bias),
                                                      bool(input_grad))


# ---------------------------------------------------------------------------- pooling
def _pool_geometry(x: Array, kernel_size: IntPair, stride: Optional[IntPair], padding: IntPair, what: str):
    check_array(x, "x", 4)
    k = pair(kernel_size, "kernel_size", 1)
    s = k if stride is None else pair(stride, "stride", 1)
    p = pair(padding, "padding", 0)
    if p[0] > k[0] // 2 or p[1] > k[1] // 2:
        raise ValueError(f"padding: {p} must be at most half the kernel size {k}")
    n, c, h, w = x.shape
    oh = window_output(h, k[0], s[0], p[0], f"{what} (height)")
    ow = window_output(w, k[1], s[1], p[1], f"{what} (width)")
    return k, s, p, (n, c, oh, ow)


def max_pool2d(x: Array, kernel_size: IntPair, stride: Optional[IntPair] = None,
               padding: IntPair = 0) -> Array:
    """Max over KH×KW windows of (N, C, H, W); padding never wins (it is -inf)."""
    k, s, p, _ = _pool_geometry(x, kernel_size, stride, padding, "max_pool2d")
    return backends.for_array(x).max_pool2d(x, k, s, p)


def max_pool2d_backward(grad_out: Array, x: Array, kernel_size: IntPair,
                        stride: Optional[IntPair] = None, padding: IntPair = 0) -> Array:
    """Routes each output gradient to its window's first maximum (row-major), like PyTorch."""
    k, s, p, out_shape = _pool_geometry(x, kernel_size, stride, padding, "max_pool2d")
    _check_grad(grad_out, x, out_shape)
    return backends.for_array(x).max_pool2d_backward(grad_out, x, k, s, p)


def avg_pool2d(x: Array, kernel_size: IntPair, stride: Optional[IntPair] = None,
               padding: IntPair = 0) -> Array:
    """Mean over KH×KW windows; padded zeros count in the divisor (PyTorch's default)."""
    k, s, p, _ = _pool_geometry(x, kernel_size, stride, padding, "avg_pool2d")
    return backends.for_array(x).avg_pool2d(x, k, s, p)


def avg_pool2d_backward(grad_out: Array, x: Array, kernel_size: IntPair,
                        stride: Optional[IntPair] = None, padding: IntPair = 0) -> Array:
    k, s, p, out_shape = _pool_geometry(x, kernel_size, stride, padding, "avg_pool2d")
    _check_grad(grad_out, x, out_shape)
    return backends.for_array(x).avg_pool2d_backward(grad_out, x, k, s, p)


def _check_grad(grad_out: Array, like: Array, shape) -> None:
    check_array(grad_out, "grad_out", len(shape))
    same_device("x", like, "grad_out", grad_out)
    if tuple(grad_out.shape) != tuple(shape):
        raise ValueError(f"grad_out: expected shape {tuple(shape)}, got {tuple(grad_out.shape)}")


# ---------------------------------------------------------------------------- activations
def relu(x: Array) -> Array:
    """max(x, 0), any shape."""
    check_array(x, "x")
    return backends.for_array(x).relu(x)


def relu_backward(grad_out: Array, x: Array) -> Array:
    """grad_out where x > 0, else 0 (x may be the input or the output of relu)."""
    check_array(x, "x")
    _check_grad(grad_out, x, x.shape)
    return backends.for_array(x).relu_backward(grad_out, x)


def softmax(x: Array, axis: int = -1) -> Array:
    """Numerically stable softmax along ``axis`` (any axis of any rank)."""
    check_array(x, "x")
    return backends.for_array(x).softmax(x, check_axis(axis, x.ndim))


def softmax_backward(grad_out: Array, y: Array, axis: int = -1) -> Array:
    """Given y = softmax(x): dx = y * (g - sum(g * y, axis))."""
    check_array(y, "y")
    _check_grad(grad_out, y, y.shape)
    return backends.for_array(y).softmax_backward(grad_out, y, check_axis(axis, y.ndim))


def log_softmax(x: Array, axis: int = -1) -> Array:
    check_array(x, "x")
    return backends.for_array(x).log_softmax(x, check_axis(axis, x.ndim))


def log_softmax_backward(grad_out: Array, y: Array, axis: int = -1) -> Array:
    """Given y = log_softmax(x): dx = g - exp(y) * sum(g, axis)."""
    check_array(y, "y")
    _check_grad(grad_out, y, y.shape)
    return backends.for_array(y).log_softmax_backward(grad_out, y, check_axis(axis, y.ndim))


# ---------------------------------------------------------------------------- loss
def _cross_entropy_call(name: str, logits: Array, labels: Array, *args: float) -> Array:
    """Checks, then the backend's ``name`` (cross_entropy or its backward).

    A backend that reads every label before its kernel runs and refuses one outside [0, C)
    (``CHECKS_LABELS``: the C++ binding) is left that pass, which ops would otherwise repeat
    (a NumPy reduction, ~1 us alone and ~10 us between a training step's GEMMs); its refusal is
    then reported in ops' words, as every other backend gets them before the call.
    """
    check_array(logits, "logits", 2)
    same_device("logits", logits, "labels", labels)
    backend = backends.for_array(logits)
    in_backend = getattr(backend, "CHECKS_LABELS", False)
    check_labels(labels, "labels", logits.shape[0], logits.shape[1], check_range=not in_backend)
    try:
        return getattr(backend, name)(logits, labels, *args)
    except ValueError:
        if in_backend:
            check_labels(labels, "labels", logits.shape[0], logits.shape[1])   # raises ops' message
        raise


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean over the batch of -log softmax(logits)[i, labels[i]]; logits (N, C), labels (N,)
    int64/int32. Returns a 0-d float32 array on the logits' device."""
    return _cross_entropy_call("cross_entropy", logits, labels)


def cross_entropy_backward(logits: Array, labels: Array, grad: float = 1.0) -> Array:
    """d(loss)/d(logits) = grad * (softmax(logits) - onehot(labels)) / N."""
    return _cross_entropy_call("cross_entropy_backward", logits, labels, real(grad, "grad"))


# ---------------------------------------------------------------------------- batch norm
def _check_channel_vectors(x: Array, **vectors: Optional[Array]) -> None:
    """Each given vector is float32 (C,) on x's device, C = x.shape[1]."""
    for name, v in vectors.items():
        if v is None:
            continue
        check_array(v, name, 1)
        same_device("x", x, name, v)
        if v.shape[0] != x.shape[1]:
            raise ValueError(f"{name}: expected shape ({x.shape[1]},) (one per channel of x {tuple(x.shape)}), "
                             f"got {tuple(v.shape)}")


def batch_norm(x: Array, weight: Optional[Array] = None, bias: Optional[Array] = None,
               running_mean: Optional[Array] = None, running_var: Optional[Array] = None,
               training: bool = True, momentum: float = 0.1, eps: float = 1e-5,
               unbiased: bool = True) -> Tuple[Array, Array, Array]:
    """Batch normalisation over every axis but the channels (axis 1) of x (N, C, *spatial).

    ``y = (x - mean) * invstd * weight + bias`` per channel, with ``invstd = 1/sqrt(var + eps)``.
    Training uses the batch's mean and biased variance and, when running statistics are given,
    updates them in place: ``r = (1 - momentum) * r + momentum * batch`` with the unbiased
    variance (PyTorch) or, with ``unbiased=False``, the biased one (Keras). Eval mode
    (``training=False``) uses the running statistics. weight/bias (C,) may be None (no affine).

    Returns ``(y, mean, invstd)``: y like x, and the (C,) statistics used, which
    ``batch_norm_backward`` takes.
    """
    check_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x: expected (N, C, ...) with at least 2 dimensions, got shape {tuple(x.shape)}")
    _check_channel_vectors(x, weight=weight, bias=bias, running_mean=running_mean, running_var=running_var)
    if (running_mean is None) != (running_var is None):
        raise ValueError("running_mean/running_var: give both or neither")
    for name, r in (("running_mean", running_mean), ("running_var", running_var)):
        if r is not None and training and not r.flags.writeable:
            raise ValueError(f"{name}: array is read-only (training updates it in place)")
    if not training and running_mean is None:
        raise ValueError("running_mean/running_var: required when training=False")
    if training and x.size // x.shape[1] == 1:
        raise ValueError(f"x: expected more than 1 value per channel when training, got shape {tuple(x.shape)}")
    if not 0.0 <= momentum <= 1.0:
        raise ValueError(f"momentum: expected a value in [0, 1], got {momentum!r}")
    if not (np.isfinite(eps) and eps > 0):
        raise ValueError(f"eps: expected a finite value > 0, got {eps!r}")
    return backends.for_array(x).batch_norm(x, weight, bias, running_mean, running_var, bool(training),
                                            float(momentum), float(eps), bool(unbiased))


def batch_norm_backward(grad_out: Array, x: Array, weight: Optional[Array], mean: Array, invstd: Array,
                        training: bool = True, affine: bool = False
                        ) -> Tuple[Array, Optional[Array], Optional[Array]]:
    """Gradients of ``batch_norm`` for (x, weight, bias): ``(gx, gw, gb)``.

    ``mean``/``invstd`` are the statistics the forward returned. In training the batch
    statistics depend on x, so ``gx = weight*invstd * (g - mean(g) - xhat * mean(g*xhat))``
    per channel; in eval ``gx = weight*invstd * g``. gw = sum(g*xhat) and gb = sum(g) per channel
    are returned when ``affine``, else None.
    """
    check_array(x, "x")
    if x.ndim < 2:
        raise ValueError(f"x: expected (N, C, ...) with at least 2 dimensions, got shape {tuple(x.shape)}")
    _check_grad(grad_out, x, x.shape)
    _check_channel_vectors(x, weight=weight, mean=mean, invstd=invstd)
    return backends.for_array(x).batch_norm_backward(grad_out, x, weight, mean, invstd, bool(training),
                                                     bool(affine))


# ---------------------------------------------------------------------------- optimizer updates
# The checks are public so that the optimizers (deepkern.optim), which update many parameters per
# step, can run them once per parameter set and then call the kernels for all parameters at once.
def check_update_state(param: Array, grad: Array, **state: Array) -> None:
    """An in-place update's arrays: float32, C-contiguous, one device, param's shape, param writable,
    no two sharing memory. ``state`` names the state buffers (``m=..., v=...``)."""
    check_array(param, "param")
    for name, arr in {"grad": grad, **state}.items():
        check_array(arr, name)
        same_device("param", param, name, arr)
        if arr.shape != param.shape:
            raise ValueError(f"{name}: expected shape {tuple(param.shape)} like param, got {tuple(arr.shape)}")
    if not param.flags.writeable:
        raise ValueError("param: array is read-only")
    check_no_overlap({"param": param, "grad": grad, **state})


def _check_hyper(**values: float) -> None:
    for name, v in values.items():
        v = real(v, name)
        if not np.isfinite(v) or v < 0:
            raise ValueError(f"{name}: expected a finite value >= 0, got {v!r}")


def check_sgd_args(velocity: Optional[Array], lr: float, momentum: float, weight_decay: float,
                   nesterov: bool) -> None:
    """The scalar arguments of ``sgd_update`` (and that a velocity is given with momentum)."""
    _check_hyper(lr=lr, momentum=momentum, weight_decay=weight_decay)
    if momentum > 0 and velocity is None:
        raise ValueError("velocity: required when momentum > 0")
    if nesterov and momentum <= 0:
        raise ValueError("nesterov: requires momentum > 0")


def check_adam_args(step: int, lr: float, beta1: float, beta2: float, eps: float, weight_decay: float) -> None:
    """The scalar arguments of ``adam_update``."""
    _check_hyper(lr=lr, eps=eps, weight_decay=weight_decay)
    if not (0 <= real(beta1, "beta1") < 1 and 0 <= real(beta2, "beta2") < 1):
        raise ValueError(f"beta1/beta2: expected values in [0, 1), got {beta1}, {beta2}")
    if isinstance(step, bool) or not isinstance(step, (int, np.integer)) or not 1 <= step <= INT64_MAX:
        raise ValueError(f"step: expected an int in [1, 2**63 - 1], got {step!r}")


def check_rmsprop_args(lr: float, alpha: float, eps: float, weight_decay: float) -> None:
    """The scalar arguments of ``rmsprop_update``."""
    _check_hyper(lr=lr, eps=eps, weight_decay=weight_decay)
    if not 0 <= real(alpha, "alpha") < 1:
        raise ValueError(f"alpha: expected a value in [0, 1), got {alpha}")


def sgd_update(param: Array, grad: Array, velocity: Optional[Array], lr: float, momentum: float = 0.0,
               weight_decay: float = 0.0, nesterov: bool = False) -> None:
    """In place, PyTorch's SGD: g = grad + wd*param; v = momentum*v + g;
    param -= lr * (g + momentum*v if nesterov else v). ``velocity`` may be None when momentum is 0."""
    check_sgd_args(velocity, lr, momentum, weight_decay, nesterov)
    state = {} if velocity is None else {"velocity": velocity}
    check_update_state(param, grad, **state)
    backends.for_array(param).sgd_update(param, grad, velocity, float(lr), float(momentum),
                                         float(weight_decay), bool(nesterov))


def adam_update(param: Array, grad: Array, m: Array, v: Array, step: int, lr: float = 1e-3,
                beta1: float = 0.9, beta2: float = 0.999, eps: float = 1e-8,
                weight_decay: float = 0.0) -> None:
    """In place, Adam with bias correction at ``step`` (1-based); weight decay is L2 added to the gradient."""
    check_adam_args(step, lr, beta1, beta2, eps, weight_decay)
    check_update_state(param, grad, m=m, v=v)
    backends.for_array(param).adam_update(param, grad, m, v, int(step), float(lr), float(beta1),
                                          float(beta2), float(eps), float(weight_decay))


def rmsprop_update(param: Array, grad: Array, square_avg: Array, lr: float = 1e-3, alpha: float = 0.99,
                   eps: float = 1e-8, weight_decay: float = 0.0) -> None:
    """In place, RMSprop (PyTorch's form): s = alpha*s + (1-alpha)*g^2; param -= lr*g/(sqrt(s)+eps)."""
    check_rmsprop_args(lr, alpha, eps, weight_decay)
    check_update_state(param, grad, square_avg=square_avg)
    backends.for_array(param).rmsprop_update(param, grad, square_avg, float(lr), float(alpha),
                                             float(eps), float(weight_decay))
