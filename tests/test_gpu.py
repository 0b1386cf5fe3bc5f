"""GPU backends (cuda: deepkern._cuda kernels; cupy: CuPy/cuBLAS) against the NumPy reference.

Same cases as the CPU backend tests (awkward shapes: 1, primes, sizes off the kernels' tiles),
plus shapes that take each kernel path (long softmax rows, float4-aligned GEMMs, both SIMT tiles,
the TF32 variant forward and backward with transposes), operands offset from their allocation
(the unaligned paths), -inf/NaN inputs, and the error paths. Skipped as a whole on machines
without a usable GPU; on a GPU machine both backends run, and a missing cuda backend fails
(conftest.require_gpu_backend). The same kernels run on the CPU emulator in test_cuda_emu*.py.
"""
from __future__ import annotations

import os

import numpy as np
import pytest

from deepkern import backends, ops

from .backend_cases import (activation_cases, check_case, conv_cases, loss_cases, matmul_cases, optim_cases,
                            pool_cases)
from .gpu_semantics import NAN_INF_CASES, compare_case
from .conftest import assert_close, gpu_available, randn, require_gpu_backend

pytestmark = pytest.mark.gpu

if not gpu_available():
    pytest.skip("no usable GPU (cuda: {}; cupy: {})".format(backends.reason_unavailable("cuda"),
                                                            backends.reason_unavailable("cupy")),
                allow_module_level=True)

import cupy  # noqa: E402  (only importable usefully once a GPU is known to be there)

if os.environ.get("DEEPKERN_GPU_TEST_NO_POOL") == "1":
    # benchmarks/gpu_check.sh under compute-sanitizer: one allocation per array, exact bounds
    cupy.cuda.set_allocator(None)

GPU_BACKENDS = list(backends.GPU_BACKENDS)  # never filtered: a missing backend fails, see the fixture


@pytest.fixture(params=GPU_BACKENDS)
def gpu_backend(request):
    require_gpu_backend(request.param)
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


def test_matmul_simt_128_tile(gpu_backend, rng):
    # the launcher takes the 128 tile once there are at least as many 128-tiles as SMs
    sms = cupy.cuda.Device().attributes["MultiProcessorCount"]
    edge = 128 * int(np.ceil(np.sqrt(sms))) + 1
    a, b, bias = randn(rng, edge, 33), randn(rng, 33, edge), randn(rng, edge)
    _check_all([("matmul", (a, b), dict(bias=bias, activation="relu"))], gpu_backend, rtol=1e-4, atol=1e-4)


@pytest.fixture
def tf32():
    require_gpu_backend("cuda")
    from deepkern.backends import cuda as cuda_backend

    backends.set_backend("cuda")
    before = cuda_backend.matmul_variant()
    cuda_backend.set_matmul_variant("tf32")
    assert cuda_backend.matmul_variant() == "tf32"
    yield
    cuda_backend.set_matmul_variant(before)
    backends.set_backend(None)


def test_matmul_tf32_variant(tf32, rng):
    # forward and backward, every transpose, fused bias+ReLU; TF32 keeps 10 mantissa bits of each
    # input (~1e-3 relative per product), so the bound grows with the reduction length
    for case in matmul_cases(rng, [(1, 1, 1), (67, 131, 129), (256, 512, 128)]):
        k = max(case[1][0].shape + case[1][1].shape)
        check_case(case, "cuda", cupy.asarray, cupy.asnumpy, rtol=5e-3, atol=5e-3 * np.sqrt(k))


def _offset(a: np.ndarray) -> "cupy.ndarray":
    """a on the GPU, starting one float into its allocation: C-contiguous, not 16-byte aligned."""
    buf = cupy.empty(a.size + 1, dtype=a.dtype)
    view = buf[1:].reshape(a.shape)
    view[...] = cupy.asarray(a)
    return view


def test_offset_operands(gpu_backend, rng):
    a, b = randn(rng, 68, 36), randn(rng, 36, 132)
    x, img, w = randn(rng, 3, 2048), randn(rng, 2, 3, 9, 8), randn(rng, 4, 3, 3, 3)
    cases = [("matmul", (a, b), {}), ("relu", (x,), {}), ("softmax", (x,), dict(axis=1)),
             ("log_softmax", (x,), dict(axis=1)), ("conv2d", (img, w), dict(padding=1)),
             ("max_pool2d", (img, 2), {})]
    for name, args, kw in cases:
        got = cupy.asnumpy(getattr(ops, name)(*[_offset(v) if isinstance(v, np.ndarray) else v for v in args], **kw))
        backends.set_backend("numpy")
        want = getattr(ops, name)(*args, **kw)
        backends.set_backend(gpu_backend)
        assert_close(got, want, rtol=1e-4, atol=1e-4, what=f"{name} offset")


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


def test_nan_and_inf_inputs(gpu_backend):
    # one rule on every backend: NaN propagates (relu, fused relu, max-pool), -inf logits give exact
    # zeros (softmax) and -inf (log_softmax) on the warp, block and strided paths
    for case in NAN_INF_CASES:
        compare_case(case, gpu_backend, cupy.asarray, cupy.asnumpy)


def test_bad_label_raises_when_the_loss_is_read(gpu_backend, rng):
    from deepkern.autograd import Tensor
    from deepkern.nn import functional as F

    logits = Tensor(cupy.asarray(randn(rng, 6, 4)))
    loss = F.cross_entropy(logits, cupy.asarray(np.array([0, 1, 4, 2, 3, 1])))  # no host sync here
    with pytest.raises(ValueError, match="out of range"):
        loss.item()
    good = F.cross_entropy(logits, cupy.asarray(np.array([0, 1, 3, 2, 3, 1])))
    assert np.isfinite(good.item())


_SPIN = r"""
extern "C" __global__ void spin_then_fill(float* out, long long n, float value, long long cycles) {
    const long long start = clock64();
    while (clock64() - start < cycles) { }
    for (long long i = threadIdx.x; i < n; i += blockDim.x) out[i] = value;
}
"""


def test_non_default_stream(gpu_backend, rng):
    # The input is written by a kernel that first spins ~0.1 s on a non-blocking stream: a matmul
    # launched on any other stream would read it before it is filled. Inputs and outputs stay on
    # the device (a pageable host copy would synchronise and hide a wrong stream).
    b = cupy.asarray(randn(rng, 33, 17))
    a = cupy.zeros((65, 33), cupy.float32)
    spin = cupy.RawKernel(_SPIN, "spin_then_fill")
    rate_khz = cupy.cuda.Device().attributes["ClockRate"]
    stream = cupy.cuda.Stream(non_blocking=True)
    with stream:
        spin((1,), (256,), (a, np.int64(a.size), np.float32(1.0), np.int64(rate_khz * 100)))
        got = ops.matmul(a, b)
    stream.synchronize()
    want = np.ones((65, 33), np.float32) @ cupy.asnumpy(b)
    assert_close(cupy.asnumpy(got), want, rtol=1e-4, atol=1e-4)


# ---------------------------------------------------------------------------- error paths
def test_ops_refuse_mixed_devices(gpu_backend, rng):
    a = cupy.asarray(randn(rng, 3, 4))
    with pytest.raises(ValueError, match="b is on the CPU"):
        ops.matmul(a, randn(rng, 4, 2))


def test_ops_refuse_non_contiguous_gpu_arrays(gpu_backend, rng):
    a = cupy.asarray(randn(rng, 4, 6))[:, ::2]
    with pytest.raises(ValueError, match="C-contiguous"):
        ops.relu(a)


class TestCudaModuleChecks:
    """The extension's own checks: wrong arrays raise, nothing reaches a kernel."""

    @pytest.fixture(autouse=True)
    def _needs_cuda(self):
        require_gpu_backend("cuda")

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
