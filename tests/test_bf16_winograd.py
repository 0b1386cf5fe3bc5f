"""bf16 Winograd (``dk.set_precision("bf16")`` on 3x3 stride-1 layers): the transforms in fp32, the
transformed tiles and weights rounded to bf16 for the products (the bf16 GEMM, fp32 sums), forward and
input gradient; against a NumPy emulation of exactly that, against the float64 convolution, on awkward
shapes, non-finite data, thread counts and SIMD variants, fused and unfused.

Tolerances. (1) Against the emulation (the kernel's fp32 transforms, the same bf16 rounding, products in
float64): only fp32 summation is left, as in test_bf16.py: 2 (C + 8) 2^-24 times the emulated magnitude
(|A|^T (sum_c |U^| |V^|) |A| + |bias|): C products per point, then the output transform's additions.
(2) Against the exact convolution: rounding U and V to bf16 (unit roundoff u = 2^-8) changes each product
by at most 2u |U| |V|, so |error| <= 2u sum_c sum_xi |A_xi| |U_xi| |V_xi|. Bounding |U| <= |G| |g| |G|^T
and |V| <= |B|^T |d| |B| turns that into a sum of |w_tap| |x_pixel| over pairs of a tap and a pixel of
the tile, with weights that for F(2x2, 3x3) total (8/3)^2 = 7.1 times the window sum S = conv2d(|x|, |w|)
for i.i.d. magnitudes (the cross terms between a tap and a pixel it does not meet in the output: hence
S + mean S, as test_conv_winograd.py's fp32 bound). Bound: k u (S + mean S) with k = 16 >= 2 x 7.1
(measured worst 1.8 over these shapes and 3 seeds). For F(4x4, 3x3) the same weights total 76.6 S on
average over a tile's outputs and up to 256 S at its last one (points +-2, constants 4, 5, 8): k = 160 >=
2 x 76.6 (measured worst 40; the worst case, 512, would bound nothing), which is why auto never picks it
in bf16. The im2col path (``DEEPKERN_WINOGRAD=off``) rounds x and w instead: error <= 2u S, k = 4
(measured worst 1.0). The weight gradient (F(3x3, 2x2), one tile size, conv2d_winograd_wgrad.cpp) rounds
its transformed input and gradient tiles: the same argument with its transforms gives weights of up to
9 S (the sum over every output position of |gy| |x| for a tap), k = 20 >= 2 x 9 (measured worst 2.6).
"""
from __future__ import annotations

import numpy as np
import pytest
from numpy.lib.stride_tricks import sliding_window_view

import deepkern as dk
from deepkern import backends, ops
from deepkern.backends import numpy as ref

from .conftest import num_threads, randn
from . import test_conv_winograd as fp32_tests
from .test_bf16 import bf16_switched_off, needs_bf16, round_bf16
from .test_conv_winograd import EPS32, IDS, SHAPES, _assert_within, _forward_scale, _input_grad_scale, _inputs, mode

_cpu = pytest.importorskip("deepkern._cpu") if backends.available("cpu") else None
pytestmark = [pytest.mark.skipif(_cpu is None, reason="the C++ CPU backend is not built"), needs_bf16]

U_BF16 = 2.0 ** -8
BOUND = {"f2": 16, "f4": 160, "off": 4}  # k of the docstring's bound (2), in units of u
BOUND_W = {"f2": 20, "f4": 20, "off": 4}  # the same for the weight gradient
AT = np.array([[1, 1, 1, 0], [0, 1, -1, -1]], np.float64)
G = np.array([[1, 0, 0], [0.5, 0.5, 0.5], [0.5, -0.5, 0.5], [0, 0, 1]], np.float64)


def _bt(d0, d1, d2, d3):
    """B^T of F(2x2, 3x3) along one axis, with the kernel's fp32 operations (conv2d_winograd_tiles.hpp)."""
    return d0 - d2, d1 + d2, d2 - d1, d1 - d3


def emulate_f2(x: np.ndarray, w: np.ndarray, b, p: int):
    """(y, magnitude) in float64: F(2x2, 3x3) with U = G w G^T (exact, then fp32) and V = B^T d B (fp32,
    rows then columns) rounded to bf16, products and sums in float64, y = A^T M A + b."""
    n, c, h, wd = x.shape
    oh, ow = h + 2 * p - 2, wd + 2 * p - 2
    th, tw = -(-oh // 2), -(-ow // 2)
    xp = np.zeros((n, c, 2 * th + 2, 2 * tw + 2), np.float32)
    xp[:, :, p:p + h, p:p + wd] = x
    d = sliding_window_view(xp, (4, 4), axis=(2, 3))[:, :, ::2, ::2]  # (n, c, th, tw, 4 rows, 4 cols)
    r = np.stack(_bt(*(d[..., j] for j in range(4))), axis=-1)       # the row direction: (.., row, q)
    v = np.stack(_bt(*(r[..., i, :] for i in range(4))), axis=-2)    # the column direction: (.., p, q)
    u = np.einsum("pi,ocij,qj->ocpq", G, w.astype(np.float64), G).astype(np.float32)
    vr, ur = round_bf16(v).astype(np.float64), round_bf16(u).astype(np.float64)
    m = np.einsum("ocpq,nctupq->notupq", ur, vr)
    mag = np.einsum("ocpq,nctupq->notupq", np.abs(ur), np.abs(vr))
    bias = np.zeros(w.shape[0]) if b is None else b.astype(np.float64)

    def out(at, mm, bb):
        y = np.einsum("ap,notupq,bq->notaub", at, mm, at) + bb[None, :, None, None, None, None]
        return y.reshape(n, w.shape[0], 2 * th, 2 * tw)[:, :, :oh, :ow]
    return out(AT, m, bias), out(np.abs(AT), mag, np.abs(bias))


def _turned(w: np.ndarray) -> np.ndarray:
    """The input gradient's weights: (C, OC, 3, 3), turned 180 degrees."""
    return np.ascontiguousarray(w.transpose(1, 0, 2, 3)[:, :, ::-1, ::-1])


def _check_emulated(got, want, mag, c, what):
    bound = 2 * (c + 8) * EPS32 / 2 * mag + 1e-30  # EPS32 = 2^-23: fp32's unit roundoff is half of it
    excess = np.abs(got.astype(np.float64) - want) - bound
    assert np.all(excess <= 0), f"{what}: max excess {float(excess.max()):.3g}"


@pytest.mark.parametrize("case", SHAPES, ids=IDS)
def test_f2_matches_the_emulated_rounding(rng, monkeypatch, case):
    """Forward and input gradient: exactly the transformed values rounded (round to nearest even), nothing else."""
    x, w, b, p = _inputs(rng, case)
    g = randn(rng, *ops.conv2d(x, w, None, 1, p).shape)
    with mode(monkeypatch, "f2"), dk.precision("bf16"):
        y = ops.conv2d(x, w, b, 1, p)
        gx = ops.conv2d_backward(g, x, w, 1, p, bias=True)[0]
    want, mag = emulate_f2(x, w, b, p)
    _check_emulated(y, want, mag, x.shape[1], "y")
    want, mag = emulate_f2(g, _turned(w), None, 2 - p)
    _check_emulated(gx, want, mag, w.shape[0], "gx")


@pytest.mark.parametrize("tile", ["f2", "f4", "off"])
@pytest.mark.parametrize("case", SHAPES, ids=IDS)
def test_error_bound_against_the_exact_convolution(rng, monkeypatch, case, tile):
    x, w, b, p = _inputs(rng, case)
    g = randn(rng, *ops.conv2d(x, w, None, 1, p).shape)
    with mode(monkeypatch, tile), dk.precision("bf16"):
        y = ops.conv2d(x, w, b, 1, p)
        gx, gw, _ = ops.conv2d_backward(g, x, w, 1, p, bias=True)
    with mode(monkeypatch, tile):
        fp32 = ops.conv2d(x, w, b, 1, p)
        fp32_gw = ops.conv2d_backward(g, x, w, 1, p)[1]
    k = BOUND[tile] * U_BF16 / EPS32  # _assert_within's k is in units of fp32's eps
    x64, w64 = x.astype(np.float64), w.astype(np.float64)
    want = ref.conv2d(x64, w64, b.astype(np.float64), (1, 1), (p, p))
    _assert_within(y, want, _forward_scale(x, w, p), k, f"bf16 {tile} forward")
    g64 = g.astype(np.float64)
    want = ref.conv2d_backward(g64, x64, w64, (1, 1), (p, p), False)
    _assert_within(gx, want[0], _input_grad_scale(g, x, w, p), k, f"bf16 {tile} input gradient")
    scale = ref.conv2d_backward(np.abs(g64), np.abs(x64), w64, (1, 1), (p, p), False)[1]
    _assert_within(gw, want[1], scale, BOUND_W[tile] * U_BF16 / EPS32, f"bf16 {tile} weight gradient")
    if x.size > 4:  # bf16 mode really rounds: not the fp32 result
        assert not np.array_equal(y, fp32)
        assert not np.array_equal(gw, fp32_gw)



def test_auto_picks_f2_where_fp32_picks_winograd(rng, monkeypatch):
    """auto in bf16: F(2x2) (never F(4x4)) on the layers fp32's auto runs by Winograd; the input gradient
    off below 16x16 planes; off for 3 input channels. The weight gradient by Winograd (on fp32's rule) only
    where the input gradient is not left to the im2col GEMMs, which make gw beside it for less."""
    with num_threads(2):
        for c, size, expect, expect_dx in ((32, 13, "f2", "off"), (16, 36, "f2", "f2"), (3, 13, "off", "off")):
            x, w = randn(rng, 4, c, size, size), randn(rng, 32, c, 3, 3)
            g = randn(rng, 4, 32, size - 2, size - 2)
            results = {}
            for name in ("auto", "on", "off", "f2", "f4"):
                with mode(monkeypatch, name), dk.precision("bf16"):
                    results[name] = (ops.conv2d(x, w, None, 1, 0), *ops.conv2d_backward(g, x, w, 1, 0)[:2],
                                     ops.conv2d_backward(g, x, w, 1, 0, input_grad=False)[1])
            np.testing.assert_array_equal(results["auto"][0], results[expect][0])
            np.testing.assert_array_equal(results["auto"][1], results[expect_dx][1])
            np.testing.assert_array_equal(results["auto"][2], results[expect_dx][2])   # gw with gx
            np.testing.assert_array_equal(results["auto"][3], results["on" if c > 3 else "off"][3])  # without
            np.testing.assert_array_equal(results["on"][0], results["f2"][0])
            for a, b in (("f2", "off"), ("f4", "off"), ("f2", "f4")):  # the paths round differently
                assert not np.array_equal(results[a][0], results[b][0])
            assert not np.array_equal(results["on"][3], results["off"][3])


@pytest.mark.parametrize("tile", ["f2", "f4"])
@pytest.mark.parametrize("where", ["x nan", "x +inf", "x -inf", "w inf", "gy inf", "gy nan"])
def test_non_finite_inputs_take_the_im2col_path(rng, monkeypatch, where, tile):
    """As in fp32: inf - inf would make NaN where the direct sum gives inf, so such calls run the bf16
    im2col GEMMs: the results equal off's exactly."""
    x, w, b, p = _inputs(rng, SHAPES[9])
    g = randn(rng, *ops.conv2d(x, w, None, 1, p).shape)
    what, kind = where.split()
    value = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf, "inf": np.inf}[kind]
    {"x": x, "w": w, "gy": g}[what][(5, 3, 4, 6) if what != "w" else (7, 2, 1, 1)] = value
    results = {}
    for name in (tile, "off"):
        with mode(monkeypatch, name), dk.precision("bf16"):
            results[name] = (ops.conv2d(x, w, b, 1, p),) + tuple(ops.conv2d_relu(x, w, b, 1, p, True)) + tuple(
                ops.conv2d_backward(g, x, w, 1, p, bias=True))
    same = {"x": [0, 1, 2, 4, 5], "w": [0, 1, 2, 3], "gy": [3, 4, 5]}[what]
    for i in same:
        np.testing.assert_array_equal(results[tile][i], results["off"][i], err_msg=f"result {i}")
    assert not np.isfinite(results[tile][3 if what == "gy" else 0]).all()


@pytest.mark.parametrize("tile", ["f2", "f4"])
@pytest.mark.parametrize("case", [SHAPES[0], SHAPES[6], SHAPES[9], SHAPES[10]], ids=[IDS[0], IDS[6], IDS[9], IDS[10]])
def test_same_bits_for_any_thread_count_and_simd_variant(rng, monkeypatch, case, tile):
    x, w, b, p = _inputs(rng, case)
    g = randn(rng, *ops.conv2d(x, w, None, 1, p).shape)
    before = dk.get_num_threads()
    runs = []
    try:
        with mode(monkeypatch, tile), dk.precision("bf16"):
            for threads, variant in ((1, "auto"), (2, "auto"), (3, "auto"), (2, "generic"), (1, "avx2")):
                dk.set_num_threads(threads)
                _cpu.set_simd_variant(variant)
                runs.append((ops.conv2d(x, w, b, 1, p),) + tuple(ops.conv2d_relu(x, w, b, 1, p, True)) +
                            tuple(ops.conv2d_backward(g, x, w, 1, p, bias=True)))
    finally:
        dk.set_num_threads(before)
        _cpu.set_simd_variant("auto")
    for run in runs[1:]:
        for a, first in zip(run, runs[0]):
            np.testing.assert_array_equal(a, first)


@pytest.mark.parametrize("tile", ["f2", "f4"])
@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("case", [SHAPES[3], SHAPES[7], SHAPES[9], SHAPES[11]], ids=[IDS[3], IDS[7], IDS[9], IDS[11]])
def test_the_fused_layer_equals_the_unfused_ops_bit_for_bit(rng, monkeypatch, case, pool, tile):
    """Odd outputs (the pool skips the last row/column): the pool sink gets conv2d's bf16 Winograd values
    (test_conv_winograd.py's test, run in bf16)."""
    with dk.precision("bf16"):
        fp32_tests.test_the_fused_layer_equals_the_unfused_ops_bit_for_bit(None, rng, monkeypatch, case, pool, tile)


def test_refused_when_bf16_is_unavailable(rng, monkeypatch):
    """A Winograd layer in bf16 on a CPU without AVX512-BF16: refused as the im2col path is; fp32 unchanged."""
    x, w, b, p = _inputs(rng, SHAPES[9])
    g = randn(rng, *ops.conv2d(x, w, None, 1, p).shape)
    with mode(monkeypatch, "f2"):
        want = ops.conv2d(x, w, b, 1, p)
        with bf16_switched_off():
            with pytest.raises(RuntimeError, match="switched off|AVX512-BF16"):
                _cpu.conv2d(x, w, b, (1, 1), (p, p), bf16=True)
            with pytest.raises(RuntimeError, match="switched off|AVX512-BF16"):
                _cpu.conv2d_backward(g, x, w, (1, 1), (p, p), True, True, bf16=True)
            with pytest.raises(RuntimeError, match="switched off|AVX512-BF16"):
                _cpu.conv2d_relu(x, w, b, (1, 1), (p, p), True, bf16=True)
            np.testing.assert_array_equal(ops.conv2d(x, w, b, 1, p), want)
