"""The threaded GEMM driver (csrc/cpu/gemm_threaded.cpp) against the NumPy reference, and bit for
bit against the serial driver (one thread).

With more than one thread, every product of about 1M multiply-adds or more runs on the threaded
driver, whatever the pool then does (a busy pool runs the chunks on the caller). The shapes below
reach each of its plans: A and B packed in several bands and groups, B or A read in place, A or
B packed by the chunk that uses it, column segments, K cut into several blocks, and the tile
edges; with every micro-kernel variant.
"""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends
from deepkern.backends import numpy as ref

from .conftest import assert_close, randn

if not backends.available("cpu"):
    pytest.skip("the C++ CPU module is not built", allow_module_level=True)

from deepkern import _cpu  # noqa: E402  (after the skip: only importable when built)

from .test_gemm_variants import _tol, variant  # noqa: E402,F401  (variant: the fixture forcing each kernel)

THREADS = (2, 3, 4)

# (m, k, n, trans_a, trans_b): what each reaches in the threaded driver (avx512: MR 14, NR 32,
# KC 384, NC 384; B packed when transposed or above 512 KiB, row-major A read in place when n <= 64
# or, with at most 16 slivers of rows, when its rows spread over the L1 sets)
SHAPES = [
    (512, 512, 512, False, False),     # B packed in groups: two column blocks, two K blocks, one A band
    (100, 784, 256, False, True),      # the seed MLP's first layer: few rows, B^T packed by column chunks
    (100, 256, 256, False, True),      # its second layer: B^T by column chunks, A read by rows (1 KiB apart)
    (100, 1024, 256, False, True),     # rows 4 KiB apart (one L1 set): A packed first, B^T by column chunks
    (60, 1000, 200, False, True),      # rows off line boundaries: A by rows, 7 column tiles for 2-4 threads
    (100, 300, 40, False, True),       # B^T of 2 column tiles: column chunks on 2 threads, row chunks on 3 or 4
    (256, 100, 784, True, False),      # its first weight gradient: B in place, A^T per chunk
    (100, 256, 256, False, False),     # its second input gradient: B in place, A per chunk
    (1, 3000, 1000, False, False),     # one row: column chunks, A read in place
    (3, 700, 1200, True, True),        # a few rows, both transposed
    (5, 400, 20000, False, False),     # very wide B: many column chunks of at most 640 KiB of B each
    (2017, 5, 300, False, False),      # tiny K: A read by rows in place
    (300, 1000, 50, False, False),     # narrow C: A read by rows, B in place, three K blocks
    (97, 1031, 389, True, False),      # primes: edge tiles everywhere, B packed (1.6 MB) by column chunks
    (385, 385, 383, False, True),      # one past KC and NC / one under: B groups
    (100, 45000, 100, False, False),   # deep K: A in two bands (of up to 16 MiB), column segments, B groups
]


def _inputs(rng, m, k, n, trans_a, trans_b):
    a = randn(rng, k, m) if trans_a else randn(rng, m, k)
    b = randn(rng, n, k) if trans_b else randn(rng, k, n)
    return a, b, randn(rng, n)


@pytest.fixture
def restore_threads():
    before = dk.get_num_threads()
    yield
    dk.set_num_threads(before)


@pytest.mark.parametrize("m,k,n,trans_a,trans_b", SHAPES)
def test_threaded_matches_reference_and_serial_bits(variant, restore_threads, rng, m, k, n, trans_a, trans_b):  # noqa: F811
    if variant == "scalar" and m * n * k > 50_000_000:
        pytest.skip("too slow on the scalar kernel; the smaller shapes cover its tiles")
    a, b, bias = _inputs(rng, m, k, n, trans_a, trans_b)
    dk.set_num_threads(1)
    serial = _cpu.matmul(a, b, bias, True, trans_a, trans_b)
    assert_close(serial, ref.matmul(a, b, bias, True, trans_a, trans_b), rtol=1e-4, atol=_tol(k),
                 what=f"matmul {m}x{k}x{n}")
    plain = _cpu.matmul(a, b, None, False, trans_a, trans_b)
    for threads in THREADS:
        dk.set_num_threads(threads)
        for _ in range(2):
            assert np.array_equal(_cpu.matmul(a, b, bias, True, trans_a, trans_b), serial), \
                f"bias+relu, {threads} threads"
            assert np.array_equal(_cpu.matmul(a, b, None, False, trans_a, trans_b), plain), \
                f"plain, {threads} threads"


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("trans_b", [False, True])
def test_threaded_backward_matches_serial_bits(restore_threads, rng, trans_a, trans_b):
    m, k, n = 150, 420, 390
    a, b, _ = _inputs(rng, m, k, n, trans_a, trans_b)
    g = randn(rng, m, n)
    out = ref.matmul(a, b, None, True, trans_a, trans_b)
    dk.set_num_threads(1)
    serial = _cpu.matmul_backward(g, a, b, out, trans_a, trans_b, True)
    want = ref.matmul_backward(g, a, b, out, trans_a, trans_b, True)
    for got, exp, depth in zip(serial, want, (n, m, m)):
        assert_close(got, exp, atol=_tol(depth), what="serial gradient")
    dk.set_num_threads(2)
    for got, exp in zip(_cpu.matmul_backward(g, a, b, out, trans_a, trans_b, True), serial):
        assert np.array_equal(got, exp)


@pytest.mark.parametrize("m,n", [(150, 390), (1, 7), (3000, 17), (40, 1000)])
@pytest.mark.parametrize("relu", [False, True])
def test_backward_bias_is_the_row_order_sum_on_any_thread_count(restore_threads, rng, m, n, relu):
    # the bias gradient sums each column over the rows in order (float32, one add at a time),
    # the ReLU's mask applied first; threads split the columns, never a column's rows
    k = 5
    a, b, _ = _inputs(rng, m, k, n, False, True)
    g = randn(rng, m, n)
    g[0, 0], g[-1, -1] = np.inf, np.nan
    out = ref.matmul(a, b, None, True, False, True) if relu else None
    reaching = np.where(out > 0, g, np.float32(0)) if relu else g
    want = np.cumsum(reaching, axis=0, dtype=np.float32)[-1]
    for threads in (1, 2, 3):
        dk.set_num_threads(threads)
        ga, gb, gbias = _cpu.matmul_backward(g, a, b, out, False, True, True)
        np.testing.assert_array_equal(gbias, want)
        ga0, gb0, none = _cpu.matmul_backward(g, a, b, out, False, True, False)
        assert none is None
        np.testing.assert_array_equal(ga0, ga)
        np.testing.assert_array_equal(gb0, gb)


def test_offset_buffers(restore_threads, rng):
    """Operands and bias starting 4 bytes past an aligned address (unaligned loads throughout)."""
    m, k, n = 131, 517, 263
    dk.set_num_threads(2)
    for trans_a, trans_b in [(False, False), (True, True)]:
        buf = randn(rng, m * k + n * k + n + 3)
        a = buf[1:1 + m * k].reshape((k, m) if trans_a else (m, k))
        b = buf[2 + m * k:2 + m * k + n * k].reshape((n, k) if trans_b else (k, n))
        bias = buf[3 + m * k + n * k - 1:3 + m * k + n * k - 1 + n]
        assert a.ctypes.data % 16 != 0 and a.flags.c_contiguous
        got = _cpu.matmul(a, b, bias, False, trans_a, trans_b)
        assert_close(got, ref.matmul(a, b, bias, False, trans_a, trans_b), rtol=1e-4, atol=_tol(k))


def test_nan_and_inf_propagate_through_the_threaded_epilogue(restore_threads, rng):
    """NaN in A spreads along its row, inf along its column of B; the fused ReLU keeps NaN."""
    m, k, n = 200, 300, 260
    a, b, bias = randn(rng, m, k), randn(rng, k, n), randn(rng, n)
    a[17, 5] = np.nan
    a[150, 299] = np.nan
    b[40, 33] = np.inf
    b[41, 200] = -np.inf
    dk.set_num_threads(2)
    for relu in (False, True):
        got = _cpu.matmul(a, b, bias, relu, False, False)
        want = ref.matmul(a, b, bias, relu, False, False)
        assert np.array_equal(np.isnan(got), np.isnan(want)), f"NaN positions, relu={relu}"
        assert np.array_equal(np.isinf(got), np.isinf(want)), f"inf positions, relu={relu}"
        assert np.array_equal(got[np.isinf(got)], want[np.isinf(want)])
        finite = np.isfinite(want)
        assert np.isnan(got[17]).all() and np.isnan(got[150]).all()
        assert_close(got[finite], want[finite], rtol=1e-4, atol=_tol(k))


def test_degenerate_sizes_on_threads(restore_threads, rng):
    """K = 0 (bias only, through ReLU) and one-element dimensions with threads on."""
    dk.set_num_threads(2)
    bias = randn(rng, 2000)
    out = _cpu.matmul(np.zeros((600, 0), np.float32), np.zeros((0, 2000), np.float32), bias, True, False, False)
    assert np.array_equal(out, np.broadcast_to(np.maximum(bias, 0), (600, 2000)))
    for m, k, n in [(1, 1_100_000, 1), (1_100_000, 1, 1), (1, 1, 1_100_000)]:
        a, b, _ = _inputs(rng, m, k, n, False, False)
        # a sum of 1.1M float32 products: allow 10x the usual sqrt(k) drift
        assert_close(_cpu.matmul(a, b, None, False, False, False), ref.matmul(a, b, None, False, False, False),
                     rtol=1e-4, atol=10 * _tol(k), what=f"{m}x{k}x{n}")
