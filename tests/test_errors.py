"""Bad input is refused before any kernel runs, with an error naming the argument."""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends



def f32(*shape):
    return np.random.default_rng(1).standard_normal(shape).astype(np.float32)


@pytest.mark.parametrize("call,exc,match", [
    (lambda: dk.ops.matmul(f32(3, 4).astype(np.float64), f32(4, 5)), TypeError, "a: expected dtype float32"),
    (lambda: dk.ops.matmul(f32(3, 4), f32(4, 5).astype(np.int32)), TypeError, "b: expected dtype float32"),
    (lambda: dk.ops.matmul([[1.0]], f32(1, 1)), TypeError, "a: expected a numpy.ndarray"),
    (lambda: dk.ops.matmul(f32(3, 4, 1), f32(4, 5)), ValueError, "a: expected a 2-D array"),
    (lambda: dk.ops.matmul(f32(3, 4), f32(5, 5)), ValueError, "inner dimensions differ"),
    (lambda: dk.ops.matmul(f32(3, 4), f32(5, 4), trans_b=False), ValueError, "inner dimensions"),
    (lambda: dk.ops.matmul(f32(3, 4), f32(4, 5), bias=f32(4)), ValueError, r"bias: expected shape \(5,\)"),
    (lambda: dk.ops.matmul(f32(3, 4), f32(4, 5), activation="gelu"), ValueError, "activation"),
    (lambda: dk.ops.matmul(f32(0, 4), f32(4, 5)), ValueError, "a: expected a non-empty array"),
    (lambda: dk.ops.matmul_backward(f32(3, 6), f32(3, 4), f32(4, 5)), ValueError, r"grad_out: expected shape \(3, 5\)"),
    (lambda: dk.ops.matmul_backward(f32(3, 5), f32(3, 4), f32(4, 5), activation="relu"), ValueError, "out:"),
    (lambda: dk.ops.conv2d(f32(2, 3, 8), f32(4, 3, 3, 3)), ValueError, "x: expected a 4-D array"),
    (lambda: dk.ops.conv2d(f32(2, 3, 8, 8), f32(4, 2, 3, 3)), ValueError, "w: expected 3 input channels"),
    (lambda: dk.ops.conv2d(f32(2, 3, 8, 8), f32(4, 3, 3, 3), stride=0), ValueError, "stride: expected values >= 1"),
    (lambda: dk.ops.conv2d(f32(2, 3, 8, 8), f32(4, 3, 3, 3), padding=-1), ValueError, "padding: expected values >= 0"),
    (lambda: dk.ops.conv2d(f32(2, 3, 8, 8), f32(4, 3, 3, 3), stride=1.5), TypeError, "stride"),
    (lambda: dk.ops.conv2d(f32(2, 3, 2, 2), f32(4, 3, 3, 3)), ValueError, "larger than the padded input"),
    (lambda: dk.ops.conv2d(f32(2, 3, 8, 8), f32(4, 3, 3, 3), bias=f32(3)), ValueError, "bias"),
    (lambda: dk.ops.conv2d_backward(f32(2, 4, 5, 5), f32(2, 3, 8, 8), f32(4, 3, 3, 3)), ValueError, "grad_out"),
    (lambda: dk.ops.max_pool2d(f32(1, 1, 4, 4), 0), ValueError, "kernel_size"),
    (lambda: dk.ops.max_pool2d(f32(1, 1, 4, 4), 2, stride=0), ValueError, "stride"),
    (lambda: dk.ops.max_pool2d(f32(1, 1, 4, 4), 2, padding=2), ValueError, "padding"),
    (lambda: dk.ops.avg_pool2d(f32(1, 1, 2, 2), 3), ValueError, "larger than the padded input"),
    (lambda: dk.ops.avg_pool2d(f32(1, 4, 4), 2), ValueError, "x: expected a 4-D array"),
    (lambda: dk.ops.max_pool2d_backward(f32(1, 1, 3, 3), f32(1, 1, 4, 4), 2), ValueError, "grad_out"),
    (lambda: dk.ops.softmax(f32(3, 4), axis=2), ValueError, "axis: 2 is out of range"),
    (lambda: dk.ops.log_softmax(f32(3, 4), axis=-3), ValueError, "axis"),
    (lambda: dk.ops.softmax(f32(3, 4), axis=1.0), TypeError, "axis"),
    (lambda: dk.ops.relu_backward(f32(3, 4), f32(4, 3)), ValueError, "grad_out"),
    (lambda: dk.ops.cross_entropy(f32(4, 3), np.array([0, 1, 2, 3])), ValueError, "label 3 is out of range"),
    (lambda: dk.ops.cross_entropy(f32(4, 3), np.array([0, -1, 2, 1])), ValueError, "label -1 is out of range"),
    (lambda: dk.ops.cross_entropy(f32(4, 3), np.array([0., 1, 2, 1])), TypeError, "labels: expected dtype int64"),
    (lambda: dk.ops.cross_entropy(f32(4, 3), np.array([0, 1, 2])), ValueError, r"labels: expected shape \(4,\)"),
    (lambda: dk.ops.cross_entropy(f32(4), np.array([0, 1, 2, 1])), ValueError, "logits: expected a 2-D array"),
    (lambda: dk.ops.sgd_update(f32(3), f32(4), None, 0.1), ValueError, "grad: expected shape"),
    (lambda: dk.ops.sgd_update(f32(3), f32(3), None, 0.1, momentum=0.9), ValueError, "velocity: required"),
    (lambda: dk.ops.sgd_update(f32(3), f32(3), None, -0.1), ValueError, "lr"),
    (lambda: dk.ops.adam_update(f32(3), f32(3), f32(3), f32(3), 0), ValueError, "step"),
    (lambda: dk.ops.adam_update(f32(3), f32(3), f32(3), f32(3), 1, beta1=1.0), ValueError, "beta1"),
    (lambda: dk.ops.rmsprop_update(f32(3), f32(3), f32(2), 0.1), ValueError, "square_avg"),
])
def test_bad_input_raises_clear_error(call, exc, match):
    with pytest.raises(exc, match=match):
        call()


def test_non_contiguous_input_is_refused_not_misread():
    a = f32(8, 6)[:, ::2]  # a strided view: reading it as dense would give wrong numbers
    with pytest.raises(ValueError, match="a: expected a C-contiguous array"):
        dk.ops.matmul(a, f32(3, 4))
    with pytest.raises(ValueError, match="x: expected a C-contiguous"):
        dk.ops.relu(f32(4, 4).T)


def test_arrays_too_large_for_32_bit_indices_are_refused_without_touching_memory():
    # a zero-stride view claims 2**31 rows over a 4-byte buffer; it must be refused by shape alone
    huge = np.lib.stride_tricks.as_strided(np.zeros(1, np.float32), shape=(2**31, 1), strides=(0, 0))
    with pytest.raises(ValueError, match="32-bit index limit"):
        dk.ops.matmul(huge, f32(1, 1))


def test_read_only_param_is_refused():
    p = f32(3)
    p.flags.writeable = False
    with pytest.raises(ValueError, match="param: array is read-only"):
        dk.ops.sgd_update(p, f32(3), None, 0.1)


def test_extension_checks_its_own_arguments():
    """The C++ binding refuses bad arrays even when called around deepkern.ops."""
    if not backends.available("cpu"):
        pytest.skip("the C++ module is not built")
    from deepkern import _cpu
    with pytest.raises(TypeError, match="float32"):
        _cpu.relu(np.zeros(3, np.float64))
    with pytest.raises(ValueError, match="C-contiguous"):
        _cpu.relu(f32(4, 4).T)
    with pytest.raises(ValueError, match="inner dimensions"):
        _cpu.matmul(f32(2, 3), f32(4, 2), None, False, False, False)
    with pytest.raises(ValueError, match="out of range"):
        _cpu.cross_entropy(f32(2, 3), np.array([0, 5]))
    with pytest.raises(ValueError, match="larger than the padded input"):
        _cpu.conv2d(f32(1, 1, 2, 2), f32(1, 1, 3, 3), None, (1, 1), (0, 0))


def test_unknown_or_unavailable_backend_is_a_clear_error():
    with pytest.raises(ValueError, match="unknown backend"):
        dk.set_backend("fortran")
    for name in ("cuda", "cupy", "numba"):
        if not backends.available(name):
            with pytest.raises(RuntimeError, match=f"backend '{name}' is not available"):
                dk.set_backend(name)


def test_mixed_devices_are_refused():
    class FakeGpuArray:  # anything exposing the CUDA array interface counts as a GPU array
        __cuda_array_interface__ = {"shape": (4, 5), "typestr": "<f4", "data": (0, False), "version": 3}
        shape, ndim, dtype, size = (4, 5), 2, np.dtype(np.float32), 20

        class flags:  # noqa: N801
            c_contiguous = True

    with pytest.raises(ValueError, match="b is on the GPU but a is on the CPU"):
        dk.ops.matmul(f32(3, 4), FakeGpuArray())
