"""The Winograd conv2d of the C++ backend (``DEEPKERN_WINOGRAD``: auto | on | off, and f2 / f4 forcing the
F(2x2, 3x3) / F(4x4, 3x3) tiles): the forward,
the fused conv + ReLU + 2x2 pool layer and the input gradient against the float64 reference and against the
direct path (``off``), on awkward shapes, non-finite data, every SIMD variant and thread count.

Tolerance. Winograd computes each 2x2 (4x4) output tile from its 4x4 (6x6) input tile through transforms
(F(2x2): B^T d B with +-1 entries, G g G^T with 1 and 1/2, A^T m A with +-1; F(4x4): entries up to 5 and 8),
so its rounding errors scale with the magnitudes of the tile's inputs and weights rather than with the
exact terms of one output: a few eps times the sum of |x| |w| over the window, where an output at a padded
corner can have a much smaller window sum than its tile. The bound is ``k eps (S + mean S)``, S =
conv2d(|x|, |w|) in float64 (for the input gradient the same with |gy| and |w|), with k = 16 for F(2x2)
(measured worst 1.4, the direct path about the same) and k = 64 for F(4x4) (measured worst 15: its points
+-2 make it about 10x less accurate). The weight and bias gradients (conv2d_winograd_wgrad, tested in
test_conv_winograd_wgrad.py) must come out the same bits whether or not the input gradient is wanted.
"""
from __future__ import annotations

import contextlib
from typing import Iterator, Tuple

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends, nn, ops
from deepkern.backends import numpy as ref
from deepkern.nn import functional as F

from .conftest import num_threads, randn

needs_cpu = pytest.mark.skipif(not backends.available("cpu"), reason="the C++ backend is not built")
pytestmark = needs_cpu

EPS32 = float(np.finfo(np.float32).eps)
TILES = ["f2", "f4"]
BOUND = {"f2": 16, "f4": 64, "off": 16}  # k of the module docstring's bound

# (N, C, H, W, OC, padding): one image, one channel, primes, odd and even outputs, 1x1 and 2x2 outputs,
# padding 0 / 1 / 2, a tile count one above / below a vector block of 16, partial last groups, images with
# several bands of tile rows and an uneven last band, the seed CNN's and the 150x150 network's layers
SHAPES = [
    (1, 1, 5, 5, 1, 0),        # 3x3 output: a partial tile row and column
    (1, 1, 3, 3, 1, 0),        # 1x1 output
    (2, 3, 4, 4, 2, 0),        # 2x2 output: one tile
    (3, 5, 7, 8, 3, 1),        # odd x even output
    (2, 3, 6, 9, 4, 2),        # padding 2
    (1, 2, 1, 2, 3, 2),        # 1x2 input, padding 2: 3x4 output
    (5, 17, 3, 3, 19, 0),      # primes, 1x1 output
    (2, 7, 35, 33, 11, 1),     # 17 tiles per row (a vector block + 1)
    (2, 7, 32, 31, 5, 0),      # 15 tiles per row (a vector block - 1)
    (13, 32, 13, 13, 64, 0),   # seed conv2, with a partial last group
    (2, 16, 45, 60, 16, 0),    # 22 x 29 tiles per image: several bands, the last one shorter
    (3, 64, 17, 17, 64, 1),    # cnn150 conv4, padded
]
IDS = [f"{n}x{c}x{h}x{w}-{oc}p{p}" for n, c, h, w, oc, p in SHAPES]


@contextlib.contextmanager
def mode(monkeypatch: pytest.MonkeyPatch, name: str) -> Iterator[None]:
    with monkeypatch.context() as m:
        m.setenv("DEEPKERN_WINOGRAD", name)
        yield


@pytest.fixture
def cpu():
    backends.set_backend("cpu")
    yield
    backends.set_backend(None)


def _inputs(rng, case) -> Tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    n, c, h, w, oc, p = case
    return randn(rng, n, c, h, w), randn(rng, oc, c, 3, 3), randn(rng, oc), p


def _assert_within(got: np.ndarray, want: np.ndarray, scale: np.ndarray, k: int, what: str) -> None:
    """|got - want| <= k eps (scale + mean(scale)): the module docstring's bound."""
    bound = k * EPS32 * (scale + scale.mean())
    err = np.abs(got.astype(np.float64) - want)
    worst = np.unravel_index(np.argmax(err - bound), err.shape)
    assert (err <= bound).all(), f"{what}: error {err[worst]:.3g} > bound {bound[worst]:.3g} at {worst}"


def _forward_scale(x, w, p):
    return ref.conv2d(np.abs(x).astype(np.float64), np.abs(w).astype(np.float64), None, (1, 1), (p, p))


def _input_grad_scale(g, x, w, p):
    return ref.conv2d_backward(np.abs(g).astype(np.float64), x.astype(np.float64), np.abs(w).astype(np.float64),
                               (1, 1), (p, p), False)[0]


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("case", SHAPES, ids=IDS)
def test_forward_matches_the_reference_and_the_direct_path(cpu, rng, monkeypatch, case, tile):
    x, w, b, p = _inputs(rng, case)
    want = ref.conv2d(x.astype(np.float64), w.astype(np.float64), b.astype(np.float64), (1, 1), (p, p))
    scale = _forward_scale(x, w, p)
    with mode(monkeypatch, tile):
        got = ops.conv2d(x, w, b, 1, p)
    with mode(monkeypatch, "off"):
        direct = ops.conv2d(x, w, b, 1, p)
    _assert_within(got, want, scale, BOUND[tile], f"winograd {tile} forward")
    _assert_within(direct, want, scale, BOUND["off"], "direct forward")


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("case", SHAPES, ids=IDS)
def test_input_gradient_matches_the_reference_and_the_direct_path(cpu, rng, monkeypatch, case, tile):
    x, w, _, p = _inputs(rng, case)
    g = randn(rng, *ops.conv2d(x, w, None, 1, p).shape)
    want = ref.conv2d_backward(g.astype(np.float64), x.astype(np.float64), w.astype(np.float64), (1, 1), (p, p),
                               True)
    with mode(monkeypatch, tile):
        got = ops.conv2d_backward(g, x, w, 1, p, bias=True)
        without = ops.conv2d_backward(g, x, w, 1, p, bias=True, input_grad=False)
    with mode(monkeypatch, "off"):
        direct = ops.conv2d_backward(g, x, w, 1, p, bias=True)
    scale = _input_grad_scale(g, x, w, p)
    _assert_within(got[0], want[0], scale, BOUND[tile], f"winograd {tile} input gradient")
    _assert_within(direct[0], want[0], scale, BOUND["off"], "direct input gradient")
    # the input gradient's block leaves the weight and bias gradients' paths as they are
    np.testing.assert_array_equal(got[1], without[1])
    np.testing.assert_array_equal(got[2], without[2])


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("case", [SHAPES[3], SHAPES[7], SHAPES[9], SHAPES[10]], ids=[IDS[3], IDS[7], IDS[9], IDS[10]])
def test_the_fused_layer_equals_the_unfused_ops_bit_for_bit(cpu, rng, monkeypatch, case, pool, tile):
    """The pool sink gets the same Winograd block as conv2d's output (only the rows the pool reads)."""
    x, w, b, p = _inputs(rng, case)
    with mode(monkeypatch, tile):
        out, route = ops.conv2d_relu(x, w, b, 1, p, pool)
        a = ops.relu(ops.conv2d(x, w, b, 1, p))
        np.testing.assert_array_equal(out, ops.max_pool2d(a, 2) if pool else a)
        g = randn(rng, *out.shape)
        got = ops.conv2d_relu_backward(g, x, w, out, route, 1, p, bias=True)
        ga = ops.max_pool2d_backward(g, a, 2) if pool else g
        want = ops.conv2d_backward(ops.relu_backward(ga, a), x, w, 1, p, bias=True)
    for e, f in zip(got, want):
        np.testing.assert_array_equal(e, f)


def test_the_fused_network_trains_alike_on_and_off(cpu, rng, monkeypatch):
    """nn.Sequential(Conv2d, ReLU, MaxPool2d(2)) runs the fused layer: on and off agree within rounding."""
    x = randn(rng, 6, 8, 15, 14)
    results = {}
    for name in ("on", "off"):
        dk.manual_seed(3)
        net = nn.Sequential(nn.Conv2d(8, 16, 3), nn.ReLU(), nn.MaxPool2d(2))
        with mode(monkeypatch, name):
            t = dk.Tensor(x, requires_grad=True)
            y = net(t)
            (y * dk.Tensor(np.cos(y.data))).sum().backward()
        results[name] = (y.data, t.grad, net[0].weight.grad)
    for e, f, what in zip(results["on"], results["off"], ("y", "grad x", "grad w")):
        np.testing.assert_allclose(e, f, rtol=1e-4, atol=1e-4 * float(np.abs(f).max()), err_msg=what)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("padding", [0, 1, 2])
def test_finite_differences_through_autograd(cpu, rng, monkeypatch, padding, tile):
    """loss = sum(conv2d(x, w) * R) is linear in x, so central differences in fp32 are exact up to rounding."""
    x, w, r = randn(rng, 2, 3, 6, 7), randn(rng, 4, 3, 3, 3), None
    with mode(monkeypatch, tile):
        t = dk.Tensor(x, requires_grad=True)
        y = F.conv2d(t, dk.Tensor(w), None, padding=padding)
        r = randn(rng, *y.data.shape)
        (y * dk.Tensor(r)).sum().backward()

        def loss(xv: np.ndarray) -> float:
            return float((ops.conv2d(xv, w, None, 1, padding).astype(np.float64) * r).sum())
        h = 0.25  # the loss is linear: a large step costs no truncation error and divides the rounding by 2h
        for idx in zip(*(rng.integers(0, s, 12) for s in x.shape)):
            up, down = x.copy(), x.copy()
            up[idx] += h
            down[idx] -= h
            numeric = (loss(up) - loss(down)) / (2 * h)
            assert abs(t.grad[idx] - numeric) <= 2e-3 * (1 + abs(numeric)), idx


def test_views_through_the_python_api(cpu, rng, monkeypatch):
    """An offset (contiguous) slice through ops, a non-contiguous view through nn.functional (which copies)."""
    big, w = randn(rng, 5, 6, 12, 14), randn(rng, 7, 6, 3, 3)
    offset = big[2:4]
    view = big[:, :, 1:, 2:]
    with mode(monkeypatch, "on"):
        got_offset = ops.conv2d(offset, w, None, 1, 1)
        got_view = F.conv2d(dk.Tensor(view), dk.Tensor(w), None, padding=1).data
    with mode(monkeypatch, "off"):
        want_offset = ops.conv2d(np.ascontiguousarray(offset), w, None, 1, 1)
        want_view = ops.conv2d(np.ascontiguousarray(view), w, None, 1, 1)
    bound = 64 * EPS32 * float(_forward_scale(big, w, 1).max())
    np.testing.assert_allclose(got_offset, want_offset, atol=bound, rtol=0)
    np.testing.assert_allclose(got_view, want_view, atol=bound, rtol=0)


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("where", ["x nan", "x +inf", "x -inf", "w inf", "gy inf", "gy nan"])
def test_non_finite_inputs_take_the_direct_path(cpu, rng, monkeypatch, where, tile):
    """inf - inf would make NaN where the direct sum gives inf: such calls fall back, equal to off exactly."""
    x, w, b, p = _inputs(rng, SHAPES[9])
    g = randn(rng, *ops.conv2d(x, w, None, 1, p).shape)
    what, kind = where.split()
    value = {"nan": np.nan, "+inf": np.inf, "-inf": -np.inf, "inf": np.inf}[kind]
    {"x": x, "w": w, "gy": g}[what][(5, 3, 4, 6) if what != "w" else (7, 2, 1, 1)] = value
    results = {}
    for name in (tile, "off"):
        with mode(monkeypatch, name):
            results[name] = (ops.conv2d(x, w, b, 1, p),) + tuple(ops.conv2d_relu(x, w, b, 1, p, True)) + tuple(
                ops.conv2d_backward(g, x, w, 1, p, bias=True))
    # the outputs computed from the non-finite array (the weight and bias gradients, from x and gy, fall
    # back in conv2d_winograd_wgrad by the same rule)
    same = {"x": [0, 1, 2, 4, 5], "w": [0, 1, 2, 3], "gy": [3, 4, 5]}[what]
    for i in same:
        np.testing.assert_array_equal(results[tile][i], results["off"][i], err_msg=f"result {i}")
    assert not np.isfinite(results[tile][3 if what == "gy" else 0]).all()


@pytest.mark.parametrize("tile", TILES)
@pytest.mark.parametrize("variant", ["generic", "avx2", "avx512"])
def test_every_simd_variant_gives_the_same_bits(cpu, rng, monkeypatch, variant, tile):
    """The transforms run in a fixed order without fused multiply-adds: the vector width must not change a bit."""
    from deepkern import _cpu
    x, w, b, p = _inputs(rng, SHAPES[7])
    g = randn(rng, *ops.conv2d(x, w, None, 1, p).shape)
    with mode(monkeypatch, tile):
        want = (ops.conv2d(x, w, b, 1, p),) + tuple(ops.conv2d_backward(g, x, w, 1, p, bias=True))
        try:
            _cpu.set_simd_variant(variant)
        except ValueError:
            pytest.skip(f"this CPU has no {variant}")
        try:
            got = (ops.conv2d(x, w, b, 1, p),) + tuple(ops.conv2d_backward(g, x, w, 1, p, bias=True))
        finally:
            _cpu.set_simd_variant("auto")
    for e, f in zip(got, want):
        np.testing.assert_array_equal(e, f)


@pytest.mark.parametrize("tile", TILES)
def test_the_thread_count_does_not_change_a_bit(cpu, rng, monkeypatch, tile):
    x, w, b, p = _inputs(rng, SHAPES[9])
    g = randn(rng, *ops.conv2d(x, w, None, 1, p).shape)
    before = dk.get_num_threads()
    results = []
    try:
        with mode(monkeypatch, tile):
            for threads in (1, 2, 3):
                dk.set_num_threads(threads)
                results.append((ops.conv2d(x, w, b, 1, p),) + tuple(ops.conv2d_relu(x, w, b, 1, p, True)) +
                               tuple(ops.conv2d_backward(g, x, w, 1, p, bias=True)))
    finally:
        dk.set_num_threads(before)
    for other in results[1:]:
        for e, f in zip(other, results[0]):
            np.testing.assert_array_equal(e, f)


def test_auto_picks_winograd_only_where_it_measured_faster(cpu, rng, monkeypatch):
    """auto: F(2x2) for the seed CNN's second layer, F(4x4) from 32x32 outputs, off for 3 input channels, and
    for the input gradient off below 16x16 (see winograd_wanted); on: F(2x2) everywhere."""
    with num_threads(2):
        for c, size, expect, expect_dx in ((32, 13, "f2", "off"), (16, 36, "f4", "f4"), (3, 13, "off", "off")):
            x, w = randn(rng, 4, c, size, size), randn(rng, 32, c, 3, 3)
            g = randn(rng, 4, 32, size - 2, size - 2)
            results = {}
            for name in ("auto", "on", "off", "f2", "f4"):
                with mode(monkeypatch, name):
                    results[name] = (ops.conv2d(x, w, None, 1, 0), ops.conv2d_backward(g, x, w, 1, 0)[0])
            np.testing.assert_array_equal(results["auto"][0], results[expect][0])
            np.testing.assert_array_equal(results["auto"][1], results[expect_dx][1])
            np.testing.assert_array_equal(results["on"][0], results["f2"][0])
            for a, b in (("f2", "off"), ("f4", "off"), ("f2", "f4")):  # the paths round differently
                assert not np.array_equal(results[a][0], results[b][0])


def test_a_bad_mode_is_a_clear_error(cpu, rng, monkeypatch):
    x, w = randn(rng, 2, 4, 6, 6), randn(rng, 3, 4, 3, 3)
    expected = "DEEPKERN_WINOGRAD.*'fast'.*auto, on, off, f2 or f4"
    with mode(monkeypatch, "fast"), pytest.raises(ValueError, match=expected):
        ops.conv2d(x, w, None, 1, 0)
    with mode(monkeypatch, ""):  # empty means auto
        ops.conv2d(x, w, None, 1, 0)
