"""conv2d with bf16 products (``dk.set_precision("bf16")``): forward, input and weight gradients
against the float64 reference of the bf16-rounded operands, NaN/inf, thread-count determinism,
the autograd wiring and the refusal without AVX512-BF16.

Tolerances (as in test_bf16.py): a product of two bf16 numbers is exact in fp32, so against the
float64 reference of the *rounded* operands only fp32 summation is left: at most about
K * 2^-24 * sum |a b| over the K terms an output sums (bound used: twice that). K is C*KH*KW for
the forward, N*OH*OW for the weight gradient and OC*KH*KW for the input gradient (the products
plus col2im's additions of the taps). The bias gradient has no products: an fp32 sum of gy.
These bounds describe the im2col path, which rounds x, w (and gy) themselves: the tests that use them run
with ``DEEPKERN_WINOGRAD=off``. 3x3 stride-1 layers that run bf16 Winograd round the transformed tiles and
weights instead: test_bf16_winograd.py.
"""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends, ops
from deepkern.backends import numpy as ref

from .conftest import randn
from .test_bf16 import bf16_switched_off, needs_bf16, round_bf16
from .test_conv_fused import CASES as FUSED_CASES
from .test_conv_fused import IDS as FUSED_IDS
from .test_conv_fused import _inputs, _same, _unfused_backward, _unfused_forward

_cpu = pytest.importorskip("deepkern._cpu") if backends.available("cpu") else None
pytestmark = [pytest.mark.skipif(_cpu is None, reason="the C++ CPU backend is not built"), needs_bf16]

EPS = 2.0 ** -24
FEW_TAPS = 9   # C*KH*KW up to which bf16 runs fp32's forward and weight gradient (DEEPKERN_WINOGRAD auto)

# (x shape, w shape, stride, padding): 1s, primes, padding, stride 2, 1x1, the seed CNN's layers,
# partial image groups, a reduction of two GEMM k blocks (C*KH*KW = 2400)
SHAPES = [
    ((1, 1, 1, 1), (1, 1, 1, 1), (1, 1), (0, 0)),
    ((3, 2, 7, 9), (5, 2, 3, 2), (1, 2), (1, 0)),
    ((2, 3, 5, 5), (7, 3, 1, 1), (1, 1), (0, 0)),
    ((1, 1, 4, 3), (2, 1, 2, 3), (1, 1), (2, 1)),
    ((2, 5, 23, 31), (3, 5, 5, 5), (2, 2), (2, 2)),
    ((7, 3, 11, 17), (5, 3, 3, 3), (2, 3), (1, 1)),
    ((10, 1, 28, 28), (32, 1, 3, 3), (1, 1), (0, 0)),
    ((5, 32, 13, 13), (64, 32, 3, 3), (1, 1), (0, 0)),
    ((37, 8, 13, 13), (17, 8, 3, 3), (1, 1), (1, 1)),
    ((3, 600, 5, 5), (13, 600, 2, 2), (1, 1), (0, 0)),
]
IDS = ["x{}w{}s{}p{}".format(*g) for g in SHAPES]


def offset_view(rng: np.random.Generator, *shape: int) -> np.ndarray:
    """A C-contiguous float32 view that starts inside a larger buffer (not at its allocation)."""
    big = randn(rng, shape[0] + 2, *shape[1:])
    view = big[1:1 + shape[0]]
    assert view.flags.c_contiguous and view.base is not None
    return view


def assert_within(got: np.ndarray, want: np.ndarray, scale: np.ndarray, terms: int, what: str) -> None:
    bound = 2 * max(terms, 1) * EPS * scale + 1e-30
    assert got.shape == want.shape and got.dtype == np.float32, what
    excess = np.abs(got.astype(np.float64) - want) - bound
    assert np.all(excess <= 0), f"{what}: max excess {float(excess.max()):.3g}"


def case(rng, geometry):
    xs, ws, stride, padding = geometry
    x, w, b = offset_view(rng, *xs), offset_view(rng, *ws), randn(rng, ws[0])
    g = randn(rng, *ref.conv2d(x, w, None, stride, padding).shape)
    return x, w, b, g, stride, padding


def r64(a: np.ndarray) -> np.ndarray:
    return round_bf16(a).astype(np.float64)


@pytest.fixture
def im2col(monkeypatch):
    """The bf16 im2col path everywhere (3x3 stride-1 layers would otherwise run bf16 Winograd)."""
    monkeypatch.setenv("DEEPKERN_WINOGRAD", "off")


@pytest.mark.parametrize("geometry", SHAPES, ids=IDS)
def test_forward_matches_rounded_reference(geometry, rng, im2col):
    x, w, b, _, stride, padding = case(rng, geometry)
    with dk.precision("bf16"):
        got = ops.conv2d(x, w, b, stride, padding)
    rx, rw = r64(x), r64(w)
    want = ref.conv2d(rx, rw, b.astype(np.float64), stride, padding)
    scale = ref.conv2d(np.abs(rx), np.abs(rw), np.abs(b).astype(np.float64), stride, padding)
    assert_within(got, want, scale, x.shape[1] * w.shape[2] * w.shape[3] + 1, "y")
    # and against fp32: close, but not fp32's result (the bf16 kernel really ran)
    fp32 = ops.conv2d(x, w, b, stride, padding)
    np.testing.assert_allclose(got, fp32, rtol=0, atol=0.05 * float(np.abs(scale).max()))
    if x.size > 1:
        assert np.abs(got - fp32).max() > 1e-5 * float(np.abs(scale).max())


@pytest.mark.parametrize("geometry", SHAPES, ids=IDS)
def test_gradients_match_rounded_reference(geometry, rng, im2col):
    x, w, _, g, stride, padding = case(rng, geometry)
    with dk.precision("bf16"):
        gx, gw, gb = ops.conv2d_backward(g, x, w, stride, padding, bias=True)
        gx0, gw0, gb0 = ops.conv2d_backward(g, x, w, stride, padding, bias=True, input_grad=False)
    rg, rx, rw = r64(g), r64(x), r64(w)
    want = ref.conv2d_backward(rg, rx, rw, stride, padding, False)
    scale = ref.conv2d_backward(np.abs(rg), np.abs(rx), np.abs(rw), stride, padding, False)
    oc, _, kh, kw = w.shape
    assert_within(gx, want[0], scale[0], oc * kh * kw, "gx")
    assert_within(gw, want[1], scale[1], g.shape[0] * g.shape[2] * g.shape[3], "gw")
    g64 = g.astype(np.float64)
    assert_within(gb, g64.sum(axis=(0, 2, 3)), np.abs(g64).sum(axis=(0, 2, 3)), g[:, 0].size, "gb")
    # without the input gradient: the same weight and bias gradients, bit for bit
    assert gx0 is None
    np.testing.assert_array_equal(gw0, gw)
    np.testing.assert_array_equal(gb0, gb)


def test_nan_and_inf_propagate_like_fp32(rng):
    """DESIGN's NaN rule: a NaN or inf input reaches exactly the outputs it reaches in fp32."""
    x, w, b, g, stride, padding = case(rng, ((3, 4, 9, 8), (6, 4, 3, 3), (1, 1), (1, 1)))
    x[0, 1, 2, 3] = np.nan
    x[1, 2, 5, 5] = np.inf
    x[2, 0, 0, 0] = -np.inf
    g[1, 3, 4, 4] = np.nan
    g[2, 5, 7, 2] = np.inf
    w2 = w.copy()
    w2[4, 3, 1, 1] = np.nan
    results = {}
    for prec in ("fp32", "bf16"):
        with dk.precision(prec):
            results[prec] = [ops.conv2d(x, w, b, stride, padding), ops.conv2d(x, w2, b, stride, padding),
                             *ops.conv2d_backward(g, x, w, stride, padding, bias=True)]
    for name, a, f in zip(("y", "y (NaN weight)", "gx", "gw", "gb"), results["bf16"], results["fp32"]):
        np.testing.assert_array_equal(np.isnan(a), np.isnan(f), err_msg=name)
        np.testing.assert_array_equal(np.isposinf(a), np.isposinf(f), err_msg=name)
        np.testing.assert_array_equal(np.isneginf(a), np.isneginf(f), err_msg=name)
        assert np.isnan(a).any(), name


@pytest.mark.parametrize("winograd", ["off", "on"])   # pinned: auto's choice depends on images per thread
@pytest.mark.parametrize("geometry", [SHAPES[7], SHAPES[8], ((2, 16, 13, 13), (64, 16, 3, 3), (1, 1), (0, 0))],
                         ids=["seed-conv2", "partial-groups", "two-images"])
def test_same_bits_for_any_thread_count_and_simd_variant(geometry, rng, monkeypatch, winograd):
    monkeypatch.setenv("DEEPKERN_WINOGRAD", winograd)
    x, w, b, g, stride, padding = case(rng, geometry)
    before = dk.get_num_threads()
    runs = []
    try:
        with dk.precision("bf16"):
            for threads, variant in ((1, "auto"), (2, "auto"), (3, "auto"), (2, "generic")):
                dk.set_num_threads(threads)
                _cpu.set_simd_variant(variant)
                runs.append([ops.conv2d(x, w, b, stride, padding),
                             *ops.conv2d_backward(g, x, w, stride, padding, bias=True)])
    finally:
        dk.set_num_threads(before)
        _cpu.set_simd_variant("auto")
    for run in runs[1:]:
        for a, first in zip(run, runs[0]):
            np.testing.assert_array_equal(a, first)


def test_backward_runs_in_the_forwards_precision(rng):
    """A layer built under bf16 differentiates in bf16 even when backward() runs after the block."""
    x, w, b, g, stride, padding = case(rng, ((4, 3, 8, 8), (5, 3, 3, 3), (1, 1), (1, 1)))
    xt, wt, bt = (dk.Tensor(a, requires_grad=True) for a in (x, w, b))
    with dk.precision("bf16"):
        y = dk.nn.functional.conv2d(xt, wt, bt, stride, padding)
        want = ops.conv2d_backward(g, x, w, stride, padding, bias=True)
    assert dk.get_precision() == "fp32"
    y.backward(g)
    for got, expected in zip((xt.grad, wt.grad, bt.grad), want):
        np.testing.assert_array_equal(got, expected)
    assert dk.get_precision() == "fp32"


@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("case", FUSED_CASES, ids=FUSED_IDS)
def test_fused_layer_in_bf16_equals_the_bf16_ops_in_turn(case, pool, rng):
    """conv + bias + ReLU (+ 2x2 max-pool) fused (the conv output never stored): bit for bit the
    bf16 conv2d, relu and pool in turn, forward and gradients, and not the fp32 layer."""
    x, w, b, stride, padding = _inputs(rng, case)
    x[0, 0, 1, 1] = np.nan   # NaN through the fused store and pool, as in the ops
    with dk.precision("bf16"):
        out, route = ops.conv2d_relu(x, w, b, stride, padding, pool)
        np.testing.assert_array_equal(out, _unfused_forward(x, w, b, stride, padding, pool))
        assert np.isnan(out).any()
        x = np.nan_to_num(x)
        out, route = ops.conv2d_relu(x, w, b, stride, padding, pool)
        g = randn(rng, *out.shape)
        got = ops.conv2d_relu_backward(g, x, w, None if pool else out, route, stride, padding, bias=True)
        _same(got, _unfused_backward(g, x, w, b, stride, padding, pool), "bf16 gradients")
    fp32_gw = ops.conv2d_relu_backward(g, x, w, None if pool else out, route, stride, padding, bias=True)[1]
    # behind the pool fp32's sparse backward runs, and fp32's weight gradient with few taps (conv2d_bf16.cpp)
    if (pool and x.shape[1] >= 8) or w[0].size <= FEW_TAPS:
        np.testing.assert_array_equal(got[1], fp32_gw)
    else:
        assert np.abs(got[1] - fp32_gw).max() > 0


@pytest.mark.parametrize("winograd", ["auto", "off"])
def test_backward_behind_a_pool_runs_fp32s_sparse_paths(rng, monkeypatch, winograd):
    """A mostly-zero output gradient (behind a 2x2 max-pool) skips the zeros' products in fp32's
    backward, fewer products than any bf16 path: in auto mode bf16 runs that backward, bit for bit
    fp32's (fused and plain alike); DEEPKERN_WINOGRAD=off keeps the bf16 im2col GEMMs (they round)."""
    monkeypatch.setenv("DEEPKERN_WINOGRAD", winograd)
    x, w, b = randn(rng, 6, 32, 13, 13), randn(rng, 64, 32, 3, 3) * 0.1, randn(rng, 64) * 0.1
    out, route = ops.conv2d_relu(x, w, b, 1, 0, True)
    g = randn(rng, *out.shape)
    fp32 = ops.conv2d_relu_backward(g, x, w, None, route, 1, 0, bias=True)
    a = ops.relu(ops.conv2d(x, w, b, 1, 0))
    dense = ops.relu_backward(ops.max_pool2d_backward(g, a, 2), a)   # the routes' gradient, unfused
    with dk.precision("bf16"):
        fused = ops.conv2d_relu_backward(g, x, w, None, route, 1, 0, bias=True)
        plain = ops.conv2d_backward(dense, x, w, 1, 0, bias=True)
    for got in (fused, plain):
        if winograd == "auto":
            _same(got, fp32, "bf16 behind a pool vs fp32")
        else:
            assert all(np.abs(f - e).max() > 0 for f, e in zip(got[:2], fp32[:2]))


def test_gemm_relu_keeps_nan():
    """DESIGN's NaN rule in the bf16 GEMM's fused ReLU store (max(c, 0) would turn NaN into 0)."""
    a = np.array([[np.nan, 1.0], [1.0, 1.0], [-3.0, 1.0]], np.float32)
    got = _cpu.gemm_bf16(a, np.ones((2, 2), np.float32), relu=True)
    assert np.isnan(got[0]).all()
    np.testing.assert_array_equal(got[1:], [[2, 2], [0, 0]])


def test_refused_when_bf16_is_unavailable():
    x, w = np.ones((1, 2, 4, 4), np.float32), np.ones((3, 2, 3, 3), np.float32)
    g = np.ones((1, 3, 2, 2), np.float32)
    with bf16_switched_off():
        with pytest.raises(RuntimeError, match="switched off|AVX512-BF16"):
            _cpu.conv2d(x, w, None, (1, 1), (0, 0), bf16=True)
        with pytest.raises(RuntimeError, match="switched off|AVX512-BF16"):
            _cpu.conv2d_backward(g, x, w, (1, 1), (0, 0), True, True, bf16=True)
        np.testing.assert_array_equal(_cpu.conv2d(x, w, None, (1, 1), (0, 0)), np.full((1, 3, 2, 2), 18, np.float32))


def test_empty_shapes_follow_fp32():
    """No image, no output channel, no input channel: the same (product-free) results as fp32."""
    def z(*shape):
        return np.zeros(shape, np.float32)
    ones = np.ones((2, 2, 5, 5), np.float32)
    for args in ((z(0, 2, 5, 5), z(3, 2, 3, 3)), (ones, z(0, 2, 3, 3)), (z(2, 0, 5, 5), z(3, 0, 3, 3))):
        bias = np.arange(args[1].shape[0], dtype=np.float32)
        want = _cpu.conv2d(*args, bias, (1, 1), (1, 1))
        np.testing.assert_array_equal(_cpu.conv2d(*args, bias, (1, 1), (1, 1), bf16=True), want)
        g = np.ones(want.shape, np.float32)
        for got, expected in zip(_cpu.conv2d_backward(g, *args, (1, 1), (1, 1), True, True, bf16=True),
                                 _cpu.conv2d_backward(g, *args, (1, 1), (1, 1), True, True)):
            np.testing.assert_array_equal(got, expected)


def test_seed_cnn_trains_in_bf16():
    """The seed CNN learns where a bright 3x3 blob sits (left or right) with bf16 convolutions."""
    rng = np.random.default_rng(0)
    n = 256
    x = 0.1 * rng.random((n, 1, 12, 12), dtype=np.float32)
    y = rng.integers(0, 2, n)
    rows, cols = rng.integers(0, 10, n), np.minimum(rng.integers(0, 4, n) + 8 * y, 9)
    for i in range(n):
        x[i, 0, rows[i]:rows[i] + 3, cols[i]:cols[i] + 3] += 1.0
    dk.manual_seed(0)
    model = dk.models.CNN(image_size=12, num_classes=2)
    hist = dk.train.fit(model, x, y, epochs=3, batch_size=32, lr=3e-3, progress=False, precision="bf16")
    assert hist.history["accuracy"][-1] > 0.95
    assert all(p.data.dtype == np.float32 for p in model.parameters())   # fp32 master weights
    assert dk.get_precision() == "fp32"
