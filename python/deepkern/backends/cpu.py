"""The C++ backend: deepkern._cpu (its own thread pool, AVX-512/AVX2 chosen at run time).

Arguments arrive validated by ``deepkern.ops``; the extension checks them again and
releases the GIL around each kernel.
"""
from __future__ import annotations

import numpy as np

from .. import _cpu  # ImportError when the C++ module was not built: the registry reports it
from .._threads import register_threadpoolctl

register_threadpoolctl()  # threadpool_limits(...) then reaches the kernels' pool

matmul = _cpu.matmul
matmul_backward = _cpu.matmul_backward
conv2d = _cpu.conv2d
conv2d_backward = _cpu.conv2d_backward
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


def _labels64(labels: np.ndarray) -> np.ndarray:
    # The kernels read int64 labels; int32 ones (a few KB) are widened explicitly.
    return labels if labels.dtype == np.int64 else labels.astype(np.int64)


def cross_entropy(logits, labels):
    return _cpu.cross_entropy(logits, _labels64(labels))


def cross_entropy_backward(logits, labels, grad):
    return _cpu.cross_entropy_backward(logits, _labels64(labels), grad)
