"""The CUDA backend: deepkern._cuda kernels on CuPy arrays.

Outputs are allocated here with ``cupy.empty`` (so CuPy's memory pool serves them) and
passed to the extension, which launches on CuPy's current stream of the arrays' device.
Arguments arrive validated and normalised by ``deepkern.ops``; the extension checks them
again (dtype, layout, shape, device memory) and raises on any CUDA error.
"""
from __future__ import annotations

from typing import Optional, Tuple

from .._validate import device_checked_loss

try:
    import cupy
except ImportError:  # reported by unavailable_reason(); the module stays importable
    cupy = None

try:
    from .. import _cuda
except ImportError as _exc:
    _cuda = None
    _CUDA_IMPORT_ERROR: Optional[str] = f"deepkern._cuda is not built or cannot load ({_exc})"
else:
    _CUDA_IMPORT_ERROR = None

from .._validate import window_shape
from . import _fused

Pair = Tuple[int, int]


def unavailable_reason() -> Optional[str]:
    """Why this backend cannot run here, or None when it can."""
    if _cuda is None:
        return _CUDA_IMPORT_ERROR
    if cupy is None:
        return "cupy is not installed (pip install 'deepkern[cuda]')"
    query = _cuda.device_query()
    if query.get("device_count", 0) == 0:
        return f"no CUDA GPU is usable ({query.get('error', 'device count is 0')})"
    if query.get("kernel_image_error"):  # e.g. a GPU newer than every target and no PTX to JIT
        return f"deepkern._cuda has no kernels for this GPU ({query['kernel_image_error']})"
    return None


def _stream() -> int:
    # The handle of CuPy's current stream; the caller holds the arrays' device current.
    return cupy.cuda.get_current_stream().ptr


def _empty(shape):
    return cupy.empty(shape, dtype=cupy.float32)


# The extension launches on the current device, so every call runs with the first array's
# device current (CuPy's current stream is per device).

# ---------------------------------------------------------------------------- matmul
def matmul(a, b, bias, relu: bool, trans_a: bool, trans_b: bool):
    m = a.shape[1] if trans_a else a.shape[0]
    n = b.shape[0] if trans_b else b.shape[1]
    with a.device:
        out = _empty((m, n))
        _cuda.matmul(a, b, bias, relu, trans_a, trans_b, out, _stream())
    return out


def matmul_backward(grad_out, a, b, out, trans_a: bool, trans_b: bool, want_bias: bool, want_a: bool = True):
    # the CUDA kernel always writes grad_a; unwanted, it is dropped (the product is not skipped on GPUs)
    with a.device:
        grad_a = _empty(a.shape)
        grad_b = _empty(b.shape)
        grad_bias = _empty((grad_out.shape[1],)) if want_bias else None
        gmask = _empty(grad_out.shape) if out is not None else None
        _cuda.matmul_backward(grad_out, a, b, out, trans_a, trans_b, grad_a, grad_b, grad_bias, gmask, _stream())
    return (grad_a if want_a else None), grad_b, grad_bias


# ---------------------------------------------------------------------------- conv2d
def _out_size(h: int, w: int, kh: int, kw: int, stride: Pair, padding: Pair) -> Pair:
    return window_shape(h, w, (kh, kw), stride, padding)


def conv2d(x, w, bias, stride: Pair, padding: Pair):
    oh, ow = _out_size(x.shape[2], x.shape[3], w.shape[2], w.shape[3], stride, padding)
    with x.device:
        y = _empty((x.shape[0], w.shape[0], oh, ow))
        _cuda.conv2d(x, w, bias, stride, padding, y, _stream())
    return y


def conv2d_backward(grad_out, x, w, stride: Pair, padding: Pair, want_bias: bool, want_input: bool = True):
    with x.device:
        grad_x = _empty(x.shape) if want_input else None  # None: the input-gradient GEMM is skipped
        grad_w = _empty(w.shape)
        grad_b = _empty((w.shape[0],)) if want_bias else None
        _cuda.conv2d_backward(grad_out, x, w, stride, padding, grad_x, grad_w, grad_b, _stream())
    return grad_x, grad_w, grad_b


_composed = _fused.backend_ops(globals(), lambda x: cupy)   # this backend's ops, the routes in CuPy


def conv2d_relu(x, w, bias, stride: Pair, padding: Pair, pool: bool):
    with x.device:   # the routes' arrays on x's GPU
        return _composed[0](x, w, bias, stride, padding, pool)


def conv2d_relu_backward(grad_out, x, w, out, route, stride: Pair, padding: Pair, want_bias: bool,
                         want_input: bool = True):
    with x.device:
        return _composed[1](grad_out, x, w, out, route, stride, padding, want_bias, want_input)


# ---------------------------------------------------------------------------- pooling
def _pool(kernel_fn, x, kernel: Pair, stride: Pair, padding: Pair):
    oh, ow = _out_size(x.shape[2], x.shape[3], kernel[0], kernel[1], stride, padding)
    with x.device:
        y = _empty((x.shape[0], x.shape[1], oh, ow))
        kernel_fn(x, kernel, stride, padding, y, _stream())
    return y


def max_pool2d(x, kernel: Pair, stride: Pair, padding: Pair):
    return _pool(_cuda.max_pool2d, x, kernel, stride, padding)


def avg_pool2d(x, kernel: Pair, stride: Pair, padding: Pair):
    return _pool(_cuda.avg_pool2d, x, kernel, stride, padding)


def max_pool2d_backward(grad_out, x, kernel: Pair, stride: Pair, padding: Pair):
    with x.device:
        grad_x = _empty(x.shape)
        _cuda.max_pool2d_backward(grad_out, x, kernel, stride, padding, grad_x, _stream())
    return grad_x


def avg_pool2d_backward(grad_out, x, kernel: Pair, stride: Pair, padding: Pair):
    with x.device:
        grad_x = _empty(x.shape)
        _cuda.avg_pool2d_backward(grad_out, x, kernel, stride, padding, grad_x, _stream())
    return grad_x


# ---------------------------------------------------------------------------- activations
def relu(x):
    with x.device:
        y = _empty(x.shape)
        _cuda.relu(x, y, _stream())
    return y


def relu_backward(grad_out, x):
    with x.device:
        grad_x = _empty(x.shape)
        _cuda.relu_backward(grad_out, x, grad_x, _stream())
    return grad_x


def softmax(x, axis: int):
    with x.device:
        y = _empty(x.shape)
        _cuda.softmax(x, axis, y, _stream())
    return y


def softmax_backward(grad_out, y, axis: int):
    with y.device:
        grad_x = _empty(y.shape)
        _cuda.softmax_backward(grad_out, y, axis, grad_x, _stream())
    return grad_x


def log_softmax(x, axis: int):
    with x.device:
        y = _empty(x.shape)
        _cuda.log_softmax(x, axis, y, _stream())
    return y


def log_softmax_backward(grad_out, y, axis: int):
    with y.device:
        grad_x = _empty(y.shape)
        _cuda.log_softmax_backward(grad_out, y, axis, grad_x, _stream())
    return grad_x


# ---------------------------------------------------------------------------- loss
def cross_entropy(logits, labels):
    with logits.device:
        row_loss = _empty((logits.shape[0],))
        loss_and_count = _empty((2,))  # [mean loss, labels outside [0, C)]: the range check, on the device
        _cuda.cross_entropy(logits, labels, row_loss, loss_and_count, _stream())
    return device_checked_loss(loss_and_count, logits.shape[1])


def cross_entropy_backward(logits, labels, grad: float):
    with logits.device:
        grad_logits = _empty(logits.shape)
        _cuda.cross_entropy_backward(logits, labels, grad, grad_logits, _stream())
    return grad_logits


# ---------------------------------------------------------------------------- batch norm
def _workspace(x):
    n, c = x.shape[:2]
    s = x.size // (n * c)
    return cupy.empty((_cuda.batch_norm_workspace(n, c, s),), dtype=cupy.float64)


def batch_norm(x, weight, bias, running_mean, running_var, training: bool, momentum: float, eps: float,
               unbiased: bool):
    with x.device:
        y = _empty(x.shape)
        mean = _empty((x.shape[1],))
        invstd = _empty((x.shape[1],))
        _cuda.batch_norm(x, weight, bias, running_mean, running_var, training, momentum, eps, unbiased,
                         y, mean, invstd, _workspace(x), _stream())
    return y, mean, invstd


def batch_norm_backward(grad_out, x, weight, mean, invstd, training: bool, want_affine: bool):
    with x.device:
        grad_x = _empty(x.shape)
        grad_w = _empty((x.shape[1],)) if want_affine else None
        grad_b = _empty((x.shape[1],)) if want_affine else None
        _cuda.batch_norm_backward(grad_out, x, weight, mean, invstd, training, grad_x, grad_w, grad_b,
                                  _workspace(x), _stream())
    return grad_x, grad_w, grad_b


# ---------------------------------------------------------------------------- optimizer updates
def sgd_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    with param.device:
        _cuda.sgd_update(param, grad, velocity, lr, momentum, weight_decay, nesterov, _stream())


def adam_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    with param.device:
        _cuda.adam_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay, _stream())


def rmsprop_update(param, grad, square_avg, lr, alpha, eps, weight_decay):
    with param.device:
        _cuda.rmsprop_update(param, grad, square_avg, lr, alpha, eps, weight_decay, _stream())


# ---------------------------------------------------------------------------- controls
def matmul_variant() -> str:
    """The GEMM the CUDA matmul uses: 'fp32' or 'tf32'."""
    return _cuda.matmul_variant()


def set_matmul_variant(name: str) -> None:
    """Select 'fp32' (exact float32 products) or 'tf32' (tensor cores on sm_80+, ~1e-3 relative error).

    The environment variable DEEPKERN_CUDA_MATMUL sets the initial choice.
    """
    _cuda.set_matmul_variant(name)
