"""The direct kernels of few-tap conv layers (csrc/cpu/conv2d_small.*: C*KH*KW <= 32, stride 1):
the conv + bias + ReLU + 2x2 max-pool forward, computed in registers, and the weight gradient,
with lanes along output rows. Checked against the GEMM path they replace (the forward's bits
must be the GEMM's), the unfused ops, the float64 reference, thread counts and NaN/inf."""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends, ops
from deepkern.backends import numpy as ref

from .conftest import assert_close, randn

needs_avx512 = pytest.mark.skipif(not backends.available("cpu"), reason="the C++ backend is not built")

# (N, C, H, W, OC, KH, KW, padding): the seed CNN's and 150x150 network's first layers, one image
# (rows shared out to the threads), 1 pooled column, pooled rows of 16 +- 1 and of 2-3 lane steps,
# 1-5 channels (the kernels' 4- and 2-channel blocks with tails), 32 taps (the limit), 1x1 and
# 5x5 kernels, non-square kernels, padding, odd conv outputs (the pool drops a row/column)
CASES = [
    (9, 1, 28, 28, 32, 3, 3, 0),
    (3, 3, 40, 40, 32, 3, 3, 0),
    (1, 1, 12, 9, 5, 3, 3, 0),
    (2, 1, 4, 4, 3, 3, 3, 0),
    (2, 2, 34, 35, 7, 3, 3, 0),
    (2, 1, 36, 37, 1, 3, 3, 0),
    (17, 3, 11, 13, 6, 3, 3, 1),
    (3, 2, 20, 45, 9, 4, 4, 0),
    (2, 1, 19, 23, 4, 5, 5, 2),
    (4, 3, 15, 14, 2, 1, 1, 0),
    (2, 2, 13, 21, 10, 2, 3, 1),
]
IDS = [f"{n}x{c}x{h}x{w}-{oc}k{kh}x{kw}p{p}" for n, c, h, w, oc, kh, kw, p in CASES]


@pytest.fixture
def cpu():
    backends.set_backend("cpu")
    yield
    backends.set_backend(None)


def _inputs(rng, case):
    n, c, h, w, oc, kh, kw, p = case
    return randn(rng, n, c, h, w), randn(rng, oc, c, kh, kw) * 0.5, randn(rng, oc), (p, p)


def _avx512_or_skip():
    from deepkern import _cpu
    if _cpu.simd_variant() != "avx512" or _cpu.gemm_variant() != "avx512":
        pytest.skip("the direct kernels run with the AVX-512 variants only")


@needs_avx512
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_forward_has_the_gemm_paths_bits(cpu, rng, case):
    """With the AVX-512 GEMM the direct forward runs; with the AVX2 GEMM (same fused multiply-adds
    in the same order) the im2col + GEMM path does: the bits must agree, NaN/inf included."""
    from deepkern import _cpu
    _avx512_or_skip()
    x, w, b, padding = _inputs(rng, case)
    x.flat[rng.integers(0, x.size, 3)] = [np.nan, np.inf, -np.inf]
    direct = ops.conv2d_relu(x, w, b, 1, padding, True)
    _cpu.set_gemm_variant("avx2")
    try:
        gemm = ops.conv2d_relu(x, w, b, 1, padding, True)
    finally:
        _cpu.set_gemm_variant("auto")
    for got, want, what in zip(direct, gemm, ("out", "route")):
        np.testing.assert_array_equal(got, want, err_msg=what)
    np.testing.assert_array_equal(ops.conv2d_relu(x, w, None, 1, padding, True)[1],
                                  ops.conv2d_relu(x, w, np.zeros_like(b), 1, padding, True)[1])


@needs_avx512
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fused_layer_matches_the_reference_and_the_unfused_ops(cpu, rng, case):
    x, w, b, padding = _inputs(rng, case)
    out, route = ops.conv2d_relu(x, w, b, 1, padding, True)
    want_out, want_route = ref.conv2d_relu(x, w, b, (1, 1), padding, True)
    assert_close(out, want_out, rtol=1e-5, atol=1e-5, what="out")
    unfused = ops.max_pool2d(ops.relu(ops.conv2d(x, w, b, 1, padding)), 2)
    np.testing.assert_array_equal(out, unfused)
    # routes agree where the window's maximum is clear of rounding
    g = randn(rng, *out.shape)
    got = ops.conv2d_relu_backward(g, x, w, out, route, 1, padding, bias=True, input_grad=False)
    want = ref.conv2d_relu_backward(g, x, w, out, route, (1, 1), padding, True, False)
    assert got[0] is None
    assert_close(got[1], want[1], rtol=1e-4, atol=1e-4, what="gw")
    assert_close(got[2], want[2], rtol=1e-4, atol=1e-4, what="gb")
    # the same sums with and without the input gradient, and through the plain conv backward
    with_gx = ops.conv2d_relu_backward(g, x, w, out, route, 1, padding, bias=True)
    np.testing.assert_array_equal(with_gx[1], got[1])
    np.testing.assert_array_equal(with_gx[2], got[2])
    a = ops.relu(ops.conv2d(x, w, b, 1, padding))
    plain = ops.conv2d_backward(ops.relu_backward(ops.max_pool2d_backward(g, a, 2), a), x, w, 1, padding, bias=True,
                                input_grad=False)
    np.testing.assert_array_equal(plain[1], got[1])
    np.testing.assert_array_equal(plain[2], got[2])


@needs_avx512
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_routed_weight_gradient_keeps_the_plain_ops_bits(cpu, rng, case):
    """Behind the pool the weight gradient reads the pooled gradient and the routes and leaves the
    zero products out: its sums must still be the plain conv2d_backward's bit for bit, with -0, NaN,
    +-inf and extreme values in the pooled gradient, windows whose ReLU passes nothing, and an
    infinity in x (then the whole conv output gradient is built and multiplied: 0 * inf is NaN)."""
    x, w, b, padding = _inputs(rng, case)
    b -= 1.0   # many windows below zero: their routes pass no gradient
    g = None
    for poison_x in (False, True):
        if poison_x:
            x.flat[rng.integers(0, x.size)] = np.inf
        out, route = ops.conv2d_relu(x, w, b, 1, padding, True)
        if g is None:
            g = randn(rng, *out.shape)
            flat = g.reshape(-1)
            special = np.array([-0.0, 0.0, np.nan, np.inf, -np.inf, 3e38, -1e-38, 1e-45], np.float32)
            flat[rng.choice(flat.size, size=min(flat.size, special.size), replace=False)] = special[:min(flat.size, 8)]
        got = ops.conv2d_relu_backward(g, x, w, out, route, 1, padding, bias=True, input_grad=False)
        a = ops.relu(ops.conv2d(x, w, b, 1, padding))
        plain = ops.conv2d_backward(ops.relu_backward(ops.max_pool2d_backward(g, a, 2), a), x, w, 1, padding,
                                    bias=True, input_grad=False)
        np.testing.assert_array_equal(got[1], plain[1], err_msg=f"gw, inf in x: {poison_x}")
        np.testing.assert_array_equal(got[2], plain[2], err_msg=f"gb, inf in x: {poison_x}")


@needs_avx512
@pytest.mark.parametrize("case", CASES[:4] + CASES[6:7], ids=IDS[:4] + IDS[6:7])
def test_weight_gradient_against_the_reference(cpu, rng, case):
    x, w, _, padding = _inputs(rng, case)
    n, c, h, wd = x.shape
    oh, ow = h + 2 * padding[0] - w.shape[2] + 1, wd + 2 * padding[1] - w.shape[3] + 1
    g = randn(rng, n, w.shape[0], oh, ow)
    for bias in (True, False):
        got = ops.conv2d_backward(g, x, w, 1, padding, bias=bias, input_grad=False)
        want = ref.conv2d_backward(g, x, w, (1, 1), padding, bias, False)
        assert_close(got[1], want[1], rtol=1e-4, atol=1e-4, what="gw")
        if bias:
            assert_close(got[2], want[2], rtol=1e-4, atol=1e-4, what="gb")
        else:
            assert got[2] is None


@needs_avx512
def test_the_thread_count_does_not_change_a_bit(cpu, rng):
    results = []
    before = dk.get_num_threads()
    for case in (CASES[0], CASES[2], CASES[6]):   # many images, one image (rows shared), padding
        x, w, b, padding = _inputs(rng, case)
        per_case = []
        try:
            for threads in (1, 2, 3):
                dk.set_num_threads(threads)
                out, route = ops.conv2d_relu(x, w, b, 1, padding, True)
                grads = ops.conv2d_relu_backward(np.sin(out), x, w, out, route, 1, padding, bias=True,
                                                 input_grad=False)
                per_case.append((out, route, grads[1], grads[2]))
        finally:
            dk.set_num_threads(before)
        results.append(per_case)
    for per_case in results:
        for other in per_case[1:]:
            for a, e in zip(other, per_case[0]):
                np.testing.assert_array_equal(a, e)


@needs_avx512
def test_nan_and_infinities_follow_the_unfused_ops(cpu, rng):
    x, w, b, padding = _inputs(rng, CASES[0])
    x[0, 0, 2, 3] = np.nan
    x[1, 0, 5, 5] = np.inf
    x[2, 0, 9, 9] = -np.inf
    b[2], b[3] = np.inf, -np.inf
    out, route = ops.conv2d_relu(x, w, b, 1, padding, True)
    a = ops.relu(ops.conv2d(x, w, b, 1, padding))
    np.testing.assert_array_equal(out, ops.max_pool2d(a, 2))
    assert np.isnan(out).any() and np.isposinf(out).any()
    g = randn(rng, *out.shape)
    got = ops.conv2d_relu_backward(g, x, w, out, route, 1, padding, bias=True, input_grad=False)
    plain = ops.conv2d_backward(ops.relu_backward(ops.max_pool2d_backward(g, a, 2), a), x, w, 1, padding, bias=True,
                                input_grad=False)
    np.testing.assert_array_equal(got[1], plain[1])   # NaN where an inf/NaN pixel met a gradient
    np.testing.assert_array_equal(got[2], plain[2])
    assert np.isnan(got[1]).any()


@needs_avx512
def test_other_simd_variants_agree_to_rounding(cpu, rng):
    from deepkern import _cpu
    x, w, b, padding = _inputs(rng, CASES[1])
    out, route = ops.conv2d_relu(x, w, b, 1, padding, True)
    g = randn(rng, *out.shape)
    want = ops.conv2d_relu_backward(g, x, w, out, route, 1, padding, bias=True, input_grad=False)
    for variant in ("avx2", "generic"):
        try:
            _cpu.set_simd_variant(variant)
        except ValueError:
            continue
        try:
            got_out, got_route = ops.conv2d_relu(x, w, b, 1, padding, True)
            got = ops.conv2d_relu_backward(g, x, w, got_out, got_route, 1, padding, bias=True, input_grad=False)
        finally:
            _cpu.set_simd_variant("auto")
        np.testing.assert_array_equal(got_out, out)   # the forward's sums are the GEMM's everywhere
        # sums of ~4,000 products in another order: rounding of a few units in 1e-5 of their size
        assert_close(got[1], want[1], rtol=1e-4, atol=1e-4, what=f"gw ({variant})")
        assert_close(got[2], want[2], rtol=1e-4, atol=1e-4, what=f"gb ({variant})")


def test_autograd_gradients_of_a_first_layer_against_finite_differences():
    """A one-channel conv + ReLU + pool (the seed's first layer, small), float64 central differences
    of the loss sum(out * r) against the direct kernels' weight and bias gradients."""
    if not backends.available("cpu"):
        pytest.skip("the C++ backend is not built")
    rng = np.random.default_rng(7)
    x, w, b = randn(rng, 2, 1, 10, 9), randn(rng, 4, 1, 3, 3), randn(rng, 4) * 0.1 + 0.5
    backends.set_backend("cpu")
    try:
        out, route = ops.conv2d_relu(x, w, b, 1, 0, True)
        r = randn(rng, *out.shape)
        _, gw, gb = ops.conv2d_relu_backward(r, x, w, out, route, 1, 0, bias=True, input_grad=False)
    finally:
        backends.set_backend(None)

    def loss(w64, b64):
        y, _ = ref.conv2d_relu(x.astype(np.float64), w64, b64, (1, 1), (0, 0), True)
        return float((y * r).sum())
    eps = 1e-4
    w64, b64 = w.astype(np.float64), b.astype(np.float64)
    for idx in [(0, 0, 0, 0), (1, 0, 2, 1), (3, 0, 1, 2)]:
        up, down = w64.copy(), w64.copy()
        up[idx] += eps
        down[idx] -= eps
        assert abs((loss(up, b64) - loss(down, b64)) / (2 * eps) - gw[idx]) < 1e-3 * (1 + abs(gw[idx]))
    for o in range(4):
        up, down = b64.copy(), b64.copy()
        up[o] += eps
        down[o] -= eps
        assert abs((loss(w64, up) - loss(w64, down)) / (2 * eps) - gb[o]) < 1e-3 * (1 + abs(gb[o]))
