"""The C++ backend's Winograd F(3x3, 2x2) weight gradient of 3x3 stride-1 layers (DEEPKERN_WINOGRAD).

``on`` runs it wherever the geometry allows (3x3, stride 1, padding <= 2), ``off`` never, ``auto`` (the
default) where it measured faster. It computes gw and gb; the input gradient still comes from the
direct path, so gx is the same bits either way.

Tolerance: each of the 16 M entries per (o, c) sums T products of transformed values (sums of up to 4
inputs and of up to 4 output gradients, so up to 16x the direct products), and the output transform adds
up to 9 of them with weights 1/4..1. Its rounding error grows like the direct sum's (with the sqrt of
the n_terms = N*OH*OW terms) times a constant of a few units. On N(0, 1) data over SHAPES it measured at
most 1.7e-6 * sqrt(n_terms), the direct path 2.1e-6 (its long GEMM reductions round as much); the bound
is the one the direct path's tests use, 1e-5 * sqrt(n_terms), plus the reference's rtol.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends, nn, ops
from deepkern.backends import numpy as ref

from .conftest import assert_close, randn, simd_variant

pytestmark = pytest.mark.skipif(not backends.available("cpu"), reason="the C++ backend is not built")

# (N, C, H, W, OC, padding): 1x1 outputs, single image/channel/filter, primes, odd and even output
# sizes, padding 0/1/2, sizes one above/below a 2x2 tile and a 16-float block, images cut into
# several bands of tile rows (large C + OC), a tile row wider than the buffer's estimate, the seed CNN's
# second layer
SHAPES = [
    (1, 1, 3, 3, 1, 0),       # 1x1 output
    (2, 1, 1, 1, 3, 1),       # 1x1 input, padding 1
    (1, 2, 1, 2, 1, 2),       # padding 2 around a 1x2 image
    (2, 3, 5, 6, 4, 0),       # output 3x4
    (3, 5, 8, 7, 7, 1),       # primes, output 8x7
    (2, 7, 10, 11, 13, 2),    # padding 2, output 12x13
    (1, 8, 4, 4, 1, 2),       # one filter
    (2, 19, 4, 37, 17, 0),    # channels 16 + 3, output rows of 35 (16-blocks + tail)
    (3, 16, 18, 17, 16, 1),   # output 18x17: tile +0 / +1
    (2, 64, 30, 30, 64, 0),   # 14 tile rows of 14: cut into bands
    (1, 64, 5, 152, 64, 0),   # one tile row of 75 tiles
    (4, 32, 13, 13, 64, 0),   # seed CNN conv2 (11x11 output)
]
IDS = [f"{n}x{c}x{h}x{w}-{oc}p{p}" for n, c, h, w, oc, p in SHAPES]


@pytest.fixture
def cpu():
    backends.set_backend("cpu")
    yield
    backends.set_backend(None)


@contextlib.contextmanager
def _mode(mode: str):
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("DEEPKERN_WINOGRAD", mode)
        yield


def _inputs(rng, shape):
    n, c, h, w, oc, p = shape
    x, wt = randn(rng, n, c, h, w), randn(rng, oc, c, 3, 3)
    g = randn(rng, *ref.conv2d(x, wt, None, (1, 1), (p, p)).shape)
    return x, wt, g, p


def _backward(mode, g, x, w, p, **kw):
    with _mode(mode):
        return ops.conv2d_backward(g, x, w, 1, p, bias=True, **kw)


def _tolerance(g):
    return 1e-5 * np.sqrt(g.shape[0] * g.shape[2] * g.shape[3])


@pytest.mark.parametrize("shape", SHAPES, ids=IDS)
def test_matches_the_reference_and_the_direct_path(cpu, rng, shape):
    x, w, g, p = _inputs(rng, shape)
    want = ref.conv2d_backward(g, x, w, (1, 1), (p, p), True)
    on, off = _backward("on", g, x, w, p), _backward("off", g, x, w, p)
    atol = _tolerance(g)
    for got, what in ((on, "on"), (off, "off")):
        assert_close(got[1], want[1], atol=atol, what=f"grad w ({what})")
        assert_close(got[2], want[2], atol=atol, what=f"grad bias ({what})")
    assert_close(on[1], off[1], atol=2 * atol, what="grad w, on vs off")
    # the input gradient: conv2d_winograd's under "on" (tests/test_conv_winograd.py), within rounding
    assert_close(on[0], want[0], atol=1e-5 * max(1.0, np.sqrt(w.shape[0] * 9)), what="grad x (on)")


@pytest.mark.parametrize("shape", [SHAPES[5], SHAPES[9], SHAPES[11]], ids=[IDS[5], IDS[9], IDS[11]])
def test_no_input_gradient_gives_the_same_bits(cpu, rng, shape):
    x, w, g, p = _inputs(rng, shape)
    full = _backward("on", g, x, w, p)
    part = _backward("on", g, x, w, p, input_grad=False)
    assert part[0] is None
    np.testing.assert_array_equal(part[1], full[1])
    np.testing.assert_array_equal(part[2], full[2])
    with _mode("on"):
        gx, gw, gb = ops.conv2d_backward(g, x, w, 1, p, bias=False, input_grad=False)
    assert gx is None and gb is None
    np.testing.assert_array_equal(gw, full[1])


@pytest.mark.parametrize("shape", [SHAPES[7], SHAPES[11]], ids=[IDS[7], IDS[11]])
def test_every_simd_variant_and_thread_count_gives_the_same_bits(cpu, rng, shape):
    x, w, g, p = _inputs(rng, shape)
    want = _backward("on", g, x, w, p)
    before = dk.get_num_threads()
    try:
        for variant in ("generic", "avx2", "avx512"):
            for threads in (1, 2, 3):
                dk.set_num_threads(threads)
                with simd_variant(variant):
                    got = _backward("on", g, x, w, p)
                for a, e in zip(got, want):
                    np.testing.assert_array_equal(a, e, err_msg=f"{variant}, {threads} threads")
    finally:
        dk.set_num_threads(before)


def _poison_cases(rng):
    """(name, x, g): inputs with which the transforms would make NaN or overflow where the direct sum does not"""
    x, w, g, p = _inputs(rng, (3, 9, 8, 9, 5, 1))
    g = np.abs(g)
    cases = []
    xi = x.copy()
    xi[1, 2, 3, 4] = np.inf  # direct: +inf in the taps that see it; transforms: inf - inf
    cases.append(("x +inf", xi, g))
    xi = x.copy()
    xi[0, 1, 2, 2], xi[0, 1, 2, 4] = np.inf, -np.inf
    cases.append(("x +inf and -inf", xi, g))
    gi = g.copy()
    gi[2, 3, 1, 1] = np.inf
    cases.append(("gy +inf", x, gi))
    gi = g.copy()
    gi[0, 0, 4, 5] = np.nan
    cases.append(("gy NaN", x, gi))
    xi = x.copy()
    xi[0, 0, 0, 0] = np.nan
    cases.append(("x NaN", xi, g))
    big = np.clip(x.astype(np.float64) * 1e38, -3e38, 3e38).astype(np.float32)
    cases.append(("x near the float32 limit", big, g))  # the transforms' sums overflow
    return w, p, cases


def test_non_finite_values_fall_back_to_the_direct_path(cpu, rng):
    w, p, cases = _poison_cases(rng)
    for name, x, g in cases:
        on, off = _backward("on", g, x, w, p), _backward("off", g, x, w, p)
        # gw and gb (the input gradient from gy and w: tests/test_conv_winograd.py's non-finite cases)
        for a, e in zip(on[1:], off[1:]):
            np.testing.assert_array_equal(a, e, err_msg=name)  # NaN positions and infinities equal
        if name == "x +inf":  # the case reaches the rule: the direct sums hold +inf beside finite values
            assert np.isposinf(off[1]).any() and np.isfinite(off[1]).any()


def test_auto_picks_the_measured_shapes(cpu, rng):
    # seed CNN conv2 (32 channels, 11x11): Winograd; conv1 (1 channel): direct; 3x3 outputs: direct
    for shape, winograd in (((3, 32, 13, 13, 64, 0), True), ((3, 1, 28, 28, 32, 0), False),
                            ((3, 64, 5, 5, 64, 0), False)):
        x, w, g, p = _inputs(rng, shape)
        auto = _backward("auto", g, x, w, p)
        want = _backward("on" if winograd else "off", g, x, w, p)
        for a, e in zip(auto[1:], want[1:]):  # gw, gb (the input gradient has its own rule)
            np.testing.assert_array_equal(a, e, err_msg=str(shape))
    with pytest.MonkeyPatch.context() as mp:
        mp.delenv("DEEPKERN_WINOGRAD", raising=False)
        x, w, g, p = _inputs(rng, (3, 32, 13, 13, 64, 0))
        default = ops.conv2d_backward(g, x, w, 1, p, bias=True)
    np.testing.assert_array_equal(default[1], _backward("auto", g, x, w, p)[1])


def test_a_bad_mode_is_a_clear_error(cpu, rng):
    x, w, g, p = _inputs(rng, SHAPES[3])
    with pytest.raises(ValueError, match="DEEPKERN_WINOGRAD"):
        _backward("fast", g, x, w, p)


def test_finite_differences_through_autograd(cpu, rng):
    """w.grad of sum(conv2d(x, w, b) * r) against central differences of the float64 reference loss."""
    x, w, r, p = _inputs(rng, (2, 9, 7, 8, 3, 1))
    b = randn(rng, 3)
    with _mode("on"):
        wt, bt = dk.Tensor(w, requires_grad=True), dk.Tensor(b, requires_grad=True)
        (nn.functional.conv2d(dk.Tensor(x), wt, bt, padding=p) * dk.Tensor(r)).sum().backward()
    x64, w64, b64, r64 = (a.astype(np.float64) for a in (x, w, b, r))

    def loss():
        return float((ref.conv2d(x64, w64, b64, (1, 1), (p, p)) * r64).sum())

    eps = 1e-3  # the loss is linear in w and b: the differences are exact up to rounding
    for param, grad in ((w64, wt.grad), (b64, bt.grad)):
        numeric = np.zeros_like(param)
        flat, nflat = param.reshape(-1), numeric.reshape(-1)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + eps
            up = loss()
            flat[i] = keep - eps
            down = loss()
            flat[i] = keep
            nflat[i] = (up - down) / (2 * eps)
        assert_close(grad, numeric.astype(np.float32), rtol=1e-4, atol=_tolerance(r))


@pytest.mark.parametrize("n_images", [1, 5])
def test_the_fused_layer_on_and_off(cpu, rng, n_images):
    """nn.Sequential(Conv2d, ReLU, MaxPool2d(2)) trains on the fused kernel, whose backward builds the
    conv output gradient per image group (the gradient source)."""
    x = randn(rng, n_images, 16, 13, 12)
    grads = {}
    for mode in ("on", "off"):
        model = nn.Sequential(nn.Conv2d(16, 24, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2))
        seed = np.random.default_rng(7)
        for param in model.parameters():
            param.data[...] = seed.standard_normal(param.data.shape).astype(np.float32) * 0.2
        with _mode(mode):
            xt = dk.Tensor(x, requires_grad=True)
            out = model(xt)
            (out * dk.Tensor(np.cos(out.numpy()))).sum().backward()
        grads[mode] = [xt.grad] + [param.grad for param in model.parameters()]
    for a, e in zip(grads["on"], grads["off"]):  # "on" also runs the Winograd forward and input gradient
        assert_close(a, e, atol=1e-5 * np.sqrt(n_images * 13 * 12) * 4)


def test_the_fused_kernel_equals_the_unfused_ops_bit_for_bit(cpu, rng):
    """The gradient source gives the same gw bits as the array gradient of the unfused ops."""
    x, w, _, p = _inputs(rng, (5, 16, 13, 13, 24, 0))
    b = randn(rng, 24)
    with _mode("on"):
        out, route = ops.conv2d_relu(x, w, b, 1, p, True)
        g = randn(rng, *out.shape)
        fused = ops.conv2d_relu_backward(g, x, w, out, route, 1, p, bias=True)
        a = ops.relu(ops.conv2d(x, w, b, 1, p))
        ga = ops.relu_backward(ops.max_pool2d_backward(g, a, 2), a)
        unfused = ops.conv2d_backward(ga, x, w, 1, p, bias=True)
    for f, u in zip(fused, unfused):
        np.testing.assert_array_equal(f, u)


@pytest.mark.parametrize("variant", ["scalar", "avx2", "avx512"])
def test_every_gemm_kernel_reads_the_transformed_operands_in_place(cpu, rng, variant):
    """The 16 GEMMs read both transformed operands in place (GemmArgs::a_in_place) with each kernel set."""
    from deepkern import _cpu
    x, w, g, p = _inputs(rng, SHAPES[8])
    want = ref.conv2d_backward(g, x, w, (1, 1), (p, p), True)
    try:
        _cpu.set_gemm_variant(variant)
    except ValueError:
        pytest.skip(f"this CPU has no {variant}")
    try:
        got = _backward("on", g, x, w, p, input_grad=False)
    finally:
        _cpu.set_gemm_variant("auto")
    assert_close(got[1], want[1], atol=_tolerance(g), what=f"grad w ({variant})")
    assert_close(got[2], want[2], atol=_tolerance(g), what=f"grad bias ({variant})")
