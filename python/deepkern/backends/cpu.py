"""The C++ backend: deepkern._cpu (its own thread pool, AVX-512/AVX2 chosen at run time).

Arguments arrive validated by ``deepkern.ops``; the extension checks them again and
releases the GIL around each kernel.
"""
from __future__ import annotations

import numpy as np

from .. import _cpu  # ImportError when the C++ module was not built: the registry reports it
from .._precision import get_precision
from .._threads import register_threadpoolctl

register_threadpoolctl()  # threadpool_limits(...) then reaches the kernels' pool

max_pool2d = _cpu.max_pool2d
max_pool2d_backward = _cpu.max_pool2d_backward
avg_pool2d = _cpu.avg_pool2d
avg_pool2d_backward = _cpu.avg_pool2d_backward
relu = _cpu.relu
relu_backward = _cpu.relu_backward
softmax = _cpu.softmax
softmax_backward = _cpu.softmax_backward
log_softmax = _cpu.log_softmax
log_softmax_backward = _cpu.log_softmax_backward
sgd_update = _cpu.sgd_update
adam_update = _cpu.adam_update
rmsprop_update = _cpu.rmsprop_update
batch_norm = _cpu.batch_norm
batch_norm_backward = _cpu.batch_norm_backward


# matmul and its backward: with precision "bf16" the products of bf16-rounded operands, fp32 sums
# (deepkern._precision); the backward in one call, its bias gradient an fp32 sum. Every argument goes
# by position, the last one ``bf16``: pybind11 matches a keyword argument in ~0.4 us, as much as a
# small matmul's whole kernel time.
def matmul(a, b, bias, relu, trans_a, trans_b):
    return _cpu.matmul(a, b, bias, relu, trans_a, trans_b, get_precision() == "bf16")


def matmul_backward(grad_out, a, b, out, trans_a, trans_b, want_bias, want_a=True):
    return _cpu.matmul_backward(grad_out, a, b, out, trans_a, trans_b, want_bias, want_a,
                                get_precision() == "bf16")


# conv2d and the fused conv layers: with precision "bf16" the products of bf16-rounded operands,
# fp32 sums (deepkern._precision)
def conv2d(x, w, bias, stride, padding):
    return _cpu.conv2d(x, w, bias, stride, padding, get_precision() == "bf16")


def conv2d_backward(grad_out, x, w, stride, padding, want_bias, want_input=True):
    return _cpu.conv2d_backward(grad_out, x, w, stride, padding, want_bias, want_input,
                                get_precision() == "bf16")


def conv2d_relu(x, w, bias, stride, padding, pool):
    return _cpu.conv2d_relu(x, w, bias, stride, padding, pool, get_precision() == "bf16")


def conv2d_relu_backward(grad_out, x, w, out, route, stride, padding, want_bias, want_input):
    return _cpu.conv2d_relu_backward(grad_out, x, w, out, route, stride, padding, want_bias, want_input,
                                     get_precision() == "bf16")


# cross_entropy and its backward read every label before the kernel and refuse one outside [0, C)
# with ValueError (the binding's checked_labels): ops leaves that pass to them
CHECKS_LABELS = True


def _labels64(labels: np.ndarray) -> np.ndarray:
    # The kernels read int64 labels; int32 ones (a few KB) are widened explicitly.
    return labels if labels.dtype == np.int64 else labels.astype(np.int64)


def cross_entropy(logits, labels):
    return _cpu.cross_entropy(logits, _labels64(labels))


def cross_entropy_backward(logits, labels, grad):
    return _cpu.cross_entropy_backward(logits, _labels64(labels), grad)


# The optimizers' step: one call for all parameters (deepkern.optim; not part of the op contract,
# which backends without them satisfy with one <name>_update call per parameter).
sgd_update_many = _cpu.sgd_update_many
adam_update_many = _cpu.adam_update_many
rmsprop_update_many = _cpu.rmsprop_update_many
