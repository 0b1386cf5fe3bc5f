"""bf16 precision on few-tap conv layers (C*KH*KW <= 9, csrc/cpu/conv2d_bf16.cpp): the forward and the
weight gradient run fp32's kernels (a reduction of 9 leaves bf16 nothing to win; fp32 has direct
kernels for it), bit for bit fp32's, for the fused layer and the plain ops alike, on every thread
count and SIMD variant; the input gradient (a reduction of OC*KH*KW) stays bf16. With 10 taps, or
with DEEPKERN_WINOGRAD=off (the bf16 im2col GEMMs everywhere, as for the mostly-zero backward rule),
bf16 rounds as before."""
from __future__ import annotations


import numpy as np
import pytest

import deepkern as dk
from deepkern import backends, ops
from deepkern.backends import numpy as ref

from .conftest import num_threads, randn, simd_variant
from .test_bf16 import bf16_switched_off, needs_bf16, round_bf16
from .test_bf16_conv import EPS, FEW_TAPS

_cpu = pytest.importorskip("deepkern._cpu") if backends.available("cpu") else None
pytestmark = [pytest.mark.skipif(_cpu is None, reason="the C++ CPU backend is not built"), needs_bf16]

# (N, C, H, W, OC, KH, KW, stride, padding): the seed CNN's conv1 (9 taps, the fp32 fused kernel),
# padding and odd sizes, 2x2 over 2 channels (8 taps), a 1x1 over 9 channels, stride 2 (fp32's
# GEMMs), one tap, more images than the weight gradient's chunks
FEW = [
    (9, 1, 28, 28, 32, 3, 3, 1, 0),
    (3, 1, 11, 13, 5, 3, 3, 1, 1),
    (4, 2, 9, 10, 7, 2, 2, 1, 0),
    (5, 9, 8, 8, 6, 1, 1, 1, 0),
    (2, 1, 17, 15, 3, 3, 3, 2, 1),
    (1, 1, 1, 1, 1, 1, 1, 1, 0),
    (37, 1, 6, 7, 3, 3, 3, 1, 0),
]
FEW_IDS = ["{}x{}x{}x{}-{}k{}x{}s{}p{}".format(*c) for c in FEW]
ABOVE = (4, 10, 9, 9, 6, 1, 1, 1, 0)   # 10 taps: bf16 products


def _layer(rng, case):
    n, c, h, w, oc, kh, kw, s, p = case
    return randn(rng, n, c, h, w), randn(rng, oc, c, kh, kw) * 0.5, randn(rng, oc), (s, s), (p, p)


def _run(x, w, b, stride, padding, g, gp):
    """plain forward, fused forward (no pool, pool), plain backward, fused backward (pool) with gx"""
    plain = ops.conv2d(x, w, b, stride, padding)
    relu, _ = ops.conv2d_relu(x, w, b, stride, padding, False)
    pooled, route = ops.conv2d_relu(x, w, b, stride, padding, True) if min(plain.shape[2:]) >= 2 else (None, None)
    back = ops.conv2d_backward(g, x, w, stride, padding, bias=True)
    fused = (ops.conv2d_relu_backward(gp, x, w, None, route, stride, padding, bias=True)
             if route is not None else (None, None, None))
    return plain, relu, pooled, back, fused


def _gradients(rng, x, w, b, stride, padding):
    g = randn(rng, *ref.conv2d(x, w, None, stride, padding).shape)
    oh, ow = g.shape[2:]
    gp = randn(rng, g.shape[0], g.shape[1], oh // 2, ow // 2) if min(oh, ow) >= 2 else None
    return g, gp


@pytest.mark.parametrize("threads", [1, 2])
@pytest.mark.parametrize("case", FEW, ids=FEW_IDS)
def test_few_taps_run_fp32s_forward_and_weight_gradient(rng, case, threads):
    x, w, b, stride, padding = _layer(rng, case)
    assert w[0].size <= FEW_TAPS
    g, gp = _gradients(rng, x, w, b, stride, padding)
    with num_threads(threads):
        fp32 = _run(x, w, b, stride, padding, g, gp)
        with dk.precision("bf16"):
            bf16 = _run(x, w, b, stride, padding, g, gp)
    for name, got, want in zip(("conv2d", "conv2d_relu", "conv2d_relu pooled"), bf16[:3], fp32[:3]):
        np.testing.assert_array_equal(got, want, err_msg=name)
    for name, got, want in (("plain", bf16[3], fp32[3]), ("fused", bf16[4], fp32[4])):
        np.testing.assert_array_equal(got[1], want[1], err_msg=f"{name} gw")
        np.testing.assert_array_equal(got[2], want[2], err_msg=f"{name} gb")
    # the input gradient: bf16 products (g and w rounded), fp32 sums, within the summation bound
    gx = bf16[3][0]
    rg, rw = round_bf16(g).astype(np.float64), round_bf16(w).astype(np.float64)
    want = ref.conv2d_backward(rg, x.astype(np.float64), rw, stride, padding, False)[0]
    scale = ref.conv2d_backward(np.abs(rg), np.abs(x).astype(np.float64), np.abs(rw), stride, padding, False)[0]
    bound = 2 * w.shape[0] * w.shape[2] * w.shape[3] * EPS * scale + 1e-30
    assert np.all(np.abs(gx.astype(np.float64) - want) <= bound)
    if x.size > 1:
        assert np.abs(gx - fp32[3][0]).max() > 0   # not fp32's: the bf16 GEMM ran


@pytest.mark.parametrize("variant", ["generic", "avx2", "avx512"])
def test_fp32s_bits_on_every_simd_variant(rng, variant):
    """fp32's kernels differ per variant (the direct ones are AVX-512's): bf16 follows the variant's."""
    x, w, b, stride, padding = _layer(rng, FEW[0])
    g, gp = _gradients(rng, x, w, b, stride, padding)
    with simd_variant(variant):
        fp32 = _run(x, w, b, stride, padding, g, gp)
        with dk.precision("bf16"):
            bf16 = _run(x, w, b, stride, padding, g, gp)
    for got, want in zip(bf16[:3], fp32[:3]):
        np.testing.assert_array_equal(got, want)
    for got, want in zip(bf16[3:], fp32[3:]):
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])


@pytest.mark.parametrize("where", ["x nan", "x inf", "w nan", "g nan"])
def test_nan_and_inf_as_in_fp32(rng, where):
    x, w, b, stride, padding = _layer(rng, FEW[1])
    g, gp = _gradients(rng, x, w, b, stride, padding)
    if where.startswith("x"):
        x[1, 0, 4, 5] = np.inf if where == "x inf" else np.nan
    elif where == "w nan":
        w[2, 0, 1, 1] = np.nan
    else:
        g[0, 3, 2, 2], gp[2, 1, 1, 1] = np.nan, np.nan
    fp32 = _run(x, w, b, stride, padding, g, gp)
    with dk.precision("bf16"):
        bf16 = _run(x, w, b, stride, padding, g, gp)
    for got, want in zip(bf16[:3], fp32[:3]):
        np.testing.assert_array_equal(got, want)   # NaN where fp32 has NaN, inf where fp32 has inf
    for got, want in zip(bf16[3:], fp32[3:]):
        np.testing.assert_array_equal(got[1], want[1])
        np.testing.assert_array_equal(got[2], want[2])
    gx, gx32 = bf16[3][0], fp32[3][0]
    np.testing.assert_array_equal(np.isnan(gx), np.isnan(gx32))
    np.testing.assert_array_equal(np.isinf(gx), np.isinf(gx32))
    assert any(np.isnan(a).any() for a in (*bf16[:3], *bf16[3], *bf16[4]))


def test_ten_taps_and_winograd_off_stay_bf16(rng, monkeypatch):
    cases = [(ABOVE, "auto"), (FEW[0], "off"), (FEW[2], "off")]
    for case, mode in cases:
        monkeypatch.setenv("DEEPKERN_WINOGRAD", mode)
        x, w, b, stride, padding = _layer(rng, case)
        g, gp = _gradients(rng, x, w, b, stride, padding)
        fp32 = _run(x, w, b, stride, padding, g, gp)
        with dk.precision("bf16"):
            bf16 = _run(x, w, b, stride, padding, g, gp)
        for got, want in zip(bf16[:3], fp32[:3]):
            assert np.abs(got - want).max() > 0, (case, mode)
        # the plain weight gradient (behind a pool 10 channels take fp32's sparse one: test_bf16_conv.py)
        assert np.abs(bf16[3][1] - fp32[3][1]).max() > 0, (case, mode)


def test_few_taps_still_refused_without_bf16():
    x, w = np.ones((1, 1, 6, 6), np.float32), np.ones((2, 1, 3, 3), np.float32)
    with bf16_switched_off():
        for pool in (True, False):
            with pytest.raises(RuntimeError, match="switched off|AVX512-BF16"):
                _cpu.conv2d_relu(x, w, None, (1, 1), (0, 0), pool, bf16=True)
        with pytest.raises(RuntimeError, match="switched off|AVX512-BF16"):
            _cpu.conv2d(x, w, None, (1, 1), (0, 0), bf16=True)
