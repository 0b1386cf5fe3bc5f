"""The fused conv + ReLU (+ 2x2 max-pool) layer (``ops.conv2d_relu``, ``F.conv2d_relu``) equals the
unfused ops in turn, and the networks use it.

The C++ kernel pools each image's conv output in cache and keeps one route byte per output; its
backward rebuilds the conv output gradient from the routes inside the conv backward. It runs the
same GEMMs on the same operands as the unfused path, so outputs and gradients are compared bit
for bit with ``conv2d`` -> ``relu`` -> ``max_pool2d`` (and their backwards) on the C++ backend, and
within rounding with the NumPy reference, whose composition (``backends/_fused.py``) is checked
against finite differences.
"""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends, nn, ops
from deepkern.backends import _fused
from deepkern.backends import numpy as ref
from deepkern.nn import functional as F

from .conftest import assert_close, randn

needs_cpu = pytest.mark.skipif(not backends.available("cpu"), reason="the C++ backend is not built")

# (N, C, H, W, OC, K, stride, padding): odd conv outputs (the pool drops a row/column), one image,
# primes, padding, strides, a 1x1 layer (the image is its own column matrix), many taps (the
# "wide" forward that reads windows in place), many images (grouped GEMMs), the seed CNN's layers
CASES = [
    (2, 3, 9, 11, 5, 3, 1, 0),      # conv 7x9: odd both ways
    (1, 1, 6, 6, 1, 3, 1, 0),       # 1 image, 1 channel, conv 4x4
    (3, 2, 13, 7, 7, 2, 1, 1),      # padding, conv 14x8
    (2, 3, 12, 10, 4, 3, 2, 1),     # stride 2: conv 6x5
    (5, 4, 7, 9, 3, 1, 1, 0),       # 1x1
    (3, 16, 12, 13, 6, 3, 1, 1),    # 144 taps: wide forward, odd width
    (2, 7, 17, 19, 11, 5, 1, 2),    # primes everywhere, padded wide forward
    (9, 1, 28, 28, 32, 3, 1, 0),    # seed CNN conv1 (26x26 -> 13x13)
    (9, 32, 13, 13, 64, 3, 1, 0),   # seed CNN conv2 (11x11 -> 5x5)
    (17, 3, 10, 10, 8, 3, 1, 0),    # more images than chunks
]
IDS = [f"{n}x{c}x{h}x{w}-{oc}k{k}s{s}p{p}" for n, c, h, w, oc, k, s, p in CASES]


@pytest.fixture
def cpu():
    backends.set_backend("cpu")
    yield
    backends.set_backend(None)


def _inputs(rng, case):
    n, c, h, w, oc, k, s, p = case
    return randn(rng, n, c, h, w), randn(rng, oc, c, k, k) * 0.5, randn(rng, oc), (s, s), (p, p)


def _unfused_forward(x, w, b, stride, padding, pool):
    y = ops.relu(ops.conv2d(x, w, b, stride, padding))
    return ops.max_pool2d(y, 2) if pool else y


def _unfused_backward(g, x, w, b, stride, padding, pool):
    a = ops.relu(ops.conv2d(x, w, b, stride, padding))
    ga = ops.max_pool2d_backward(g, a, 2) if pool else g
    return ops.conv2d_backward(ops.relu_backward(ga, a), x, w, stride, padding, bias=True)


def _same(got, want, what):
    for i, (a, e) in enumerate(zip(got, want)):
        np.testing.assert_array_equal(a, e, err_msg=f"{what}[{i}]")


# ---------------------------------------------------------------------------- C++ kernel
@needs_cpu
@pytest.mark.parametrize("pool", [True, False])
@pytest.mark.parametrize("case", CASES, ids=IDS)
def test_fused_equals_the_unfused_ops_bit_for_bit(cpu, rng, case, pool):
    x, w, b, stride, padding = _inputs(rng, case)
    out, route = ops.conv2d_relu(x, w, b, stride, padding, pool)
    np.testing.assert_array_equal(out, _unfused_forward(x, w, b, stride, padding, pool))
    assert (route is not None) == pool
    g = randn(rng, *out.shape)
    got = ops.conv2d_relu_backward(g, x, w, out, route, stride, padding, bias=True)
    _same(got, _unfused_backward(g, x, w, b, stride, padding, pool), "gradients")
    gx, gw, gb = ops.conv2d_relu_backward(g, x, w, out, route, stride, padding, bias=False, input_grad=False)
    assert gx is None and gb is None
    np.testing.assert_array_equal(gw, got[1])


@needs_cpu
@pytest.mark.parametrize("case", CASES[:7], ids=IDS[:7])
def test_fused_matches_the_reference(cpu, rng, case):
    x, w, b, stride, padding = _inputs(rng, case)
    out, route = ops.conv2d_relu(x, w, b, stride, padding, True)
    want_out, want_route = ref.conv2d_relu(x, w, b, stride, padding, True)
    assert_close(out, want_out, what="pooled output")
    assert route.dtype == np.uint8 and route.shape == out.shape
    decided = np.abs(want_out) > 1e-4  # a route can differ only where rounding decides a tie or the sign
    np.testing.assert_array_equal(route[decided], want_route[decided])
    g = randn(rng, *out.shape)
    got = ops.conv2d_relu_backward(g, x, w, out, route, stride, padding, bias=True)
    want = ref.conv2d_relu_backward(g, x, w, out, route, stride, padding, True, True)
    for a, e, what in zip(got, want, ("gx", "gw", "gb")):
        assert_close(a, e, rtol=1e-4, atol=1e-4, what=what)


@needs_cpu
@pytest.mark.parametrize("variant", ["generic", "avx2", "avx512"])
def test_every_simd_variant_gives_the_same_bits(cpu, rng, variant):
    from deepkern import _cpu
    x, w, b, stride, padding = _inputs(rng, CASES[5])
    x[0, :, 3, 4] = np.nan  # NaN windows take the rare path
    want = ops.conv2d_relu(x, w, b, stride, padding, True)
    g = randn(rng, *want[0].shape)
    want_grads = ops.conv2d_relu_backward(g, x, w, want[0], want[1], stride, padding, bias=True)
    try:
        _cpu.set_simd_variant(variant)
    except ValueError:
        pytest.skip(f"this CPU has no {variant}")
    try:
        got = ops.conv2d_relu(x, w, b, stride, padding, True)
        got_grads = ops.conv2d_relu_backward(g, x, w, got[0], got[1], stride, padding, bias=True)
    finally:
        _cpu.set_simd_variant("auto")
    _same(got, want, f"forward ({variant})")
    _same(got_grads, want_grads, f"gradients ({variant})")


@needs_cpu
@pytest.mark.parametrize("pool", [True, False])
def test_the_thread_count_does_not_change_a_bit(cpu, rng, pool):
    x, w, b, stride, padding = _inputs(rng, CASES[8])
    before = dk.get_num_threads()
    results = []
    try:
        for threads in (1, 2, 3):
            dk.set_num_threads(threads)
            out, route = ops.conv2d_relu(x, w, b, stride, padding, pool)
            g = np.sin(out)
            results.append((out, route) + tuple(ops.conv2d_relu_backward(g, x, w, out, route, stride, padding,
                                                                         bias=True)))
    finally:
        dk.set_num_threads(before)
    for other in results[1:]:
        for a, e in zip(other, results[0]):
            np.testing.assert_array_equal(a, e)


@needs_cpu
@pytest.mark.parametrize("pool", [True, False])
def test_nan_and_infinities_follow_the_unfused_ops(cpu, rng, pool):
    x, w, b, stride, padding = _inputs(rng, CASES[0])
    x[0, 1, 2, 3] = np.nan      # NaN through its windows: the pool's maximum, kept by the ReLU
    x[1, 0, 5, 5] = np.inf
    b[2], b[3] = np.inf, -np.inf  # a channel of +inf (routes to each window's first) and one of 0
    out, route = ops.conv2d_relu(x, w, b, stride, padding, pool)
    want = _unfused_forward(x, w, b, stride, padding, pool)
    np.testing.assert_array_equal(out, want)  # NaN positions equal, values equal
    # channel 2's taps are +inf or NaN, channel 3's -inf (0 after the ReLU) or NaN
    inf2, zero3 = np.isposinf(out[:, 2]), out[:, 3] == 0
    assert np.isnan(out).any() and inf2.any() and zero3.any()
    assert (inf2 | np.isnan(out[:, 2])).all() and (zero3 | np.isnan(out[:, 3])).all()
    if pool:
        assert (route[np.isnan(out)] == _fused.NO_ROUTE).all()  # the ReLU blocks a NaN's gradient
        assert (route[:, 2][inf2] == 0).all()                    # equal maxima: the first tap
        assert (route[:, 3] == _fused.NO_ROUTE).all()
    g = randn(rng, *out.shape)
    got = ops.conv2d_relu_backward(g, x, w, out, route, stride, padding, bias=True)
    _same(got, _unfused_backward(g, x, w, b, stride, padding, pool), "gradients")


@needs_cpu
def test_routes_pick_the_first_maximum_and_the_relu_blocks(cpu):
    # one 1x1 identity channel over a hand-made plane: the routes are readable directly
    plane = np.array([[1, 1, -2, -3, 5],
                      [0, 1, -1, -1, 5],
                      [2, 0, np.nan, 7, 0],
                      [3, 3, np.nan, 1, 0],
                      [9, 9, 9, 9, 9]], np.float32)
    x, w = plane[None, None], np.ones((1, 1, 1, 1), np.float32)
    out, route = ops.conv2d_relu(x, w, None, 1, 0, True)
    np.testing.assert_array_equal(out[0, 0], np.array([[1, 0], [3, np.nan]], np.float32))
    np.testing.assert_array_equal(route[0, 0], np.array([[0, 4], [2, 4]], np.uint8))
    gx, gw, gb = ops.conv2d_relu_backward(np.ones_like(out), x, w, out, route, 1, 0, bias=False)
    want = np.zeros_like(plane)
    want[0, 0] = want[3, 0] = 1
    np.testing.assert_array_equal(gx[0, 0], want)


@needs_cpu
def test_the_binding_handles_empty_outputs(rng):
    # ops refuses empty arrays; the kernels behind it must still handle them (zero-size rule):
    # a 3x3 conv output of 1x1 pools to nothing, and an empty batch gives empty outputs, zero gw
    from deepkern import _cpu
    x, w = randn(rng, 2, 2, 3, 3), randn(rng, 4, 2, 3, 3)
    out, route = _cpu.conv2d_relu(x, w, None, (1, 1), (0, 0), True)
    assert out.shape == route.shape == (2, 4, 0, 0)
    gx, gw, _ = _cpu.conv2d_relu_backward(out, x, w, None, route, (1, 1), (0, 0), False, True)
    assert gx.shape == x.shape and not gx.any() and not gw.any()
    empty = np.zeros((0, 2, 6, 6), np.float32)
    out, route = _cpu.conv2d_relu(empty, w, None, (1, 1), (0, 0), True)
    assert out.shape == (0, 4, 2, 2)
    assert not _cpu.conv2d_relu_backward(out, empty, w, None, route, (1, 1), (0, 0), False, True)[1].any()
    with pytest.raises(ValueError, match="route"):
        _cpu.conv2d_relu_backward(out, empty, w, None, np.zeros((0, 4, 2, 3), np.uint8), (1, 1), (0, 0), False, True)


def test_ops_refuse_a_wrong_route_or_output(rng):
    x, w = randn(rng, 1, 1, 6, 6), randn(rng, 2, 1, 3, 3)
    out, route = ops.conv2d_relu(x, w, None, 1, 0, True)
    with pytest.raises(ValueError, match="route"):
        ops.conv2d_relu_backward(out, x, w, None, route.astype(np.int64))
    with pytest.raises(ValueError, match="grad_out"):
        ops.conv2d_relu_backward(out[:, :, :1], x, w, None, route)
    with pytest.raises(ValueError, match="out"):
        ops.conv2d_relu_backward(randn(rng, 1, 2, 4, 4), x, w)


# ---------------------------------------------------------------------------- the reference
def test_reference_composition_against_finite_differences():
    rng = np.random.default_rng(5)
    x, w, b = rng.standard_normal((2, 2, 7, 8)), rng.standard_normal((3, 2, 3, 3)), rng.standard_normal(3)
    stride, padding, eps = (1, 1), (1, 0), 1e-6
    out, route = ref.conv2d_relu(x, w, b, stride, padding, True)
    r = rng.standard_normal(out.shape)
    gx, gw, gb = ref.conv2d_relu_backward(r, x, w, out, route, stride, padding, True, True)
    for analytic, arr in ((gx, x), (gw, w), (gb, b)):
        flat, numeric = arr.reshape(-1), np.zeros(arr.size)
        for i in range(flat.size):
            keep = flat[i]
            flat[i] = keep + eps
            up = (ref.conv2d_relu(x, w, b, stride, padding, True)[0] * r).sum()
            flat[i] = keep - eps
            down = (ref.conv2d_relu(x, w, b, stride, padding, True)[0] * r).sum()
            flat[i] = keep
            numeric[i] = (up - down) / (2 * eps)
        np.testing.assert_allclose(analytic.reshape(-1), numeric, rtol=1e-5, atol=1e-7)


@needs_cpu
def test_bf16_precision_gives_the_layer_of_the_backends_ops(cpu, rng):
    # in bf16 the C++ backend runs the fused kernel on bf16 products (conv2d_bf16.cpp): the same
    # values and routes as its bf16 conv2d, relu and pool in turn (more cases: test_bf16_conv.py)
    from deepkern._precision import bf16_supported, precision
    if not bf16_supported():
        pytest.skip("this CPU has no AVX512-BF16")
    x, w, b, stride, padding = _inputs(rng, CASES[0])
    with precision("bf16"):
        out, route = ops.conv2d_relu(x, w, b, stride, padding, True)
        np.testing.assert_array_equal(out, _unfused_forward(x, w, b, stride, padding, True))
        g = randn(rng, *out.shape)
        got = ops.conv2d_relu_backward(g, x, w, out, route, stride, padding, bias=True)
        _same(got, _unfused_backward(g, x, w, b, stride, padding, True), "gradients")


@pytest.mark.parametrize("name", ["cupy", "numba"])
def test_the_composed_backends_match_the_reference(rng, name):
    # backends/_fused.py composes the layer from each backend's ops; the CuPy backend's code runs
    # on NumPy arrays too (array API), so its routing is checked here without a GPU
    if name == "numba" and not backends.available("numba"):
        pytest.skip("numba is not installed")
    import importlib
    module = importlib.import_module(f"deepkern.backends.{name}")
    x, w, b, stride, padding = _inputs(rng, CASES[0])
    x[1, 2, 4, 4] = np.nan
    for pool in (True, False):
        out, route = module.conv2d_relu(x, w, b, stride, padding, pool)
        want_out, want_route = ref.conv2d_relu(x, w, b, stride, padding, pool)
        np.testing.assert_array_equal(np.isnan(out), np.isnan(want_out))
        assert_close(np.nan_to_num(out), np.nan_to_num(want_out), what=f"{name} output")
        if pool:
            decided = ~(np.abs(want_out) <= 1e-4)  # NaN windows included; near-zero ones are rounding's call
            np.testing.assert_array_equal(route[decided], want_route[decided])
        g = randn(rng, *out.shape)
        x_ok = np.nan_to_num(x)   # finite gradients to compare
        out, route = module.conv2d_relu(x_ok, w, b, stride, padding, pool)
        got = module.conv2d_relu_backward(g, x_ok, w, out, route, stride, padding, True, True)
        want = ref.conv2d_relu_backward(g, x_ok, w, out, route, stride, padding, True, True)
        for a, e, what in zip(got, want, ("gx", "gw", "gb")):
            assert_close(a, e, rtol=1e-4, atol=1e-4, what=f"{name} {what}")


@needs_cpu
def test_autograd_gradients_against_finite_differences(cpu):
    # the float32 kernel through autograd, against central differences of its own forward
    rng = np.random.default_rng(7)
    x = dk.Tensor(randn(rng, 2, 3, 9, 8), requires_grad=True)
    w = dk.Tensor(randn(rng, 4, 3, 3, 3) * 0.5, requires_grad=True)
    b = dk.Tensor(randn(rng, 4) * 0.1, requires_grad=True)
    r = randn(rng, 2, 4, 3, 3)
    (F.conv2d_relu(x, w, b, 1, 0, pool=True) * r).sum().backward()
    eps = 1e-3  # small enough that no ReLU or window maximum switches inside +-eps here
    for t in (x, w, b):
        flat = t.data.reshape(-1)
        for i in rng.choice(flat.size, size=min(flat.size, 12), replace=False):
            keep = flat[i]
            flat[i] = keep + eps
            up = float((ops.conv2d_relu(x.data, w.data, b.data, 1, 0, True)[0] * r).sum(dtype=np.float64))
            flat[i] = keep - eps
            down = float((ops.conv2d_relu(x.data, w.data, b.data, 1, 0, True)[0] * r).sum(dtype=np.float64))
            flat[i] = keep
            numeric = (up - down) / (2 * eps)
            assert abs(t.grad.reshape(-1)[i] - numeric) < 1e-2 + 1e-2 * abs(numeric)


# ---------------------------------------------------------------------------- the networks use it
def _count_fused(monkeypatch):
    calls = []
    real = ops.conv2d_relu

    def counting(*args, **kwargs):
        calls.append(args[-1] if len(args) == 6 else kwargs.get("pool", False))
        return real(*args, **kwargs)
    monkeypatch.setattr(ops, "conv2d_relu", counting)
    return calls


def _train_grads(model, x, y):
    model.zero_grad()
    loss = nn.CrossEntropyLoss()(model(dk.Tensor(x)), y)
    loss.backward()
    return loss.item(), [p.grad.copy() for p in model.parameters()]


@pytest.mark.parametrize("size", [28, 15])  # 15: odd conv outputs, the pools drop a row and a column
def test_seed_cnn_runs_fused_with_the_unfused_results(monkeypatch, rng, size):
    dk.manual_seed(3)
    model = dk.models.CNN(image_size=size)
    layers = list(model.layers)
    # the same layers with each ReLU + MaxPool2d pair nested: the outer Sequential sees no
    # Conv2d, ReLU pair, so it runs what the library ran before the fusion
    unfused = nn.Sequential(layers[0], nn.Sequential(*layers[1:3]), layers[3], nn.Sequential(*layers[4:6]),
                            *layers[6:])
    x, y = randn(rng, 5, 1, size, size), rng.integers(0, 10, 5)
    calls = _count_fused(monkeypatch)
    loss, grads = _train_grads(model, x, y)
    assert calls == [True, True]
    calls.clear()
    want_loss, want_grads = _train_grads(unfused, x, y)
    assert calls == []
    assert loss == pytest.approx(want_loss, rel=1e-6)
    for g, e in zip(grads, want_grads):
        assert_close(g, e, rtol=1e-5, atol=1e-6, what="parameter gradient")
    model.eval()
    with dk.no_grad():
        np.testing.assert_allclose(model(x).numpy(), unfused(x).numpy(), rtol=1e-6, atol=1e-6)


def test_sequential_fuses_conv_relu_without_a_pool(monkeypatch, rng):
    dk.manual_seed(4)
    conv = nn.Conv2d(2, 3, 3, padding=1)
    model = nn.Sequential(conv, nn.ReLU(), nn.MaxPool2d(3), nn.Flatten())   # a 3x3 pool is not fused
    calls = _count_fused(monkeypatch)
    x = randn(rng, 2, 2, 9, 9)
    out = model(x)
    assert calls == [False]
    np.testing.assert_array_equal(out.numpy(), F.flatten(F.max_pool2d(F.relu(conv(x)), 3), 1).numpy())


def test_keras_conv_relu_and_pooling_run_fused(monkeypatch, rng):
    from deepkern import keras
    dk.manual_seed(5)
    model = keras.Sequential([
        keras.layers.Conv2D(4, (3, 3), activation="relu", input_shape=(11, 12, 2)),
        keras.layers.MaxPooling2D((2, 2)),
        keras.layers.Conv2D(3, (3, 3), activation="relu", padding="same"),
        keras.layers.Flatten(),
        keras.layers.Dense(2, activation="softmax"),
    ])
    calls = _count_fused(monkeypatch)
    x = randn(rng, 3, 11, 12, 2)
    got = model.predict(x, verbose=0)
    assert calls == [True, False]
    conv1, conv2, dense = model.layers[0].conv, model.layers[2].conv, model.layers[4].linear
    h = F.max_pool2d(F.relu(conv1(dk.Tensor(x).transpose(0, 3, 1, 2))), 2)
    h = F.relu(conv2(h))     # deepkern's Flatten keeps the NCHW order
    want = F.softmax(dense(F.flatten(h, 1)), -1).numpy()
    assert_close(got, want, rtol=1e-5, atol=1e-6, what="keras predictions")
