"""The conv weight gradient from the non-zero output gradients alone (csrc/cpu/conv2d_sparse_wgrad.cpp:
taken when at most a third of gy is not zero, as behind a 2x2 max-pool, with at least 8 input channels).

Its sums have a fixed order: per chunk of images (min(N, 16) chunks here), image by image, the
non-zeros of each channel in window order (the 2x2 windows row by row, each row-major, then an odd
last column, then an odd last row), each product rounded and then added; the chunks' partial sums
added in order. So it is emulated exactly in float32 NumPy below, which pins the order (and that
the path ran) bit for bit, on every SIMD variant and thread count, for the fused layer (whose route
source lists the non-zeros without the dense gradient) and for the plain op on a dense array."""
from __future__ import annotations


import numpy as np
import pytest

from deepkern import backends, ops
from deepkern.backends import numpy as ref

from .conftest import assert_close, num_threads, randn, simd_variant

needs_cpu = pytest.mark.skipif(not backends.available("cpu"), reason="the C++ backend is not built")

# (N, C, H, W, OC, K, stride, padding): the seed CNN's conv2 (conv 11x11: odd, the pool drops a row
# and a column); one image; C = 8 (the least taken) and primes (channel vectors with tails); padding
# (windows reading the zero border); stride 2; a 5x5 kernel; one output channel; more images than
# chunks (chunks of several images)
CASES = [
    (4, 32, 13, 13, 64, 3, 1, 0),
    (1, 8, 9, 9, 3, 3, 1, 0),
    (3, 11, 10, 13, 7, 3, 1, 1),
    (2, 19, 12, 11, 5, 3, 2, 1),
    (2, 9, 11, 12, 4, 5, 1, 2),
    (3, 17, 8, 9, 1, 3, 1, 0),
    (37, 8, 7, 8, 3, 3, 1, 1),
]
IDS = [f"{n}x{c}x{h}x{w}-{oc}k{k}s{s}p{p}" for n, c, h, w, oc, k, s, p in CASES]
_MOST_CHUNKS = 16


@pytest.fixture
def cpu():
    backends.set_backend("cpu")
    yield
    backends.set_backend(None)


def _layer(rng, case):
    n, c, h, w, oc, k, s, p = case
    return randn(rng, n, c, h, w), randn(rng, oc, c, k, k) * 0.5, randn(rng, oc), s, p


def _window_order(oh: int, ow: int):
    """The pixels of an (oh, ow) plane in the kernel's order: 2x2 windows, odd last column, odd last row"""
    for ph in range(oh // 2):
        for pw in range(ow // 2):
            p = 2 * ph * ow + 2 * pw
            yield from (p, p + 1, p + ow, p + ow + 1)
    if ow % 2:
        yield from (r * ow + ow - 1 for r in range(2 * (oh // 2)))
    if oh % 2:
        yield from ((oh - 1) * ow + c for c in range(ow))


def _emulated(g, x, kernel, stride, pad):
    """(gw, gb) summed in the kernel's order in float32, a product rounded then added"""
    n, oc, oh, ow = g.shape
    c = x.shape[1]
    xp = np.pad(x, ((0, 0), (0, 0), (pad, pad), (pad, pad)))
    chunks = min(n, _MOST_CHUNKS)
    order = list(_window_order(oh, ow))
    total_w = total_b = None
    for k in range(chunks):
        acc = np.zeros((oc, c, kernel, kernel), np.float32)
        gb = np.zeros(oc, np.float32)
        for i in range(n * k // chunks, n * (k + 1) // chunks):
            for o in range(oc):
                plane = g[i, o].reshape(-1)
                s = np.float32(0.0)
                for p in order:
                    v = plane[p]
                    if v == 0:
                        continue
                    r, q = divmod(p, ow)
                    window = xp[i, :, r * stride:r * stride + kernel, q * stride:q * stride + kernel]
                    acc[o] = acc[o] + v * window
                    s = np.float32(s + v)
                gb[o] = np.float32(gb[o] + s)
        total_w = acc if total_w is None else total_w + acc
        total_b = gb if total_b is None else total_b + gb
    return total_w, total_b


def _pooled_gradient(rng, x, w, b, s, p):
    out, route = ops.conv2d_relu(x, w, b, s, p, True)
    g = randn(rng, *out.shape)
    g.flat[::5] = 0.0
    g.flat[1::11] = -0.0                     # signed zeros are zeros
    return out, route, g


def _dense_gradient(g, x, w, b, s, p):
    """the conv output gradient the unfused ops give for the pooled gradient g"""
    a = ops.relu(ops.conv2d(x, w, b, s, p))
    return ops.relu_backward(ops.max_pool2d_backward(g, a, 2), a)


@needs_cpu
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_the_fused_and_plain_weight_gradients_have_the_emulated_bits(cpu, rng, case):
    x, w, b, s, p = _layer(rng, case)
    out, route, g = _pooled_gradient(rng, x, w, b, s, p)
    fused = ops.conv2d_relu_backward(g, x, w, out, route, s, p, bias=True)
    dense = _dense_gradient(g, x, w, b, s, p)
    plain = ops.conv2d_backward(dense, x, w, s, p, bias=True)
    want_w, want_b = _emulated(dense, x, w.shape[2], s, p)
    for got, what in ((fused, "fused"), (plain, "plain")):
        np.testing.assert_array_equal(got[1], want_w, err_msg=f"gw ({what})")
        np.testing.assert_array_equal(got[2], want_b, err_msg=f"gb ({what})")
    np.testing.assert_array_equal(fused[0], plain[0])
    # the input gradient from the routes' per-pixel lists (pixel-major columns for stride 1) has the
    # GEMM's bits: the AVX2 GEMM (the same chains) when the AVX-512 one is in use
    from deepkern import _cpu
    if _cpu.gemm_variant() == "avx512":
        _cpu.set_gemm_variant("avx2")
        try:
            gemm = ops.conv2d_relu_backward(g, x, w, out, route, s, p, bias=True)
        finally:
            _cpu.set_gemm_variant("auto")
        np.testing.assert_array_equal(fused[0], gemm[0])
        np.testing.assert_array_equal(fused[1], gemm[1])
    # and the float64 reference, within rounding
    want = ref.conv2d_backward(dense, x, w, (s, s), (p, p), True)
    assert_close(fused[1], want[1], rtol=1e-4, atol=1e-4, what="gw")
    assert_close(fused[2], want[2], rtol=1e-4, atol=1e-4, what="gb")


@needs_cpu
def test_any_sparse_gradient_in_the_scan_order(cpu, rng):
    """A dense array with non-zeros anywhere (several per window, the odd last row and column): the
    plain op scans it in window order; no pool, and the fused ReLU-only layer (whose source has no
    sparse form) gives the same bits."""
    x, w, b, s, p = _layer(rng, (3, 12, 10, 11, 6, 3, 1, 0))    # conv 8x9: an odd last column
    out = ops.conv2d_relu(x, w, b, s, p, False)[0]
    g = randn(rng, *out.shape) * (rng.random(out.shape) < 0.25)
    g = g.astype(np.float32)
    g[..., -1] = randn(rng, *g.shape[:-1])                      # the last column: all non-zero
    mask = out > 0
    plain = ops.conv2d_backward(g * mask, x, w, s, p, bias=True)
    fused = ops.conv2d_relu_backward(g, x, w, out, None, s, p, bias=True)
    want_w, want_b = _emulated((g * mask).astype(np.float32), x, 3, s, p)
    np.testing.assert_array_equal(plain[1], want_w)
    np.testing.assert_array_equal(plain[2], want_b)
    for a, e in zip(fused, plain):
        np.testing.assert_array_equal(a, e)
    x, w, b, s, p = _layer(rng, (2, 9, 9, 10, 4, 3, 1, 0))      # conv 7x8: an odd last row
    g = (randn(rng, 2, 4, 7, 8) * (rng.random((2, 4, 7, 8)) < 0.3)).astype(np.float32)
    got = ops.conv2d_backward(g, x, w, s, p, bias=True)
    want_w, want_b = _emulated(g, x, 3, s, p)
    np.testing.assert_array_equal(got[1], want_w)
    np.testing.assert_array_equal(got[2], want_b)


@needs_cpu
def test_more_than_a_third_not_zero_takes_the_dense_paths(cpu, rng):
    x, w, _, s, p = _layer(rng, (3, 8, 9, 9, 4, 3, 1, 0))
    size = 3 * 4 * 7 * 7
    for keep, sparse in ((size // 3, True), (size // 3 + 1, False)):
        g = np.zeros((3, 4, 7, 7), np.float32)
        g.flat[rng.permutation(size)[:keep]] = randn(rng, keep)
        got = ops.conv2d_backward(g, x, w, s, p, bias=True)
        want_w, _ = _emulated(g, x, 3, s, p)
        assert np.array_equal(got[1], want_w) == sparse, keep
        assert_close(got[1], ref.conv2d_backward(g, x, w, (1, 1), (0, 0), True)[1], rtol=1e-4, atol=1e-4)


@needs_cpu
@pytest.mark.parametrize("case", [CASES[2], CASES[6]], ids=[IDS[2], IDS[6]])
def test_every_simd_variant_and_thread_count_gives_the_same_bits(cpu, rng, case):
    x, w, b, s, p = _layer(rng, case)
    out, route, g = _pooled_gradient(rng, x, w, b, s, p)
    want_w, want_b = _emulated(_dense_gradient(g, x, w, b, s, p), x, w.shape[2], s, p)
    for variant in ("generic", "avx2", "avx512"):
        for threads in (1, 2, 3):
            with simd_variant(variant), num_threads(threads):
                got = ops.conv2d_relu_backward(g, x, w, out, route, s, p, bias=True)
            np.testing.assert_array_equal(got[1], want_w, err_msg=f"{variant}, {threads} threads")
            np.testing.assert_array_equal(got[2], want_b, err_msg=f"{variant}, {threads} threads")


def _poison(x, g, where):
    x, g = x.copy(), g.copy()
    if where.startswith("x"):
        x[1, 3, 4, 5] = np.inf if where == "x inf" else np.nan
    else:
        g[1, 2, 0, 0] = np.inf if where == "gy inf" else np.nan  # its window reads the zero border
    return x, g


@needs_cpu
@pytest.mark.parametrize("where", ["x inf", "x nan", "gy inf", "gy nan"])
def test_non_finite_values_give_the_dense_sums_nans_and_infinities(cpu, rng, where):
    """A skipped zero gradient times an infinite x, or an infinite gradient times the zero padding,
    is NaN in the dense sum: such calls take the dense paths (the reference's NaNs and infinities)."""
    x, w, _, s, p = _layer(rng, CASES[2])                       # padding 1
    g = randn(rng, 3, 7, 10, 13) * (rng.random((3, 7, 10, 13)) < 0.2)
    x, g = _poison(x, g.astype(np.float32), where)
    got = ops.conv2d_backward(g, x, w, s, p, bias=True)
    want = ref.conv2d_backward(g.astype(np.float64), x.astype(np.float64), w.astype(np.float64), (s, s), (p, p), True)
    assert np.isnan(want[1]).any()
    for a, e in zip(got, want):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(e))
        np.testing.assert_array_equal(np.isinf(a), np.isinf(e))


@needs_cpu
@pytest.mark.parametrize("where", ["x inf", "x nan", "gy inf", "gy nan"])
def test_non_finite_values_in_the_fused_layer_follow_the_unfused_ops(cpu, rng, where):
    x, w, b, s, p = _layer(rng, CASES[2])
    out, route, g = _pooled_gradient(rng, x, w, b, s, p)
    if where.startswith("x"):
        x, _ = _poison(x, g, where)
        out, route = ops.conv2d_relu(x, w, b, s, p, True)
    else:
        routed = np.argwhere((route != 4) & (g != 0))[0]
        g[tuple(routed)] = np.inf if where == "gy inf" else np.nan
    fused = ops.conv2d_relu_backward(g, x, w, out, route, s, p, bias=True)
    plain = ops.conv2d_backward(_dense_gradient(g, x, w, b, s, p), x, w, s, p, bias=True)
    for a, e in zip(fused, plain):
        np.testing.assert_array_equal(a, e)
    assert not np.isfinite(fused[1]).all()


@needs_cpu
def test_the_weight_gradient_alone_has_the_same_bits(cpu, rng):
    x, w, b, s, p = _layer(rng, CASES[0])
    out, route, g = _pooled_gradient(rng, x, w, b, s, p)
    full = ops.conv2d_relu_backward(g, x, w, out, route, s, p, bias=True)
    gx, gw, gb = ops.conv2d_relu_backward(g, x, w, out, route, s, p, bias=False, input_grad=False)
    assert gx is None and gb is None
    np.testing.assert_array_equal(gw, full[1])
