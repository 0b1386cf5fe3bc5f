"""The GPU side on a machine without a GPU (runs in CI): clear errors, the CUDA module's
device query, the device helpers, and the CuPy backend's code checked on NumPy arrays
(it is written against the array API NumPy and CuPy share)."""
from __future__ import annotations

import numpy as np
import pytest

from deepkern import backends, device
from deepkern.backends import cupy as cupy_backend
from deepkern.backends import cuda as cuda_backend

from .backend_cases import (activation_cases, check_case, conv_cases, loss_cases, matmul_cases, optim_cases,
                            pool_cases)
from .conftest import gpu_available

no_gpu = pytest.mark.skipif(gpu_available(), reason="a GPU is usable here; these check the no-GPU behaviour")


@no_gpu
@pytest.mark.parametrize("name", ["cuda", "cupy"])
def test_forcing_a_gpu_backend_without_a_gpu_is_a_clear_error(name):
    with pytest.raises(RuntimeError, match=f"backend '{name}' is not available: .+"):
        backends.set_backend(name)
    assert backends.reason_unavailable(name)


@no_gpu
def test_gpu_backends_report_why_they_are_unavailable():
    for module in (cuda_backend, cupy_backend):
        reason = module.unavailable_reason()
        assert isinstance(reason, str) and reason


@no_gpu
def test_to_device_cuda_without_a_gpu_raises():
    with pytest.raises(RuntimeError, match="no usable GPU: cuda: .+; cupy: .+"):
        device.to_device(np.ones(3, np.float32), "cuda")
    with pytest.raises(RuntimeError, match="no usable GPU"):
        device.gpu_array_module()
    assert not device.gpu_available()


def test_device_helpers_on_the_cpu():
    x = np.ones((2, 3), np.float32)
    assert device.to_device(x, "cpu") is x
    assert device.device_of(x) == "cpu"
    assert device.array_module(x) is np
    assert device.normalize_device("CUDA:1") == "cuda"
    with pytest.raises(ValueError, match="device: expected 'cpu' or 'cuda'"):
        device.normalize_device("tpu")
    with pytest.raises(TypeError, match="device: expected a string"):
        device.normalize_device(0)


def test_cuda_module_device_query_returns_cleanly():
    _cuda = pytest.importorskip("deepkern._cuda", reason="the CUDA module is not built here")
    q = _cuda.device_query()
    assert isinstance(q["device_count"], int) and q["device_count"] >= 0
    assert isinstance(q["runtime_version"], str) and isinstance(q["driver_version"], str)
    assert len(q["devices"]) == q["device_count"]
    if not gpu_available():
        assert q["device_count"] == 0 or "cupy" in (backends.reason_unavailable("cuda") or "")
    assert _cuda.matmul_variant() in ("fp32", "tf32")
    with pytest.raises(ValueError, match="expected 'fp32' or 'tf32'"):
        _cuda.set_matmul_variant("int8")


def test_cuda_module_rejects_host_arrays():
    _cuda = pytest.importorskip("deepkern._cuda", reason="the CUDA module is not built here")
    x = np.ones(4, np.float32)
    with pytest.raises(TypeError, match="x: expected a cupy.ndarray"):
        _cuda.relu(x, x, 0)


# The CuPy backend's code on NumPy arrays: same semantics as the reference.
def _check_all(cases) -> None:
    for case in cases:
        check_case(case, cupy_backend, lambda a: a, np.asarray, rtol=1e-4, atol=1e-5)


def test_cupy_backend_code_matmul(rng):
    _check_all(matmul_cases(rng, [(1, 1, 1), (7, 13, 5)]))


def test_cupy_backend_code_conv_and_pool(rng):
    _check_all(conv_cases(rng, [((2, 3, 9, 7), (5, 3, 3, 2), (2, 1), (1, 0)), ((1, 1, 4, 4), (1, 1, 1, 1), 1, 0)]))
    _check_all(pool_cases(rng, [((2, 3, 8, 6), 2, None, 0), ((1, 2, 7, 9), (3, 2), (1, 2), (1, 1))]))


def test_cupy_backend_code_activations_loss_optim(rng):
    _check_all(activation_cases(rng, [((1,), 0), ((3, 5, 7), 1), ((2, 31), -1)]))
    _check_all(loss_cases(rng, [(1, 1), (7, 10)]))
    _check_all(optim_cases(rng, [(1,), (7, 13)]))
