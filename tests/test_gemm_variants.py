"""Every GEMM micro-kernel variant (avx512, avx2, scalar), forced, against the NumPy reference.

matmul, matmul_backward and conv2d (which runs on the same GEMM) are checked on shapes chosen to
hit the edges of each variant's register tile (14x32, 6x16, 4x8) and cache blocks (KC = 384,
NC = 384, MC = 2016), with fresh random inputs; plus the variant switch itself (set_gemm_variant,
DEEPKERN_GEMM) and concurrent calls from several Python threads.
"""
from __future__ import annotations

import os
import subprocess
import sys
import textwrap
from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from deepkern import backends
from deepkern.backends import numpy as ref

from .conftest import assert_close, randn

if not backends.available("cpu"):
    pytest.skip("the C++ CPU module is not built", allow_module_level=True)

from deepkern import _cpu  # noqa: E402  (after the skip: only importable when built)

VARIANTS = ["avx512", "avx2", "scalar"]
SETTINGS = settings(max_examples=12, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
# 1, primes, and one off every variant's tile sizes (MR 14/6/4, NR 32/16/8) and their multiples
SIZES = st.sampled_from([1, 2, 3, 4, 5, 6, 7, 8, 9, 13, 14, 15, 16, 17, 29, 31, 32, 33, 43, 63, 65, 97])


def _supported(name: str) -> bool:
    features = _cpu.cpu_features()
    if name == "avx512":
        return bool(features["avx512f"] and features["avx2"] and features["fma"])
    if name == "avx2":
        return bool(features["avx2"] and features["fma"])
    return True


@pytest.fixture(params=VARIANTS)
def variant(request):
    """Forces one micro-kernel variant for the test (skipped where the CPU lacks it)."""
    name = request.param
    if not _supported(name):
        with pytest.raises(ValueError, match="does not have"):
            _cpu.set_gemm_variant(name)
        pytest.skip(f"this CPU cannot run the {name} kernel")
    before = _cpu.gemm_variant()
    _cpu.set_gemm_variant(name)
    assert _cpu.gemm_variant() == name
    yield name
    _cpu.set_gemm_variant(before)


def _tol(k: int) -> float:
    # float32 sums of k products drift ~sqrt(k) ulps from the float64 reference
    return 1e-5 * max(1.0, float(np.sqrt(k)))


def _check_matmul(rng, m, k, n, trans_a, trans_b, with_bias, relu):
    a = randn(rng, k, m) if trans_a else randn(rng, m, k)
    b = randn(rng, n, k) if trans_b else randn(rng, k, n)
    bias = randn(rng, n) if with_bias else None
    out = backends.load("cpu").matmul(a, b, bias, relu, trans_a, trans_b)
    expect = ref.matmul(a, b, bias, relu, trans_a, trans_b)
    assert_close(out, expect, rtol=1e-4, atol=_tol(k), what=f"matmul {m}x{k}x{n}")

    g = randn(rng, m, n)
    fwd = expect if relu else None
    got = backends.load("cpu").matmul_backward(g, a, b, fwd, trans_a, trans_b, with_bias)
    want = ref.matmul_backward(g, a, b, fwd, trans_a, trans_b, with_bias)
    assert_close(got[0], want[0], atol=_tol(n), what="grad a")
    assert_close(got[1], want[1], atol=_tol(m), what="grad b")
    if with_bias:
        assert_close(got[2], want[2], atol=_tol(m), what="grad bias")


@SETTINGS
@given(m=SIZES, k=SIZES, n=SIZES, trans_a=st.booleans(), trans_b=st.booleans(),
       with_bias=st.booleans(), relu=st.booleans(), seed=st.integers(0, 2**31))
def test_matmul_awkward_shapes(variant, m, k, n, trans_a, trans_b, with_bias, relu, seed):
    _check_matmul(np.random.default_rng(seed), m, k, n, trans_a, trans_b, with_bias, relu)


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
@pytest.mark.parametrize("m,k,n", [
    (1, 1, 1), (7, 13, 5), (97, 101, 31),
    (15, 3000, 33),      # large K: several KC blocks, beta accumulation between them
    (29, 385, 385),      # one past KC and NC
    (2017, 5, 17),       # one past MC, tiny K (operands read in place)
    (100, 784, 256),     # the MLP's first layer: threads split the columns
    (400, 900, 160),     # threads split the rows and share each packed B block (B > 512 KiB)
])
def test_matmul_block_edges(variant, rng, m, k, n, trans_a, trans_b):
    _check_matmul(rng, m, k, n, trans_a, trans_b, with_bias=True, relu=True)


@pytest.mark.parametrize("n,c,h,w,oc,kh,kw,stride,padding", [
    (3, 1, 28, 28, 32, 3, 3, (1, 1), (0, 0)),   # the seed CNN's first layer, few images
    (2, 32, 13, 13, 64, 3, 3, (1, 1), (0, 0)),  # its second layer (wide forward: windows read in place)
    (2, 4, 9, 8, 6, 3, 3, (1, 1), (1, 2)),      # wide forward on a zero-padded copy
    (1, 16, 24, 24, 40, 3, 3, (1, 1), (1, 1)),  # wide forward, one image: GEMM threads split its columns
    (1, 3, 64, 64, 48, 3, 3, (2, 1), (1, 1)),   # im2col, one image large enough for GEMM threads
    (1, 3, 11, 9, 5, 3, 2, (2, 1), (1, 1)),     # one image, im2col; stride, padding
    (5, 4, 7, 7, 33, 1, 1, (1, 1), (0, 0)),     # 1x1: the image is its own column matrix
    (2, 40, 5, 6, 7, 1, 1, (1, 1), (0, 0)),     # 1x1 with many channels: wide forward
    (2, 2, 5, 5, 70, 2, 2, (1, 1), (0, 0)),     # OC wide and above CKK: gW accumulated untransposed
    (4, 2, 6, 5, 7, 5, 5, (3, 2), (2, 2)),      # window wider than the stride, heavy padding
])
def test_conv2d(variant, rng, n, c, h, w, oc, kh, kw, stride, padding):
    cpu = backends.load("cpu")
    x, wt, bias = randn(rng, n, c, h, w), randn(rng, oc, c, kh, kw), randn(rng, oc)
    tol = _tol(c * kh * kw)
    out = cpu.conv2d(x, wt, bias, stride, padding)
    assert_close(out, ref.conv2d(x, wt, bias, stride, padding), atol=tol, what="conv2d")
    g = randn(rng, *out.shape)
    got = cpu.conv2d_backward(g, x, wt, stride, padding, True)
    want = ref.conv2d_backward(g, x, wt, stride, padding, True)
    positions = n * out.shape[2] * out.shape[3]
    assert_close(got[0], want[0], atol=_tol(oc * kh * kw), what="grad x")
    assert_close(got[1], want[1], atol=_tol(positions), what="grad w")
    assert_close(got[2], want[2], atol=_tol(positions), what="grad bias")


def test_unknown_or_unsupported_variant_is_refused():
    before = _cpu.gemm_variant()
    with pytest.raises(ValueError, match="unknown GEMM variant 'avx9'"):
        _cpu.set_gemm_variant("avx9")
    assert _cpu.gemm_variant() == before
    _cpu.set_gemm_variant("auto")
    best = next(v for v in VARIANTS if _supported(v))
    assert _cpu.gemm_variant() == best
    _cpu.set_gemm_variant(before)


def _run_python(code: str, gemm_env: str) -> subprocess.CompletedProcess:
    env = dict(os.environ, DEEPKERN_GEMM=gemm_env)
    return subprocess.run([sys.executable, "-c", textwrap.dedent(code)], env=env,
                          capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("name", VARIANTS)
def test_environment_variable_forces_variant(name):
    if not _supported(name):
        pytest.skip(f"this CPU cannot run the {name} kernel")
    code = """
        import numpy as np
        from deepkern import _cpu
        a = np.arange(35, dtype=np.float32).reshape(5, 7) / 7
        b = np.arange(21, dtype=np.float32).reshape(7, 3) / 3
        assert np.allclose(_cpu.matmul(a, b, None, False, False, False), a @ b, rtol=1e-5)
        print(_cpu.gemm_variant())
    """
    result = _run_python(code, name)
    assert result.returncode == 0, result.stderr
    assert result.stdout.strip() == name


def test_bad_environment_variable_is_a_clear_error():
    code = """
        import numpy as np
        from deepkern import _cpu
        a = np.ones((2, 2), np.float32)
        try:
            _cpu.matmul(a, a, None, False, False, False)
        except ValueError as e:
            print(e)
        _cpu.set_gemm_variant("scalar")  # an explicit choice clears the error
        print(_cpu.matmul(a, a, None, False, False, False).sum())
    """
    result = _run_python(code, "sse9")
    assert result.returncode == 0, result.stderr
    lines = result.stdout.strip().splitlines()
    assert "DEEPKERN_GEMM" in lines[0] and "sse9" in lines[0]
    assert float(lines[1]) == 8.0


def test_concurrent_python_threads_agree(variant, rng):
    """Kernels are re-entrant: four Python threads at once give the single-threaded results."""
    cpu = backends.load("cpu")
    jobs = []
    for i in range(8):
        a, b = randn(rng, 67 + i, 130), randn(rng, 130, 45 + 3 * i)
        x, w = randn(rng, 3, 2, 9, 9), randn(rng, 6, 2, 3, 3)
        jobs.append((a, b, x, w))

    def work(job):
        a, b, x, w = job
        return (cpu.matmul(a, b, None, False, False, False),
                cpu.matmul_backward(a @ b, a, b, None, False, False, False)[0],
                cpu.conv2d(x, w, None, (1, 1), (1, 1)),
                cpu.conv2d_backward(np.ones((3, 6, 9, 9), np.float32), x, w, (1, 1), (1, 1), False)[1])

    serial = [work(job) for job in jobs]
    with ThreadPoolExecutor(max_workers=4) as pool:
        for _ in range(3):
            for got, want in zip(pool.map(work, jobs), serial):
                for g, w in zip(got, want):
                    np.testing.assert_allclose(g, w, rtol=1e-5, atol=1e-5)
