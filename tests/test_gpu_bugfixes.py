"""CPU checks of the GPU-side fixes of issue 13 that live in Python, CMake and the GPU tests.

(The .cu fixes are tested on the CPU emulator: test_cuda_emu_bugs.py.) GPU arrays are faked by a
NumPy wrapper with ``__cuda_array_interface__`` whose ``min``/``max`` fail: reading them is the host
synchronisation the device-side label check removes.
"""
from __future__ import annotations

import contextlib
import re
import types
from pathlib import Path

import numpy as np
import pytest

from deepkern import _validate, backends
from deepkern.backends import cuda as cuda_backend
from deepkern.backends import cupy as cupy_backend

from .conftest import require_gpu_backend
from .gpu_semantics import NAN_INF_CASES, compare_case

ROOT = Path(__file__).resolve().parents[1]


class FakeGpuArray:
    """Enough of a CuPy array for the validation code; host reads of values go through get()."""

    def __init__(self, a):
        self._a = np.asarray(a)

    @property
    def __cuda_array_interface__(self):
        return {"shape": self._a.shape, "typestr": self._a.dtype.str, "data": (0, False), "version": 3}

    def __getattr__(self, name):  # dtype, ndim, shape, size, flags
        return getattr(self._a, name)

    def __getitem__(self, key):
        return FakeGpuArray(self._a[key])

    def reshape(self, *shape):
        return FakeGpuArray(self._a.reshape(*shape))

    def get(self):
        return self._a.copy()

    def item(self):
        return self._a.item()

    def min(self, *args, **kwargs):
        raise AssertionError("labels.min() on a GPU array: a host synchronisation per call")

    max = min


# ---------------------------------------------------------------------------- bug 6
def test_gpu_labels_are_not_read_back_by_the_checks():
    labels = FakeGpuArray(np.array([0, 1, 2, 9], np.int64))
    _validate.check_labels(labels, "labels", 4, 3)  # the range is the kernels' job on the GPU


def test_gpu_loss_read_raises_for_a_bad_label():
    loss = _validate.device_checked_loss(FakeGpuArray(np.array([np.nan, 2.0], np.float32)), 10)
    with pytest.raises(ValueError, match="2 label\\(s\\) out of range for 10 classes"):
        _validate.scalar_value(loss)
    good = _validate.device_checked_loss(FakeGpuArray(np.array([1.5, 0.0], np.float32)), 10)
    assert _validate.scalar_value(good) == 1.5
    assert _validate.scalar_value(np.array(2.5, np.float32)) == 2.5  # any other array: plain item()


def test_cupy_backend_code_counts_bad_labels():
    logits = np.random.default_rng(0).standard_normal((5, 3)).astype(np.float32)
    labels = np.array([0, 3, 2, -1, 1], np.int64)
    loss = cupy_backend.cross_entropy(logits, labels)
    assert loss.shape == () and np.isnan(loss)
    g = cupy_backend.cross_entropy_backward(logits, labels, 1.0)
    assert np.isnan(g[[1, 3]]).all() and np.isfinite(g[[0, 2, 4]]).all()


@pytest.fixture
def fake_cuda(monkeypatch):
    """backends.cuda with a recording _cuda module and CuPy replaced by NumPy."""
    calls = {}

    def record(name):
        def fn(*args):
            calls[name] = args
        return fn

    fake = types.SimpleNamespace(conv2d_backward=record("conv2d_backward"), cross_entropy=record("cross_entropy"),
                                 device_query=lambda: {"device_count": 1})
    stream = types.SimpleNamespace(ptr=0)
    fake_cupy = types.SimpleNamespace(empty=np.empty, float32=np.float32,
                                      cuda=types.SimpleNamespace(get_current_stream=lambda: stream))
    monkeypatch.setattr(cuda_backend, "_cuda", fake)
    monkeypatch.setattr(cuda_backend, "cupy", fake_cupy)
    return calls, fake


def _on_device(shape):
    return types.SimpleNamespace(shape=shape, device=contextlib.nullcontext())


def test_cuda_backend_cross_entropy_takes_loss_and_count(fake_cuda):
    calls, _ = fake_cuda
    cuda_backend.cross_entropy(_on_device((4, 3)), _on_device((4,)))
    assert calls["cross_entropy"][3].shape == (2,)


# ---------------------------------------------------------------------------- bug 7
def test_cuda_backend_skips_the_input_gradient(fake_cuda):
    calls, _ = fake_cuda
    gx, gw, gb = cuda_backend.conv2d_backward(_on_device((2, 4, 3, 3)), _on_device((2, 3, 5, 5)),
                                              _on_device((4, 3, 3, 3)), (1, 1), (0, 0), True, want_input=False)
    assert gx is None and calls["conv2d_backward"][5] is None  # no dgrad GEMM launched
    assert gw.shape == (4, 3, 3, 3) and gb.shape == (4,)


# ---------------------------------------------------------------------------- bug 5
def test_cmake_default_targets_embed_ptx():
    text = (ROOT / "CMakeLists.txt").read_text()
    default = re.search(r"set\(CMAKE_CUDA_ARCHITECTURES ([^)$]+)\)", text).group(1).split()
    real = [int(a.split("-")[0]) for a in default if a.endswith("-real")]
    ptx = [int(a.split("-")[0]) for a in default if not a.endswith("-real")]  # "90-virtual" or "90"
    assert ptx and max(ptx) >= max(real), f"no PTX for the newest target in {default}"


def test_cuda_backend_unusable_without_a_kernel_image(fake_cuda):
    _, fake = fake_cuda
    fake.device_query = lambda: {"device_count": 1, "kernel_image_error": "cudaErrorNoKernelImageForDevice: x"}
    assert "no kernels for this GPU" in cuda_backend.unavailable_reason()


# ---------------------------------------------------------------------------- bug 8
def test_gpu_tests_fail_when_the_cuda_backend_is_missing(monkeypatch):
    monkeypatch.setattr(backends, "reason_unavailable", lambda name: "deepkern._cuda is not built")
    monkeypatch.delenv("DEEPKERN_GPU_CUPY_ONLY", raising=False)
    with pytest.raises(pytest.fail.Exception, match="cuda backend is not usable"):
        require_gpu_backend("cuda")
    monkeypatch.setenv("DEEPKERN_GPU_CUPY_ONLY", "1")
    with pytest.raises(pytest.skip.Exception):
        require_gpu_backend("cuda")


def test_gpu_test_module_never_filters_its_backends():
    text = (ROOT / "tests" / "test_gpu.py").read_text()
    assert "if backends.available(name)]" not in text and "skipif(\"cuda\" not in" not in text


# ---------------------------------------------------------------------------- bug 3 (CuPy backend code)
@pytest.mark.parametrize("case", NAN_INF_CASES, ids=lambda c: c[0])
def test_cupy_backend_code_nan_and_inf_rule(case):
    compare_case(case, cupy_backend, lambda a: a, np.asarray)
