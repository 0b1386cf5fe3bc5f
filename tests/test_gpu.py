"""GPU backends (cuda: deepkern._cuda kernels; cupy: CuPy/cuBLAS) against the NumPy reference.

Same cases as the CPU backend tests (awkward shapes: 1, primes, sizes off the kernels' tiles),
plus shapes that take each kernel path (long softmax rows, float4-aligned GEMMs, the TF32
variant) and the error paths. Skipped as a whole on machines without a usable GPU.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from deepkern import backends, ops

from .backend_cases import (activation_cases, check_case, conv_cases, loss_cases, matmul_cases, optim_cases,
                            pool_cases)
from .conftest import assert_close, gpu_available, randn

pytestmark = pytest.mark.gpu

if not gpu_available():
    pytest.skip("no usable GPU (cuda: {}; cupy: {})".format(backends.reason_unavailable("cuda"),
                                                            backends.reason_unavailable("cupy")),
                allow_module_level=True)

import cupy  # noqa: E402  (only importable usefully once a GPU is known to be there)

if os.environ.get("DEEPKERN_GPU_TEST_NO_POOL") == "1":
    # benchmarks/gpu_check.sh under compute-sanitizer: one allocation per array, exact bounds
    cupy.cuda.set_allocator(None)

GPU_BACKENDS = [name for name in backends.GPU_BACKENDS if backends.available(name)]


@pytest.fixture(params=GPU_BACKENDS)
def gpu_backend(request):
    backends.set_backend(request.param)
    yield request.param
    cupy.cuda.get_current_stream().synchronize()  # surface asynchronous kernel faults in this test
    backends.set_backend(None)


def _check_all(cases, backend: str, rtol: float = 1e-4, atol: float = 1e-5) -> None:
    for case in cases:
        check_case(case, backend, cupy.asarray, cupy.asnumpy, rtol=rtol, atol=atol)


# Sizes hit: single elements, primes, one off the 64/128 tiles, float4-aligned multiples.
MATMUL_SIZES = [(1, 1, 1), (7, 13, 5), (1, 300, 1), (67, 131, 129), (128, 64, 256), (129, 257, 130)]


def test_matmul(gpu_backend, rng):
    _check_all(matmul_cases(rng, MATMUL_SIZES), gpu_backend, rtol=1e-4, atol=1e-4)


def test_matmul_large_k(gpu_backend, rng):
    a, b = randn(rng, 33, 4099), randn(rng, 4099, 65)
    _check_all([("matmul", (a, b), {})], gpu_backend, rtol=1e-3, atol=1e-3)


@pytest.mark.skipif("cuda" not in GPU_BACKENDS, reason="deepkern._cuda is not usable")
def test_matmul_tf32_variant(rng):
    from deepkern.backends import cuda as cuda_backend

    backends.set_backend("cuda")
    before = cuda_backend.matmul_variant()
    try:
        cuda_backend.set_matmul_variant("tf32")
        assert cuda_backend.matmul_variant() == "tf32"
        for m, k, n in [(1, 1, 1), (67, 131, 129), (256, 512, 128)]:
            a, b, bias = randn(rng, m, k), randn(rng, k, n), randn(rng, n)
            got = cupy.asnumpy(ops.matmul(cupy.asarray(a), cupy.asarray(b), bias=cupy.asarray(bias),
                                          activation="relu"))
            want = np.maximum(a.astype(np.float64) @ b + bias, 0).astype(np.float32)
            # TF32 keeps 10 mantissa bits of each input: ~1e-3 relative per product
            assert_close(got, want, rtol=5e-3, atol=5e-3 * np.sqrt(k), what=f"tf32 {m}x{k}x{n}")
    finally:
        cuda_backend.set_matmul_variant(before)


def test_conv2d(gpu_backend, rng):
    _check_all(conv_cases(rng, [
        ((2, 3, 9, 7), (5, 3, 3, 2), 1, 0),
        ((1, 2, 8, 11), (3, 2, 3, 3), (2, 3), (1, 2)),
        ((3, 1, 5, 5), (1, 1, 1, 1), 1, 0),
        ((4, 8, 28, 28), (16, 8, 5, 5), 1, 2),      # the seed CNN's shape family, wgrad split over the batch
        ((2, 67, 13, 13), (70, 67, 3, 3), 2, 1),    # channel counts off the 64-row tile
    ]), gpu_backend, rtol=1e-4, atol=1e-4)


def test_pooling(gpu_backend, rng):
    _check_all(pool_cases(rng, [
        ((2, 3, 8, 6), 2, None, 0),
        ((1, 2, 7, 9), (3, 2), (1, 2), (1, 1)),
        ((2, 1, 5, 5), 3, 2, 1),
        ((3, 5, 31, 29), 3, 1, 1),                  # overlapping windows: atomics in the max backward
    ]), gpu_backend)


def test_activations(gpu_backend, rng):
    _check_all(activation_cases(rng, [
        ((1,), 0), ((7, 13), 1), ((3, 5, 7), 0), ((3, 5, 7), 1),
        ((5, 1025), 1),   # just past a warp-per-row kernel: one block per row
        ((3, 4096), -1),  # float4 path of the block kernel
        ((2, 3001), 1),   # long row, not a multiple of 4
        ((4, 33, 6), 1),  # strided (inner > 1)
    ]), gpu_backend)


def test_cross_entropy(gpu_backend, rng):
    _check_all(loss_cases(rng, [(1, 1), (7, 10), (13, 3), (300, 1000)]), gpu_backend)


def test_optimizers(gpu_backend, rng):
    _check_all(optim_cases(rng, [(1,), (7, 13), (1031,)]), gpu_backend)


def test_results_stay_on_the_gpu(gpu_backend, rng):
    x = cupy.asarray(randn(rng, 4, 5))
    assert isinstance(ops.relu(x), cupy.ndarray)
    assert isinstance(ops.softmax(x), cupy.ndarray)
    loss = ops.cross_entropy(x, cupy.asarray(np.array([0, 1, 2, 3])))
    assert isinstance(loss, cupy.ndarray) and loss.shape == () and loss.dtype == np.float32


def test_non_default_stream(gpu_backend, rng):
    a, b = randn(rng, 65, 33), randn(rng, 33, 17)
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        got = ops.matmul(cupy.asarray(a), cupy.asarray(b))
    stream.synchronize()
    assert_close(cupy.asnumpy(got), (a.astype(np.float64) @ b).astype(np.float32), rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- error paths
def test_ops_refuse_mixed_devices(gpu_backend, rng):
    a = cupy.asarray(randn(rng, 3, 4))
    with pytest.raises(ValueError, match="b is on the CPU"):
        ops.matmul(a, randn(rng, 4, 2))


def test_ops_refuse_non_contiguous_gpu_arrays(gpu_backend, rng):
    a = cupy.asarray(randn(rng, 4, 6))[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.relu(a)


@pytest.mark.skipif("cuda" not in GPU_BACKENDS, reason="deepkern._cuda is not usable")
class TestCudaModuleChecks:
    """The extension's own checks: wrong arrays raise, nothing reaches a kernel."""

    def test_numpy_array_is_a_type_error(self):
        from deepkern import _cuda
        x = np.ones(4, np.float32)
        with pytest.raises(TypeError, match="cupy.ndarray"):
            _cuda.relu(x, cupy.empty(4, cupy.float32), cupy.cuda.get_current_stream().ptr)

    def test_wrong_dtype_is_a_type_error(self):
        from deepkern import _cuda
        with pytest.raises(TypeError, match="float32"):
            _cuda.relu(cupy.ones(4, cupy.float64), cupy.empty(4, cupy.float32), 0)

    def test_wrong_output_shape_is_a_value_error(self):
        from deepkern import _cuda
        with pytest.raises(ValueError, match="out: expected shape"):
            _cuda.relu(cupy.ones(4, cupy.float32), cupy.empty(5, cupy.float32), 0)

    def test_non_contiguous_is_a_value_error(self):
        from deepkern import _cuda
        x = cupy.ones((4, 6), cupy.float32)[:, ::2]
        with pytest.raises(ValueError, match="C-contiguous"):
            _cuda.relu(x, cupy.empty((4, 3), cupy.float32), 0)

    def test_host_pointer_is_refused_before_any_launch(self):
        # An object that claims to be a device array but points at host memory: the pointer
        # check (a CUDA call) refuses it, so no kernel faults and the context stays usable.
        from deepkern import _cuda
        host = np.ones(16, np.float32)

        class FakeDeviceArray:
            __cuda_array_interface__ = {"shape": (16,), "typestr": "<f4", "data": (host.ctypes.data, False),
                                        "version": 3, "strides": None}

        with pytest.raises(TypeError, match="not CUDA device memory"):
            _cuda.relu(FakeDeviceArray(), cupy.empty(16, cupy.float32), 0)
        _cuda.synchronize(0)  # nothing broke

    def test_unknown_matmul_variant_is_a_value_error(self):
        from deepkern import _cuda
        with pytest.raises(ValueError, match="fp32"):
            _cuda.set_matmul_variant("fp16")

    def test_device_query_lists_the_gpu(self):
        from deepkern import _cuda
        q = _cuda.device_query()
        assert q["device_count"] >= 1 and q["devices"][0]["name"]
