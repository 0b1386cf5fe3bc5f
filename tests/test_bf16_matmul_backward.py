"""The bf16 matmul backward in one call (``_cpu.matmul_backward(..., bf16=True)``, csrc/cpu/matmul_bf16.cpp):
d op(A), d op(B) and the bias gradient as fp32's matmul_backward gives them, with bf16 products; and
the forward's binding (``_cpu.matmul(..., bf16=True)``), gemm_bf16's bits.

Its bits are pinned three ways: the two products equal the two ``gemm_bf16`` calls their formulas
name bit for bit (the same packing, the same tile sums; gemm_bf16 itself is checked against the
float64 reference of the bf16-rounded operands in test_bf16.py, and so are these products here, within
the fp32-summation bound); the bias gradient equals a float32 emulation of its sum (rows added in
order, no product); a fused ReLU's mask passes the gradient only where the output is > 0 (a NaN
output blocks it, as in fp32). Finite differences do not apply: rounding the operands makes the bf16
product piecewise constant in them, so the tests compare against the rounded reference instead.
"""
from __future__ import annotations


import numpy as np
import pytest

import deepkern as dk
from deepkern import backends

from .conftest import num_threads, simd_variant
from .test_bf16 import bf16_switched_off, check_close, needs_bf16

_cpu = pytest.importorskip("deepkern._cpu") if backends.available("cpu") else None
pytestmark = [pytest.mark.skipif(_cpu is None, reason="the C++ CPU backend is not built"), needs_bf16]

# (M, N, K): ones, the seed networks' layers (CNN 1600 -> 64 -> 10 at batch 128, MLP 784 -> 256 at
# 100), primes, tiles that do not divide (14-row, 32-column), an odd K, two k blocks (reduction 1100)
SHAPES = [(1, 1, 1), (128, 64, 1600), (128, 10, 64), (100, 256, 784), (13, 33, 7), (15, 31, 29), (3, 1100, 5),
          (1100, 3, 17)]
TRANS = [(False, False), (True, False), (False, True), (True, True)]


def _operands(rng, m, n, k, trans_a, trans_b, relu):
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    g = rng.standard_normal((m, n)).astype(np.float32)
    out = rng.standard_normal((m, n)).astype(np.float32) if relu else None
    return a, b, g, out


def _composed(g, a, b, out, trans_a, trans_b):
    """The formulas as separate gemm_bf16 calls, the mask and the bias sum in float32 NumPy, row by row."""
    gm = g if out is None else np.where(out > 0, g, np.float32(0))
    opa, opb = (a.T if trans_a else a), (b.T if trans_b else b)
    da = _cpu.gemm_bf16(opb, gm, False, True) if trans_a else _cpu.gemm_bf16(gm, opb, False, True)
    db = _cpu.gemm_bf16(gm, opa, True, False) if trans_b else _cpu.gemm_bf16(opa, gm, True, False)
    dbias = np.zeros(g.shape[1], np.float32)
    for row in gm:   # fp32 sums in row order
        dbias += row
    return da, db, dbias, gm, opa, opb


@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("trans_a,trans_b", TRANS)
@pytest.mark.parametrize("m,n,k", SHAPES)
def test_one_call_equals_the_products_and_the_rounded_reference(rng, m, n, k, trans_a, trans_b, relu):
    a, b, g, out = _operands(rng, m, n, k, trans_a, trans_b, relu)
    da, db, dbias = _cpu.matmul_backward(g, a, b, out, trans_a, trans_b, True, bf16=True)
    want_da, want_db, want_bias, gm, opa, opb = _composed(g, a, b, out, trans_a, trans_b)
    np.testing.assert_array_equal(da, want_da)
    np.testing.assert_array_equal(db, want_db)
    np.testing.assert_array_equal(dbias, want_bias)
    check_close(da.T if trans_a else da, gm, opb.T)
    check_close(db.T if trans_b else db, opa.T, gm)
    # the fp32 kernel's bias gradient is the same sum: the same bits
    np.testing.assert_array_equal(dbias, _cpu.matmul_backward(g, a, b, out, trans_a, trans_b, True)[2])
    if k * n > 1:   # and the products are not fp32's (bf16 ran)
        assert np.abs(da - _cpu.matmul_backward(g, a, b, out, trans_a, trans_b, False)[0]).max() > 0
    # without the gradient of a: None, the other two the same bits
    none, db2, dbias2 = _cpu.matmul_backward(g, a, b, out, trans_a, trans_b, True, False, bf16=True)
    assert none is None
    np.testing.assert_array_equal(db2, db)
    np.testing.assert_array_equal(dbias2, dbias)


@pytest.mark.parametrize("shape", [(0, 5, 3), (4, 0, 3), (4, 5, 0)])
def test_empty_dimensions(shape):
    m, n, k = shape
    a, b, g = np.ones((m, k), np.float32), np.ones((n, k), np.float32), np.ones((m, n), np.float32)
    got = _cpu.matmul_backward(g, a, b, None, False, True, True, bf16=True)
    want = _cpu.matmul_backward(g, a, b, None, False, True, True)
    for x, y in zip(got, want):
        assert x.shape == y.shape
        np.testing.assert_array_equal(x, y)   # zeros where a reduction is empty


def test_same_bits_for_any_thread_count(rng):
    a, b, g, out = _operands(rng, 128, 64, 1600, False, True, True)
    runs = []
    for threads in (1, 2, 3):
        with num_threads(threads):
            runs.append(_cpu.matmul_backward(g, a, b, out, False, True, True, bf16=True))
    for run in runs[1:]:
        for x, y in zip(run, runs[0]):
            np.testing.assert_array_equal(x, y)


@pytest.mark.parametrize("variant", ["generic", "avx2", "avx512"])
def test_same_bits_on_every_simd_variant(rng, variant):
    """The ReLU mask runs the SIMD variant's relu_backward; the products are the one bf16 kernel."""
    a, b, g, out = _operands(rng, 37, 45, 29, False, True, True)
    out[::3] = -out[::3]
    want = _cpu.matmul_backward(g, a, b, out, False, True, True, bf16=True)
    with simd_variant(variant):
        got = _cpu.matmul_backward(g, a, b, out, False, True, True, bf16=True)
    for x, y in zip(got, want):
        np.testing.assert_array_equal(x, y)


def test_nan_and_inf():
    """NaN/inf in g, a or b reach the gradients they reach in fp32; a NaN output blocks a fused ReLU's gradient."""
    rng = np.random.default_rng(3)
    a, b, g, out = _operands(rng, 6, 5, 4, False, True, True)
    out[:] = 1.0
    g[1, 2] = np.nan
    a[3, 1] = np.inf
    b[4, 0] = -np.inf
    out[5, :] = np.nan   # blocks row 5's gradient
    for relu_out in (None, out):
        got = _cpu.matmul_backward(g, a, b, relu_out, False, True, True, bf16=True)
        want = _cpu.matmul_backward(g, a, b, relu_out, False, True, True)
        for x, y in zip(got, want):
            np.testing.assert_array_equal(np.isnan(x), np.isnan(y))
            np.testing.assert_array_equal(np.isposinf(x), np.isposinf(y))
            np.testing.assert_array_equal(np.isneginf(x), np.isneginf(y))
        assert np.isnan(got[0]).any() and np.isnan(got[2]).any()
    for bf16 in (True, False):   # the mask is shared with fp32's (matmul_parts::relu_masked)
        masked = _cpu.matmul_backward(np.ones_like(g), np.ones_like(a), np.ones_like(b), out, False, True, True,
                                      bf16=bf16)
        assert not masked[0][5].any() and masked[0][:5].all()
        np.testing.assert_array_equal(masked[2], np.full(5, 5, np.float32))


def test_linear_layer_uses_it(rng):
    """F.linear's backward in bf16 is this call: the layer's gradients equal it bit for bit."""
    x, w, bias = (rng.standard_normal(s).astype(np.float32) for s in ((9, 40), (7, 40), (7,)))
    g = rng.standard_normal((9, 7)).astype(np.float32)
    xt, wt, bt = (dk.Tensor(v, requires_grad=True) for v in (x, w, bias))
    with dk.precision("bf16"):
        y = dk.nn.functional.linear(xt, wt, bt, activation="relu")
    y.backward(g)
    want = _cpu.matmul_backward(g, x, w, y.data, False, True, True, bf16=True)
    for got, expected in zip((xt.grad, wt.grad, bt.grad), want):
        np.testing.assert_array_equal(got, expected)


@pytest.mark.parametrize("trans_a,trans_b", TRANS)
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (128, 64, 1600), (13, 33, 7), (4, 5, 0)])
def test_forward_binding_is_gemm_bf16(rng, m, n, k, trans_a, trans_b):
    """``_cpu.matmul(..., bf16=True)`` (the backend's forward: checked arrays, outputs from the host
    cache) gives gemm_bf16's bits, with the bias and ReLU in its store."""
    a, b, _, _ = _operands(rng, m, n, k, trans_a, trans_b, False)
    bias = rng.standard_normal(n).astype(np.float32)
    for with_bias, relu in ((None, False), (bias, True)):
        got = _cpu.matmul(a, b, with_bias, relu, trans_a, trans_b, bf16=True)
        np.testing.assert_array_equal(got, _cpu.gemm_bf16(a, b, trans_a, trans_b, with_bias, relu))


def test_refused_without_bf16():
    one = np.ones((2, 2), np.float32)
    with bf16_switched_off():
        with pytest.raises(RuntimeError, match="switched off|AVX512-BF16"):
            _cpu.matmul(one, one, None, False, False, False, bf16=True)
        with pytest.raises(RuntimeError, match="switched off|AVX512-BF16"):
            _cpu.matmul_backward(one, one, one, None, False, True, True, bf16=True)
