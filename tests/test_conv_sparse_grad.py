"""The conv backward's input gradient with the zero gradients' products skipped
(csrc/cpu/conv2d_sparse_grad_avx512.cpp: taken when at most a third of gy is not zero, as behind a
2x2 max-pool). Its columns are the AVX-512 GEMM's chains with the zero terms left out, added onto
the image in col2im's tap order, so the input gradient must equal the GEMM path's bit for bit; the
AVX2 GEMM (the same chains) gives the reference bits here, since the sparse kernel only runs with the
AVX-512 GEMM."""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends, ops

from .conftest import randn

needs_cpu = pytest.mark.skipif(not backends.available("cpu"), reason="the C++ backend is not built")

# (N, C, H, W, OC, K, padding): the seed CNN's conv2; CKK = C*K*K with a partial last vector (45,
# 99), over one pass of 384 taps (576: two passes), pixels per group not a multiple of 16, one
# output channel, padding, a 2x2 kernel, more images than chunks
CASES = [
    (16, 32, 13, 13, 64, 3, 0),
    (3, 5, 9, 11, 7, 3, 1),
    (2, 11, 12, 10, 9, 3, 0),
    (2, 64, 9, 9, 16, 3, 0),
    (5, 4, 8, 7, 1, 3, 2),
    (4, 6, 10, 12, 5, 2, 0),
    (19, 8, 7, 9, 12, 3, 1),
]
IDS = [f"{n}x{c}x{h}x{w}-{oc}k{k}p{p}" for n, c, h, w, oc, k, p in CASES]


@pytest.fixture
def avx512_gemm():
    from deepkern import _cpu
    if _cpu.simd_variant() != "avx512" or _cpu.gemm_variant() != "avx512":
        pytest.skip("the sparse input gradient runs with the AVX-512 variants only")
    backends.set_backend("cpu")
    yield _cpu
    backends.set_backend(None)
    _cpu.set_gemm_variant("auto")


def _gemm_path(_cpu, fn):
    _cpu.set_gemm_variant("avx2")
    try:
        return fn()
    finally:
        _cpu.set_gemm_variant("auto")


def _layer(rng, case):
    n, c, h, w, oc, k, p = case
    return randn(rng, n, c, h, w), randn(rng, oc, c, k, k) * 0.5, randn(rng, oc), p


@needs_cpu
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_pooled_layer_input_gradient_has_the_gemm_bits(avx512_gemm, rng, case):
    x, w, b, p = _layer(rng, case)
    out, route = ops.conv2d_relu(x, w, b, 1, p, True)
    g = randn(rng, *out.shape)
    g.flat[::7] = -0.0                       # signed zeros are zeros
    g.flat[3] = np.nan                       # a NaN gradient is not zero: it reaches its window's taps
    if g.size > 10:
        g.flat[10] = np.inf
    got = ops.conv2d_relu_backward(g, x, w, out, route, 1, p, bias=True)
    want = _gemm_path(avx512_gemm, lambda: ops.conv2d_relu_backward(g, x, w, out, route, 1, p, bias=True))
    for a, e, what in zip(got, want, ("gx", "gw", "gb")):
        np.testing.assert_array_equal(a, e, err_msg=what)
    assert np.isnan(got[0]).any()
    # and the plain ops on the same (mostly zero) gradient
    a = ops.relu(ops.conv2d(x, w, b, 1, p))
    plain = ops.conv2d_backward(ops.relu_backward(ops.max_pool2d_backward(g, a, 2), a), x, w, 1, p, bias=True)
    np.testing.assert_array_equal(plain[0], got[0])


@needs_cpu
def test_sparse_and_dense_gradients_of_the_plain_backward(avx512_gemm, rng):
    x, w, _, p = _layer(rng, CASES[1])
    oh, ow = x.shape[2] + 2 * p - 2, x.shape[3] + 2 * p - 2
    for keep in (0.1, 0.3, 0.6, 1.0):        # below and above the one-third switch
        g = randn(rng, x.shape[0], w.shape[0], oh, ow) * (rng.random((x.shape[0], w.shape[0], oh, ow)) < keep)
        got = ops.conv2d_backward(g.astype(np.float32), x, w, 1, p, bias=True)
        want = _gemm_path(avx512_gemm, lambda: ops.conv2d_backward(g.astype(np.float32), x, w, 1, p, bias=True))
        for a, e in zip(got, want):
            np.testing.assert_array_equal(a, e)


@needs_cpu
def test_non_finite_weights_take_the_gemm(avx512_gemm, rng):
    """An infinite weight times a zero gradient is NaN in the dense product: the sparse kernel would
    skip it, so a non-finite w sends the call to the GEMM."""
    x, w, b, p = _layer(rng, CASES[0])
    out, route = ops.conv2d_relu(x, w, b, 1, p, True)
    w[0, 0, 1, 1] = np.inf
    g = randn(rng, *out.shape)
    got = ops.conv2d_relu_backward(g, x, w, out, route, 1, p, bias=True)
    want = _gemm_path(avx512_gemm, lambda: ops.conv2d_relu_backward(g, x, w, out, route, 1, p, bias=True))
    np.testing.assert_array_equal(got[0], want[0])
    assert np.isnan(got[0][:, 0]).mean() > 0.5   # channel 0: inf * 0 at most of its pixels


@needs_cpu
def test_the_thread_count_does_not_change_a_bit(avx512_gemm, rng):
    x, w, b, p = _layer(rng, CASES[6])
    out, route = ops.conv2d_relu(x, w, b, 1, p, True)
    g = randn(rng, *out.shape)
    before = dk.get_num_threads()
    runs = []
    try:
        for threads in (1, 2, 3):
            dk.set_num_threads(threads)
            runs.append(ops.conv2d_relu_backward(g, x, w, out, route, 1, p, bias=True)[0])
    finally:
        dk.set_num_threads(before)
    for other in runs[1:]:
        np.testing.assert_array_equal(other, runs[0])


# (N, C, H, W, OC, K, stride, padding): strides and padding (taps on the padding are dropped, in
# either the columns' scatter or col2im), channels that are not a multiple of 16 (padded lanes),
# 130 channels (one tap's lanes split over two passes), 70 output channels (narrow passes of 5
# vectors for the weights to stay in L1), a 5x5 and a strided 1x1 kernel
GEOMETRIES = [
    (3, 20, 11, 12, 6, 3, 2, 1),
    (2, 130, 7, 7, 5, 3, 1, 1),
    (2, 7, 9, 9, 3, 5, 1, 2),
    (2, 16, 10, 10, 70, 3, 1, 0),
    (2, 9, 8, 8, 4, 1, 2, 0),
    (3, 12, 10, 9, 8, 3, 2, 0),
]
GEOMETRY_IDS = [f"{n}x{c}x{h}x{w}-{oc}k{k}s{st}p{p}" for n, c, h, w, oc, k, st, p in GEOMETRIES]


def _sparse_gradient(rng, shape, keep=0.2):
    g = (randn(rng, *shape) * (rng.random(shape) < keep)).astype(np.float32)
    flat = g.reshape(-1)
    flat[1::11] = -0.0                        # signed zeros are zeros
    flat[5] = np.nan                          # a NaN gradient reaches every tap of its window
    flat[-2] = -np.inf
    return g


@needs_cpu
@pytest.mark.parametrize("case", GEOMETRIES, ids=GEOMETRY_IDS)
def test_any_geometry_has_the_gemm_and_col2im_bits(avx512_gemm, rng, case):
    n, c, h, w_, oc, k, st, p = case
    x, w = randn(rng, n, c, h, w_), randn(rng, oc, c, k, k) * 0.5
    oh, ow = (h + 2 * p - k) // st + 1, (w_ + 2 * p - k) // st + 1
    g = _sparse_gradient(rng, (n, oc, oh, ow))
    got = ops.conv2d_backward(g, x, w, st, p, bias=True)
    want = _gemm_path(avx512_gemm, lambda: ops.conv2d_backward(g, x, w, st, p, bias=True))
    for a, e, what in zip(got, want, ("gx", "gw", "gb")):
        np.testing.assert_array_equal(a, e, err_msg=what)
    assert np.isnan(got[0]).any() and np.isinf(got[0]).any()


@needs_cpu
@pytest.mark.parametrize("case", GEOMETRIES[:4], ids=GEOMETRY_IDS[:4])
def test_pooled_layers_of_any_geometry_have_the_gemm_bits(avx512_gemm, rng, case):
    n, c, h, w_, oc, k, st, p = case
    x, w, b = randn(rng, n, c, h, w_), randn(rng, oc, c, k, k) * 0.5, randn(rng, oc)
    out, route = ops.conv2d_relu(x, w, b, st, p, True)
    g = randn(rng, *out.shape)
    g.flat[::5] = -0.0
    got = ops.conv2d_relu_backward(g, x, w, out, route, st, p, bias=True)
    want = _gemm_path(avx512_gemm, lambda: ops.conv2d_relu_backward(g, x, w, out, route, st, p, bias=True))
    for a, e, what in zip(got, want, ("gx", "gw", "gb")):
        np.testing.assert_array_equal(a, e, err_msg=what)


def _gemm_then_col2im(g, x_shape, w, stride, padding):
    """The dense input gradient in NumPy's float32 adds: each image's columns w^T @ gy from the AVX-512
    GEMM (ops.matmul), then col2im adding the taps in (i, j) order from +0, as the C++ col2im does."""
    n, c, h, wd = x_shape
    oc, _, kh, kw = w.shape
    oh, ow = g.shape[2:]
    gx = np.empty(x_shape, np.float32)
    for i in range(n):
        cols = ops.matmul(w.reshape(oc, -1), np.ascontiguousarray(g[i].reshape(oc, -1)), trans_a=True)
        cols = cols.reshape(c, kh, kw, oh, ow)
        padded = np.zeros((c, h + 2 * padding, wd + 2 * padding), np.float32)
        for a in range(kh):
            for b in range(kw):
                padded[:, a:a + stride * oh:stride, b:b + stride * ow:stride] += cols[:, a, b]
        gx[i] = padded[:, padding:padding + h, padding:padding + wd]
    return gx


@needs_cpu
@pytest.mark.parametrize("oc", [385, 500, 800])
def test_more_channels_than_a_gemm_k_block_sum_in_its_blocks(avx512_gemm, rng, oc):
    """The GEMM sums the OC channels of a column in K blocks of at most 384 (each from +0, then added
    onto the blocks before it): the sparse input gradient sums in the same blocks, whatever channels
    of a block are zero."""
    x, w = randn(rng, 2, 8, 7, 7), randn(rng, oc, 8, 3, 3) * 0.5
    for stride, padding in ((1, 0), (2, 1)):
        oh = (7 + 2 * padding - 3) // stride + 1
        g = _sparse_gradient(rng, (2, oc, oh, oh))
        g[0, 390:500] = 0.0                  # whole blocks' worth of zero channels at some pixels
        got = ops.conv2d_backward(g, x, w, stride, padding)[0]
        np.testing.assert_array_equal(got, _gemm_then_col2im(g, x.shape, w, stride, padding))
