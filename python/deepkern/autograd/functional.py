"""Differentiable functions on Tensors: Tensors in, Tensor out (``nn.functional`` re-exports them).

Each function runs its forward through ``deepkern.ops`` (the compiled kernels) and records a
backward closure that calls the matching ``ops.*_backward``. Arrays are made float32 and
C-contiguous first, because ``ops`` is strict and never converts. The hot paths of training
(linear, relu, cross_entropy) check each array once: their backward calls the backend's kernel
directly with the arrays ``ops`` checked in the forward and the graph's own gradient (float32,
made C-contiguous and of the output's shape here); the kernels' bindings still check them. Layouts follow PyTorch:
activations NCHW, linear weights (out_features, in_features), conv weights (OC, C, KH, KW).
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple, Union

import numpy as np

from .. import backends, ops
from .._device import device_name, is_gpu_array, move
from .._precision import get_precision, precision
from .._validate import FLOAT32, LABEL_DTYPES
from .rng import get_generator
from .tensor import Array, Tensor, as_array, xp_of

__all__ = ["linear", "conv2d", "conv2d_relu", "max_pool2d", "avg_pool2d", "relu", "sigmoid", "tanh", "softmax",
           "log_softmax", "cross_entropy", "mse_loss", "dropout", "flatten", "binary_cross_entropy_with_logits",
           "batch_norm"]

IntPair = Union[int, Tuple[int, int]]


def _tensor(x: Any, name: str) -> Tensor:
    if isinstance(x, Tensor):
        return x
    try:
        return Tensor(x)
    except TypeError as exc:
        raise TypeError(f"{name}: expected a Tensor or array, got {type(x).__name__}") from exc


def _f32(x: Tensor, name: str) -> Array:
    """x.data as a float32 C-contiguous array (no copy when it already is)."""
    a = x.data
    if a.dtype is FLOAT32 and a.flags.c_contiguous:   # the usual case, in one test
        return a
    if a.dtype != np.float32:
        if a.dtype.kind not in "iufb":
            raise TypeError(f"{name}: expected a float32 tensor, got dtype {a.dtype}")
        a = a.astype(np.float32)
    if not a.flags.c_contiguous:
        a = xp_of(a).ascontiguousarray(a)
    return a


def _c(g: Array) -> Array:
    return g if g.flags.c_contiguous else xp_of(g).ascontiguousarray(g)


def _as_forward(name: str, fn: Callable[..., Any], *args: Any, **kwargs: Any) -> Any:
    """For a backward: ``fn(*args, **kwargs)`` in the compute precision its forward ran in
    (``dk.set_precision``), so the gradient products of a bf16 forward stay bf16 when
    ``backward()`` runs outside its block (the usual case, the same precision, enters no block)."""
    if get_precision() == name:
        return fn(*args, **kwargs)
    with precision(name):
        return fn(*args, **kwargs)


# ---------------------------------------------------------------------------- linear
def linear(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None,
           activation: Optional[str] = None) -> Tensor:
    """``activation(x @ weight.T + bias)``; x is (N, in) or (..., in), weight (out, in), bias (out,).

    One fused kernel call (``ops.matmul(..., trans_b=True)`` with bias and optional ReLU);
    the backward computes only the gradients some input needs.
    """
    x = _tensor(x, "x")
    w_shape, x_shape = weight.data.shape, x.data.shape   # (the Tensor properties copy them)
    if len(w_shape) != 2:
        raise ValueError(f"weight: expected a 2-D (out_features, in_features) tensor, got shape {weight.shape}")
    if len(x_shape) < 1 or x_shape[-1] != w_shape[1]:
        raise ValueError(f"x: expected last dimension {w_shape[1]} (in_features), got shape {x.shape}")
    xd = _f32(x, "x")
    if len(x_shape) != 2:
        xd = xd.reshape(-1, w_shape[1])
    wd = _f32(weight, "weight")
    bd = None if bias is None else _f32(bias, "bias")
    relu_ = activation == "relu"
    if activation is not None and not relu_:
        raise ValueError(f"activation: expected None or 'relu', got {activation!r}")
    out = ops.matmul(xd, wd, bd, activation, trans_b=True)   # (N, out)
    forward_precision = get_precision()

    def backward(g: Array) -> None:
        _as_forward(forward_precision, _linear_backward, g)

    def _linear_backward(g: Array) -> None:
        g = _c(g)
        if g.shape != out.shape:
            g = g.reshape(out.shape)
        kernels = backends.for_array(xd)   # xd, wd, out: checked by ops.matmul in the forward
        if weight.requires_grad:
            # one kernel call: the ReLU's mask (where the fused ReLU was positive), the products wanted
            # (not gx for a first layer, whose input needs no gradient), the bias sum
            want_bias = bias is not None and bias.requires_grad
            gx, gw, gb = kernels.matmul_backward(g, xd, wd, out if relu_ else None, False, True, want_bias,
                                                 x.requires_grad)
        else:  # a frozen weight: only x (and maybe the bias) need gradients
            if relu_:
                g = kernels.relu_backward(g, out)  # gradient passes where the fused ReLU was positive
            gx = kernels.matmul(g, wd, None, False, False, False) if x.requires_grad else None  # (N, out) @ (out, in)
            gw = None
            gb = g.sum(axis=0) if bias is not None and bias.requires_grad else None
        if gx is not None and x.requires_grad:
            x._accumulate(gx if len(x_shape) == 2 else gx.reshape(x_shape))
        if gw is not None and weight.requires_grad:
            weight._accumulate(gw)
        if gb is not None:
            bias._accumulate(gb)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._make(out if len(x_shape) == 2 else out.reshape(x_shape[:-1] + (w_shape[0],)), parents, backward)


# ---------------------------------------------------------------------------- conv / pool
def _accumulate_conv(x: Tensor, weight: Tensor, bias: Optional[Tensor], gx: Optional[Array], gw: Array,
                     gb: Optional[Array]) -> None:
    """Hands a convolution's gradients to the inputs that want them (gx/gb are None when not computed)."""
    if x.requires_grad:
        x._accumulate(gx)
    if weight.requires_grad:
        weight._accumulate(gw)
    if bias is not None and bias.requires_grad:
        bias._accumulate(gb)


def conv2d(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: IntPair = 1,
           padding: IntPair = 0) -> Tensor:
    """2-D cross-correlation: x (N, C, H, W), weight (OC, C, KH, KW), bias (OC,) -> (N, OC, OH, OW)."""
    x = _tensor(x, "x")
    xd = _f32(x, "x")
    wd = _f32(weight, "weight")
    bd = None if bias is None else _f32(bias, "bias")
    out = ops.conv2d(xd, wd, bd, stride, padding)
    forward_precision = get_precision()

    def backward(g: Array) -> None:
        want_bias = bias is not None and bias.requires_grad
        # an input that needs no gradient (the first layer's images) skips the dX work
        gx, gw, gb = _as_forward(forward_precision, ops.conv2d_backward, _c(g), xd, wd, stride, padding,
                                 bias=want_bias, input_grad=x.requires_grad)
        _accumulate_conv(x, weight, bias, gx, gw, gb)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._make(out, parents, backward)


def conv2d_relu(x: Tensor, weight: Tensor, bias: Optional[Tensor] = None, stride: IntPair = 1,
                padding: IntPair = 0, pool: bool = False) -> Tensor:
    """``relu(conv2d(x, weight, bias))``, then with ``pool=True`` ``max_pool2d(., 2)``: one fused
    kernel (``ops.conv2d_relu``) whose backward needs neither the conv output nor its gradient as
    whole arrays. Same values and gradients as the three functions in turn."""
    x = _tensor(x, "x")
    xd = _f32(x, "x")
    wd = _f32(weight, "weight")
    bd = None if bias is None else _f32(bias, "bias")
    out, route = ops.conv2d_relu(xd, wd, bd, stride, padding, pool)
    forward_precision = get_precision()

    def backward(g: Array) -> None:
        want_bias = bias is not None and bias.requires_grad
        gx, gw, gb = _as_forward(forward_precision, ops.conv2d_relu_backward, _c(g), xd, wd, out, route, stride,
                                 padding, bias=want_bias, input_grad=x.requires_grad)
        _accumulate_conv(x, weight, bias, gx, gw, gb)

    parents = (x, weight) if bias is None else (x, weight, bias)
    return Tensor._make(out, parents, backward)


def max_pool2d(x: Tensor, kernel_size: IntPair, stride: Optional[IntPair] = None,
               padding: IntPair = 0) -> Tensor:
    """Max over windows of (N, C, H, W); stride defaults to kernel_size."""
    x = _tensor(x, "x")
    xd = _f32(x, "x")
    out = ops.max_pool2d(xd, kernel_size, stride, padding)

    def backward(g: Array) -> None:
        x._accumulate(ops.max_pool2d_backward(_c(g), xd, kernel_size, stride, padding))
    return Tensor._make(out, (x,), backward)


def avg_pool2d(x: Tensor, kernel_size: IntPair, stride: Optional[IntPair] = None,
               padding: IntPair = 0) -> Tensor:
    """Mean over windows of (N, C, H, W) (padding counts in the divisor)."""
    x = _tensor(x, "x")
    xd = _f32(x, "x")
    out = ops.avg_pool2d(xd, kernel_size, stride, padding)

    def backward(g: Array) -> None:
        x._accumulate(ops.avg_pool2d_backward(_c(g), xd, kernel_size, stride, padding))
    return Tensor._make(out, (x,), backward)


# ---------------------------------------------------------------------------- activations
def relu(x: Tensor) -> Tensor:
    """max(x, 0)."""
    x = _tensor(x, "x")
    out = ops.relu(_f32(x, "x"))

    def backward(g: Array) -> None:   # out: checked by ops.relu
        x._accumulate(backends.for_array(out).relu_backward(_c(g).reshape(out.shape), out))
    return Tensor._make(out, (x,), backward)


def sigmoid(x: Tensor) -> Tensor:
    """1 / (1 + exp(-x)), computed as (1 + tanh(x/2)) / 2 so no exp overflows."""
    x = _tensor(x, "x")
    xp = xp_of(x.data)
    xd = _f32(x, "x")
    out = xp.tanh(xd * np.float32(0.5))
    out += 1
    out *= 0.5

    def backward(g: Array) -> None:
        x._accumulate(g * (out * (1 - out)))
    return Tensor._make(out, (x,), backward)


def tanh(x: Tensor) -> Tensor:
    x = _tensor(x, "x")
    out = xp_of(x.data).tanh(_f32(x, "x"))

    def backward(g: Array) -> None:
        x._accumulate(g * (1 - out * out))
    return Tensor._make(out, (x,), backward)


def softmax(x: Tensor, axis: int = -1) -> Tensor:
    """Numerically stable softmax along ``axis``."""
    x = _tensor(x, "x")
    out = ops.softmax(_f32(x, "x"), axis)

    def backward(g: Array) -> None:
        x._accumulate(ops.softmax_backward(_c(g), out, axis))
    return Tensor._make(out, (x,), backward)


def log_softmax(x: Tensor, axis: int = -1) -> Tensor:
    """log(softmax(x)) along ``axis``, computed stably."""
    x = _tensor(x, "x")
    out = ops.log_softmax(_f32(x, "x"), axis)

    def backward(g: Array) -> None:
        x._accumulate(ops.log_softmax_backward(_c(g), out, axis))
    return Tensor._make(out, (x,), backward)


def flatten(x: Tensor, start_axis: int = 1) -> Tensor:
    """Collapse axes from ``start_axis`` on: (N, C, H, W) -> (N, C*H*W)."""
    return _tensor(x, "x").flatten(start_axis)


# ---------------------------------------------------------------------------- losses
def _labels(labels: Any, logits: Array) -> Array:
    """Class labels as a C-contiguous int64/int32 array on the logits' device."""
    if isinstance(labels, Tensor):
        labels = labels.data
    if (type(labels) is np.ndarray and type(logits) is np.ndarray and labels.dtype in LABEL_DTYPES
            and labels.flags.c_contiguous):
        return labels   # the usual case: already what ops takes
    if not (isinstance(labels, np.ndarray) or is_gpu_array(labels)):
        labels = np.asarray(labels)
    if labels.dtype.kind not in "iu":
        if labels.dtype.kind == "f" and labels.size and bool((labels == labels.astype(np.int64)).all()):
            labels = labels.astype(np.int64)  # float labels holding whole numbers (e.g. from a float tensor)
        else:
            raise TypeError(f"labels: expected integer class labels, got dtype {labels.dtype}")
    if labels.dtype not in LABEL_DTYPES:
        labels = labels.astype(np.int64)
    return move(labels, device_name(logits))  # onto the logits' device, C-contiguous


def cross_entropy(logits: Tensor, labels: Any) -> Tensor:
    """Mean over the batch of -log softmax(logits)[i, labels[i]] (one fused kernel).

    logits is (N, C); labels is an integer array or Tensor of shape (N,). Returns a 0-d Tensor.
    """
    logits = _tensor(logits, "logits")
    ld = _f32(logits, "logits")
    lab = _labels(labels, ld)
    loss = ops.cross_entropy(ld, lab)

    def backward(g: Array) -> None:   # ld, lab: checked by ops.cross_entropy (the labels' range too)
        logits._accumulate(backends.for_array(ld).cross_entropy_backward(ld, lab, float(g)))
    return Tensor._make(loss, (logits,), backward)


def mse_loss(pred: Tensor, target: Any, reduction: str = "mean") -> Tensor:
    """Squared error between ``pred`` and ``target`` (same shape), averaged ("mean") or summed ("sum")."""
    if reduction not in ("mean", "sum"):
        raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
    pred = _tensor(pred, "pred")
    target = target if isinstance(target, Tensor) else Tensor._wrap(_like(target, pred.data))
    if pred.shape != target.shape:
        raise ValueError(f"target: expected shape {pred.shape} like pred, got {target.shape}")
    diff = pred.data - target.data
    scale = np.float32(2.0 / diff.size if reduction == "mean" else 2.0)
    total = (diff * diff).sum()
    loss = total / diff.size if reduction == "mean" else total

    def backward(g: Array) -> None:
        d = diff * (scale * g)
        if pred.requires_grad:
            pred._accumulate(d)
        if target.requires_grad:
            target._accumulate(-d)
    xp = xp_of(pred.data)
    return Tensor._make(xp.asarray(loss, dtype=np.float32), (pred, target), backward)



def binary_cross_entropy_with_logits(logits: Tensor, targets: Any) -> Tensor:
    """Mean binary cross-entropy of ``sigmoid(logits)`` against targets in [0, 1] (same shape).

    Computed from the logits in the stable form ``max(z, 0) - z*t + log(1 + exp(-|z|))``, never
    as the log of a probability, so large ``|z|`` neither overflows nor loses the gradient
    (``sigmoid(z) - t``).
    """
    logits = _tensor(logits, "logits")
    z = _f32(logits, "logits")
    t = targets.data if isinstance(targets, Tensor) else _like(targets, z)
    if t.shape != z.shape:
        raise ValueError(f"targets: expected shape {z.shape} like logits, got {t.shape}")
    xp = xp_of(z)
    per_element = xp.maximum(z, 0) - z * t + xp.log1p(xp.exp(-xp.abs(z)))
    loss = per_element.sum(dtype=np.float64) / z.size

    def backward(g: Array) -> None:
        sig = np.float32(0.5) * (xp.tanh(np.float32(0.5) * z) + np.float32(1.0))  # sigmoid, no overflow
        logits._accumulate((sig - t) * np.float32(float(g) / z.size))
    return Tensor._make(xp.asarray(loss, dtype=np.float32), (logits,), backward)

def _like(values: Any, ref: Array) -> Array:
    """values as a float32 array on ref's device."""
    xp = xp_of(ref)
    arr = as_array(values, np.float32)
    return arr if xp is np else xp.asarray(arr)


# ---------------------------------------------------------------------------- dropout
# One CuPy generator per (host generator, GPU), seeded once from the host generator, so masks
# drawn on a GPU follow dk.manual_seed / an explicit rng without drawing on the host. The few
# most recent are kept (each holds GPU state).
_GPU_GENERATORS: dict = {}
_GPU_GENERATORS_KEPT = 8


def _uniform(shape: Tuple[int, ...], like: Array, rng: Optional[np.random.Generator]) -> Array:
    """float32 uniform [0, 1) draws of ``shape`` on ``like``'s device."""
    host = rng or get_generator()
    xp = xp_of(like)
    if xp is np:
        return host.random(shape, dtype=np.float32)
    key = (id(host), like.device.id)
    entry = _GPU_GENERATORS.get(key)
    if entry is None or entry[0] is not host:
        with like.device:
            entry = (host, xp.random.default_rng(int(host.integers(2**63))))
        _GPU_GENERATORS.pop(key, None)
        while len(_GPU_GENERATORS) >= _GPU_GENERATORS_KEPT:
            _GPU_GENERATORS.pop(next(iter(_GPU_GENERATORS)))
        _GPU_GENERATORS[key] = entry
    with like.device:
        return entry[1].random(shape, dtype=np.float32)


def dropout(x: Tensor, p: float = 0.5, training: bool = True,
            rng: Optional[np.random.Generator] = None) -> Tensor:
    """Zero each element with probability ``p`` and scale the rest by 1/(1-p) while training
    (inverted dropout); the identity otherwise. Masks come from ``rng`` or the global generator
    (``dk.manual_seed``) and are drawn on the array's device (a CuPy generator seeded from that
    generator for GPU arrays), never on the host and copied."""
    if not (isinstance(p, (int, float)) and 0.0 <= p <= 1.0) or isinstance(p, bool):
        raise ValueError(f"p: expected a probability in [0, 1], got {p!r}")
    x = _tensor(x, "x")
    if not training or p == 0.0:
        return x
    xp = xp_of(x.data)
    if p == 1.0:
        mask = xp.zeros(x.shape, dtype=np.float32)
    else:
        mask = (_uniform(x.shape, x.data, rng) >= p).astype(np.float32)
        mask *= np.float32(1.0 / (1.0 - p))
    out = x.data * mask

    def backward(g: Array) -> None:
        x._accumulate(g * mask)
    return Tensor._make(out, (x,), backward)


# ---------------------------------------------------------------------------- batch norm
def _buffer(value: Any, name: str) -> Optional[Array]:
    """A running-statistics buffer's array (updated in place by the op), or None."""
    if value is None:
        return None
    data = value.data if isinstance(value, Tensor) else value
    if data.dtype != np.float32 or not data.flags.c_contiguous:
        raise TypeError(f"{name}: expected a float32 C-contiguous buffer (it is updated in place)")
    return data


def batch_norm(x: Tensor, running_mean: Any = None, running_var: Any = None, weight: Optional[Tensor] = None,
               bias: Optional[Tensor] = None, training: bool = False, momentum: float = 0.1, eps: float = 1e-5,
               unbiased: bool = True) -> Tensor:
    """Batch normalisation of x (N, C, *spatial) per channel (PyTorch's ``F.batch_norm``).

    While ``training`` (or without running statistics) the batch's mean and biased variance
    normalise, and the running statistics (Tensors or arrays of shape (C,), updated in place)
    move by ``momentum`` towards the batch's, with the unbiased variance (``unbiased=False``:
    the biased one, as Keras does). Otherwise the running statistics normalise. ``weight`` and
    ``bias`` (C,) scale and shift the result; one fused kernel each way (``ops.batch_norm``).
    """
    x = _tensor(x, "x")
    xd = _f32(x, "x")
    wd = None if weight is None else _f32(weight, "weight")
    bd = None if bias is None else _f32(bias, "bias")
    rm, rv = _buffer(running_mean, "running_mean"), _buffer(running_var, "running_var")
    use_batch = bool(training) or rm is None
    out, mean, invstd = ops.batch_norm(xd, wd, bd, rm, rv, use_batch, momentum, eps, unbiased)

    def backward(g: Array) -> None:
        want_w = weight is not None and weight.requires_grad
        want_b = bias is not None and bias.requires_grad
        gx, gw, gb = ops.batch_norm_backward(_c(g), xd, wd, mean, invstd, use_batch, affine=want_w or want_b)
        if x.requires_grad:
            x._accumulate(gx)
        if want_w:
            weight._accumulate(gw)
        if want_b:
            bias._accumulate(gb)

    parents = tuple(t for t in (x, weight, bias) if t is not None)
    return Tensor._make(out, parents, backward)


# Tensor's methods of the same names: x.relu() is relu(x), x.softmax(axis) is softmax(x, axis)
Tensor.relu = relu  # type: ignore[attr-defined]
Tensor.sigmoid = sigmoid  # type: ignore[attr-defined]
Tensor.tanh = tanh  # type: ignore[attr-defined]
Tensor.softmax = softmax  # type: ignore[attr-defined]
Tensor.log_softmax = log_softmax  # type: ignore[attr-defined]
