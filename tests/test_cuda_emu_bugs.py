"""Regression tests for the CUDA kernel bugs of issue 13, on the CPU emulator (``pytest -k emul``).

Each failed on the kernels before their fix (tests/cuda_emu/README.md lists the run on the old
sources). Also: the ThreadSanitizer subset, and proof that it catches a race when a barrier goes.
"""
from __future__ import annotations

import mmap
import os
import subprocess

import numpy as np
import pytest

from deepkern.backends import numpy as ref

from .conftest import randn
from .cuda_emu import emu
from .cuda_emu.build import build
from .gpu_semantics import assert_same_nan as assert_same

pytestmark = pytest.mark.emul


@pytest.fixture(autouse=True)
def _fresh_device():
    emu.reset()
    yield
    emu.reset()


# ---------------------------------------------------------------------------- 1: -inf rows
@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
@pytest.mark.parametrize("shape,axis,where", [
    ((2, 2), 0, (0, slice(None))),      # strided path, the first value each thread sees is -inf
    ((1, 40), 1, (0, 0)),               # warp per row
    ((1, 2000), 1, (0, 0)),             # block per row, float4 loads
    ((1, 2001), 1, (0, slice(0, 600))),  # block per row, scalar loads, whole warps of -inf
])
def test_emul_softmax_minus_inf_gives_exact_zeros(log, shape, axis, where, rng):
    x = randn(rng, *shape)
    x[where] = -np.inf
    want = (ref.log_softmax if log else ref.softmax)(x, axis)
    got = emu.softmax(x, axis, log)
    assert_same(got, want, what=f"{shape}")
    if not log:
        assert np.all(got[where] == 0.0)
    g = randn(rng, *shape)
    bwd = ref.log_softmax_backward if log else ref.softmax_backward
    assert_same(emu.softmax_backward(g, want, axis, log), bwd(g, want, axis), what=f"bwd {shape}")


@pytest.mark.parametrize("dim", [2, 40, 2000])
def test_emul_softmax_nan_poisons_the_row(dim, rng):
    # a lane that saw only NaN (and -inf) must not be merged away as "empty"
    x = randn(rng, 2, dim)
    x[0, 0] = np.nan
    x[1, 0] = np.nan
    x[1, 1:4] = -np.inf     # the thread (lane) that reads x[1, 0] sees nothing else finite
    x[1, 32::32] = -np.inf
    assert_same(emu.softmax(x, 1), ref.softmax(x, 1))
    assert np.all(np.isnan(emu.softmax(x, 1)))


def test_emul_cross_entropy_minus_inf_logit(rng):
    logits = randn(rng, 1, 40)
    logits[0, 0] = -np.inf
    labels = np.array([3], np.int64)
    loss, _ = emu.cross_entropy(logits, labels)
    assert_same(loss, ref.cross_entropy(logits, labels))
    got = emu.cross_entropy_backward(logits, labels, 1.0)
    assert_same(got, ref.cross_entropy_backward(logits, labels, 1.0), 1e-4, 1e-6)
    assert got[0, 0] == 0.0


# ---------------------------------------------------------------------------- 2: > 2^31 elements in one plane
W_BIG = 2**30 + 8  # (1, 1, 2, W_BIG): H*W = 2^31 + 16


def _huge(shape):
    """A zero float32 array backed by untouched anonymous memory (only pages written cost RAM)."""
    nbytes = int(np.prod(shape)) * 4
    flags = mmap.MAP_PRIVATE | mmap.MAP_ANONYMOUS | getattr(mmap, "MAP_NORESERVE", 0)
    try:
        buf = mmap.mmap(-1, nbytes, flags=flags)
    except OSError as exc:
        pytest.skip(f"cannot reserve {nbytes >> 30} GiB of address space: {exc}")
    return np.frombuffer(buf, dtype=np.float32).reshape(shape)


def test_emul_pool_plane_over_2_31_elements():
    x = _huge((1, 1, 2, W_BIG))
    x[0, 0, :, -2:] = [[1.0, 2.0], [5.0, 7.0]]
    y = _huge((1, 1, 1, W_BIG // 2))
    # grid-stride kernels (common.cuh elementwise_blocks: at most 65535*8 blocks of 256): run the
    # blocks up to the one whose thread ends on the last output
    total, threads = y.size, 256
    stride = min(-(-total // threads), 65535 * 8) * threads
    emu.keep_blocks((total - 1) % stride // threads + 1, 0)
    emu.pool("max", x, (2, 2), (2, 2), (0, 0), out=y)
    assert y[0, 0, 0, -1] == 7.0
    emu.pool("avg", x, (2, 2), (2, 2), (0, 0), out=y)
    assert y[0, 0, 0, -1] == 3.75


def test_emul_conv_plane_over_2_31_elements():
    # The shared window geometry (csrc/common/geometry.hpp) refuses an output plane whose im2col
    # column count OH*OW passes 2**31-1 on both backends, so such a conv never reaches the kernels'
    # offset arithmetic: what must hold is a clean, named refusal instead of an out-of-bounds access.
    x, gy = _huge((1, 1, 2, W_BIG)), _huge((1, 1, 2, W_BIG))
    w = np.array([[[[3.0]]]], np.float32)
    emu.keep_blocks(0, 1)
    with pytest.raises(emu.EmuError, match="32-bit index limit"):
        emu.conv2d(x, w, None, (1, 1), (0, 0), out=_huge((1, 1, 2, W_BIG)))
    emu.launch_budget(1)
    with pytest.raises(emu.EmuError, match="32-bit index limit"):
        emu.conv2d_backward(gy, x, w, (1, 1), (0, 0), False, gx=_huge((1, 1, 2, W_BIG)))


# ---------------------------------------------------------------------------- 3: NaN propagates
@pytest.mark.parametrize("offset", [False, True])
def test_emul_relu_keeps_nan(offset):
    x = np.array([np.nan, -1.0, 2.0, np.nan, -np.inf, 0.5, np.nan], np.float32)
    got = emu.relu(emu.offset_copy(x) if offset else x)
    assert_same(got, ref.relu(x))


@pytest.mark.parametrize("variant,major", [("fp32", 9), ("tf32", 8)])
def test_emul_fused_relu_keeps_nan(variant, major, rng):
    emu.set_device(132, major)
    emu.set_matmul_variant(variant)
    a, b = randn(rng, 5, 8), randn(rng, 8, 6)
    a[2, 3] = np.nan
    got = emu.matmul(a, b, None, True, False, False)
    assert np.all(np.isnan(got[2])) and not np.any(np.isnan(np.delete(got, 2, axis=0)))


def test_emul_max_pool_nan_anywhere_in_the_window(rng):
    x = randn(rng, 1, 2, 6, 6)
    x[0, 0, 1, 1] = np.nan   # second row of its 2x2 window: not the first element seen
    x[0, 1, 4, 5] = np.nan
    x[0, 1, 5, 4] = np.nan   # two NaNs in a window: the gradient goes to the first
    for kernel, stride in (((2, 2), (2, 2)), ((3, 3), (1, 1))):
        y = emu.pool("max", x, kernel, stride, (0, 0))
        assert_same(y, ref.max_pool2d(x, kernel, stride, (0, 0)), what=f"max {kernel}")
        g = randn(rng, *y.shape)
        assert_same(emu.pool("max_bwd", x, kernel, stride, (0, 0), grad_out=g),
                    ref.max_pool2d_backward(g, x, kernel, stride, (0, 0)), what=f"max bwd {kernel}")


# ---------------------------------------------------------------------------- 4: very wide matmul
@pytest.mark.parametrize("variant,major,sms", [("fp32", 9, 1000), ("fp32", 9, 1), ("tf32", 8, 132)])
def test_emul_matmul_more_than_65535_column_tiles(variant, major, sms):
    emu.set_device(sms, major)
    emu.set_matmul_variant(variant)
    n = 65536 * 128 + 5  # > 8,388,480 columns: over 65535 tiles of 128 (and of 64)
    a = np.array([[2.0]], np.float32)
    b = np.zeros((1, n), np.float32)
    b[0, :3] = [1.0, 2.0, 3.0]
    b[0, -3:] = [4.0, 5.0, 6.0]
    emu.keep_blocks(1, 1)
    c = np.full((1, n), np.nan, np.float32)
    emu.matmul(a, b, None, False, False, False, out=c)
    assert list(c[0, :3]) == [2.0, 4.0, 6.0] and list(c[0, -3:]) == [8.0, 10.0, 12.0]


# ---------------------------------------------------------------------------- 6: labels checked on the device
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_emul_cross_entropy_counts_bad_labels(dtype, rng):
    logits = randn(rng, 37, 10)
    labels = rng.integers(0, 10, size=37).astype(dtype)
    labels[[3, 30]] = [10, -1]
    loss, bad = emu.cross_entropy(logits, labels)
    assert np.isnan(loss) and bad == 2
    labels[[3, 30]] = [9, 0]
    loss, bad = emu.cross_entropy(logits, labels)
    assert np.isfinite(loss) and bad == 0


# ---------------------------------------------------------------------------- 7: input_grad=False
def test_emul_conv_backward_without_input_gradient(rng):
    x, w = randn(rng, 2, 3, 7, 6), randn(rng, 4, 3, 3, 3)
    g = randn(rng, 2, 4, 5, 4)
    gx, gw, gb = emu.conv2d_backward(g, x, w, (1, 1), (0, 0), True, want_input=False)
    want = ref.conv2d_backward(g, x, w, (1, 1), (0, 0), True, want_input=False)
    assert gx is None
    assert_same(gw, want[1], 1e-4, 1e-4)
    assert_same(gb, want[2], 1e-4, 1e-4)


# ---------------------------------------------------------------------------- ThreadSanitizer
def _run_tsan(exe, which: str = "") -> subprocess.CompletedProcess:
    env = dict(os.environ, TSAN_OPTIONS="halt_on_error=1 exitcode=66 report_signal_unsafe=0")
    return subprocess.run([str(exe)] + ([which] if which else []), capture_output=True, text=True, env=env,
                          timeout=600)


def test_emul_tsan_subset_has_no_race():
    proc = _run_tsan(build("tsan"))
    assert "ThreadSanitizer" not in proc.stderr, proc.stderr[-4000:]
    assert proc.returncode == 0 and "tsan subset done: ok" in proc.stdout, proc.stdout + proc.stderr[-2000:]


def test_emul_tsan_catches_a_deleted_barrier():
    # conv2d.cu's first __syncthreads separates the tile stores from the multiply that reads them
    proc = _run_tsan(build("tsan", drop_sync=("conv2d.cu", 1)), "conv")
    assert proc.returncode == 66 and "WARNING: ThreadSanitizer: data race" in proc.stderr, proc.stderr[-3000:]
