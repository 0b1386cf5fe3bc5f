"""Every op and every backward of each fast CPU backend against the NumPy reference."""
from __future__ import annotations

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import deepkern as dk
from deepkern.backends import numpy as ref

from .conftest import assert_close, randn

SETTINGS = settings(max_examples=25, deadline=None,
                    suppress_health_check=[HealthCheck.function_scoped_fixture])
# 1, primes and sizes just off common tile sizes (8, 16, 32, 48, 64)
AWKWARD = st.sampled_from([1, 2, 3, 5, 7, 13, 15, 17, 31, 33, 47, 49, 63, 65, 97])


def _k_tol(k: int) -> float:
    # float32 dot products of length k drift ~sqrt(k) ulps from the float64 reference
    return 1e-5 * max(1.0, np.sqrt(k))


# ---------------------------------------------------------------------------- matmul
@SETTINGS
@given(m=AWKWARD, n=AWKWARD, k=AWKWARD, trans_a=st.booleans(), trans_b=st.booleans(),
       with_bias=st.booleans(), relu=st.booleans(), seed=st.integers(0, 2**31))
def test_matmul_matches_reference(cpu_backend, m, n, k, trans_a, trans_b, with_bias, relu, seed):
    rng = np.random.default_rng(seed)
    a = randn(rng, k, m) if trans_a else randn(rng, m, k)
    b = randn(rng, n, k) if trans_b else randn(rng, k, n)
    bias = randn(rng, n) if with_bias else None
    act = "relu" if relu else None
    out = dk.ops.matmul(a, b, bias, act, trans_a, trans_b)
    expect = ref.matmul(a, b, bias, relu, trans_a, trans_b)
    assert_close(out, expect, rtol=1e-4, atol=_k_tol(k), what="matmul")

    g = randn(rng, m, n)
    got = dk.ops.matmul_backward(g, a, b, out=expect if relu else None, activation=act,
                                 trans_a=trans_a, trans_b=trans_b, bias=with_bias)
    want = ref.matmul_backward(g, a, b, expect if relu else None, trans_a, trans_b, with_bias)
    assert_close(got[0], want[0], atol=_k_tol(n), what="grad a")
    assert_close(got[1], want[1], atol=_k_tol(m), what="grad b")
    if with_bias:
        assert_close(got[2], want[2], atol=_k_tol(m), what="grad bias")
    else:
        assert got[2] is None


@pytest.mark.parametrize("trans_a", [False, True])
@pytest.mark.parametrize("relu", [False, True])
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (100, 784, 256), (17, 5, 3), (150, 31, 400)])
def test_matmul_backward_without_the_gradient_of_a(cpu_backend, rng, m, k, n, trans_a, relu):
    # a_grad=False: the gradient of a is None, the others are the bits of the full call
    a = randn(rng, k, m) if trans_a else randn(rng, m, k)
    b, g = randn(rng, n, k), randn(rng, m, n)
    g[0, 0] = np.nan
    act = "relu" if relu else None
    out = dk.ops.matmul(a, b, None, act, trans_a, True) if relu else None
    full = dk.ops.matmul_backward(g, a, b, out, act, trans_a, True, bias=True)
    part = dk.ops.matmul_backward(g, a, b, out, act, trans_a, True, bias=True, a_grad=False)
    assert part[0] is None and full[0] is not None
    np.testing.assert_array_equal(part[1], full[1])
    np.testing.assert_array_equal(part[2], full[2])


def test_first_linear_layer_backward_is_one_call_without_the_input_gradient(monkeypatch, rng):
    # the first layer (input without requires_grad) asks for gw and gb only, in one kernel call
    from deepkern import backends
    from deepkern.autograd import Tensor
    x = Tensor(randn(rng, 5, 6))
    kernels = backends.for_array(x.data)   # the backend in use (DEEPKERN_BACKEND may pick another)
    calls = []
    real = kernels.matmul_backward

    def spy(*args):
        calls.append(args[7:])
        return real(*args)
    monkeypatch.setattr(kernels, "matmul_backward", spy)
    layer = dk.nn.Linear(6, 4)
    layer(x).sum().backward()
    assert calls == [(False,)]
    assert x.grad is None
    np.testing.assert_array_equal(layer.bias.grad, np.full(4, 5.0, np.float32))
    np.testing.assert_allclose(layer.weight.grad, np.tile(x.data.sum(axis=0), (4, 1)), rtol=1e-5)


@pytest.mark.parametrize("m,k,n", [(100, 784, 256), (128, 1600, 64), (64, 3000, 33), (257, 129, 255)])
def test_matmul_large_shapes(cpu_backend, rng, m, k, n):
    a, b, bias = randn(rng, m, k), randn(rng, k, n), randn(rng, n)
    assert_close(dk.ops.matmul(a, b, bias, "relu"), ref.matmul(a, b, bias, True, False, False),
                 atol=_k_tol(k), what="matmul")


# ---------------------------------------------------------------------------- conv2d
@SETTINGS
@given(n=st.integers(1, 3), c=st.integers(1, 5), oc=st.integers(1, 7), h=st.integers(1, 12),
       w=st.integers(1, 12), kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3),
       sw=st.integers(1, 3), ph=st.integers(0, 2), pw=st.integers(0, 2), with_bias=st.booleans(),
       seed=st.integers(0, 2**31))
def test_conv2d_matches_reference(cpu_backend, n, c, oc, h, w, kh, kw, sh, sw, ph, pw, with_bias, seed):
    if kh > h + 2 * ph or kw > w + 2 * pw:
        return  # refused by validation; covered in test_errors
    rng = np.random.default_rng(seed)
    x, wt = randn(rng, n, c, h, w), randn(rng, oc, c, kh, kw)
    bias = randn(rng, oc) if with_bias else None
    out = dk.ops.conv2d(x, wt, bias, (sh, sw), (ph, pw))
    expect = ref.conv2d(x, wt, bias, (sh, sw), (ph, pw))
    tol = _k_tol(c * kh * kw)
    assert_close(out, expect, atol=tol, what="conv2d")
    g = randn(rng, *expect.shape)
    got = dk.ops.conv2d_backward(g, x, wt, (sh, sw), (ph, pw), bias=with_bias)
    want = ref.conv2d_backward(g, x, wt, (sh, sw), (ph, pw), with_bias)
    assert_close(got[0], want[0], atol=_k_tol(oc * kh * kw), what="grad x")
    assert_close(got[1], want[1], atol=_k_tol(n * out.shape[2] * out.shape[3]), what="grad w")
    if with_bias:
        assert_close(got[2], want[2], atol=_k_tol(n * out.shape[2] * out.shape[3]), what="grad bias")


@pytest.mark.parametrize("n,c,oc,hw", [(8, 1, 32, 28), (4, 32, 64, 13)])
def test_conv2d_seed_layers(cpu_backend, rng, n, c, oc, hw):
    x, wt, b = randn(rng, n, c, hw, hw), randn(rng, oc, c, 3, 3), randn(rng, oc)
    out = dk.ops.conv2d(x, wt, b)
    assert_close(out, ref.conv2d(x, wt, b, (1, 1), (0, 0)), atol=_k_tol(c * 9), what="conv2d")
    g = randn(rng, *out.shape)
    got, want = dk.ops.conv2d_backward(g, x, wt, bias=True), ref.conv2d_backward(g, x, wt, (1, 1), (0, 0), True)
    for i, name in enumerate(("x", "w", "bias")):
        assert_close(got[i], want[i], atol=_k_tol(n * hw * hw), what=f"grad {name}")


# ---------------------------------------------------------------------------- pooling
@SETTINGS
@given(n=st.integers(1, 3), c=st.integers(1, 4), h=st.integers(1, 13), w=st.integers(1, 13),
       kh=st.integers(1, 4), kw=st.integers(1, 4), sh=st.integers(1, 3), sw=st.integers(1, 3),
       pad=st.booleans(), kind=st.sampled_from(["max", "avg"]), seed=st.integers(0, 2**31))
def test_pool_matches_reference(cpu_backend, n, c, h, w, kh, kw, sh, sw, pad, kind, seed):
    ph, pw = (kh // 2, kw // 2) if pad else (0, 0)
    if kh > h + 2 * ph or kw > w + 2 * pw:
        return
    rng = np.random.default_rng(seed)
    x = randn(rng, n, c, h, w)
    fwd, bwd = getattr(dk.ops, f"{kind}_pool2d"), getattr(dk.ops, f"{kind}_pool2d_backward")
    out = fwd(x, (kh, kw), (sh, sw), (ph, pw))
    assert_close(out, getattr(ref, f"{kind}_pool2d")(x, (kh, kw), (sh, sw), (ph, pw)), what=f"{kind} pool")
    g = randn(rng, *out.shape)
    assert_close(bwd(g, x, (kh, kw), (sh, sw), (ph, pw)),
                 getattr(ref, f"{kind}_pool2d_backward")(g, x, (kh, kw), (sh, sw), (ph, pw)),
                 what=f"{kind} pool backward")


def test_max_pool_ties_go_to_first_maximum(cpu_backend):
    x = np.ones((1, 1, 4, 4), dtype=np.float32)  # every window is a tie
    g = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    got = dk.ops.max_pool2d_backward(g, x, 2)
    expect = np.zeros((1, 1, 4, 4), dtype=np.float32)
    expect[0, 0, 0, 0], expect[0, 0, 0, 2], expect[0, 0, 2, 0], expect[0, 0, 2, 2] = 1, 2, 3, 4
    np.testing.assert_array_equal(got, expect)
    np.testing.assert_array_equal(got, ref.max_pool2d_backward(g, x, (2, 2), (2, 2), (0, 0)))


def test_pool_default_stride_is_kernel(cpu_backend, rng):
    x = randn(rng, 2, 3, 26, 26)
    assert dk.ops.max_pool2d(x, 2).shape == (2, 3, 13, 13)
    assert dk.ops.avg_pool2d(x, 3).shape == (2, 3, 8, 8)


# ---------------------------------------------------------------------------- activations
@SETTINGS
@given(shape=st.lists(AWKWARD, min_size=1, max_size=4), seed=st.integers(0, 2**31))
def test_relu_matches_reference(cpu_backend, shape, seed):
    rng = np.random.default_rng(seed)
    x, g = randn(rng, *shape), randn(rng, *shape)
    assert_close(dk.ops.relu(x), ref.relu(x), rtol=0, atol=0, what="relu")
    assert_close(dk.ops.relu_backward(g, x), ref.relu_backward(g, x), rtol=0, atol=0, what="relu backward")


@SETTINGS
@given(shape=st.lists(AWKWARD, min_size=1, max_size=3), data=st.data(), scale=st.sampled_from([1.0, 30.0]),
       seed=st.integers(0, 2**31))
def test_softmax_any_axis_matches_reference(cpu_backend, shape, data, scale, seed):
    axis = data.draw(st.integers(-len(shape), len(shape) - 1))
    rng = np.random.default_rng(seed)
    x = (randn(rng, *shape) * scale).astype(np.float32)  # scale 30: exp would overflow without the max shift
    g = randn(rng, *shape)
    y = dk.ops.softmax(x, axis)
    assert_close(y, ref.softmax(x, axis % len(shape)), atol=1e-6, what="softmax")
    assert_close(dk.ops.softmax_backward(g, y, axis), ref.softmax_backward(g, y, axis % len(shape)),
                 atol=1e-5, what="softmax backward")
    ly = dk.ops.log_softmax(x, axis)
    assert_close(ly, ref.log_softmax(x, axis % len(shape)), atol=1e-5, what="log_softmax")
    assert_close(dk.ops.log_softmax_backward(g, ly, axis), ref.log_softmax_backward(g, ly, axis % len(shape)),
                 atol=1e-5, what="log_softmax backward")


def test_softmax_large_rows(cpu_backend, rng):
    x = randn(rng, 37, 1031) * 10
    assert_close(dk.ops.softmax(x), ref.softmax(x, 1), atol=1e-6, what="softmax")
    assert_close(dk.ops.log_softmax(x, 0), ref.log_softmax(x, 0), atol=1e-5, what="log_softmax axis 0")


# ---------------------------------------------------------------------------- loss
@SETTINGS
@given(n=AWKWARD, c=st.sampled_from([1, 2, 3, 10, 17, 100]), grad=st.sampled_from([1.0, 0.5, 3.0]),
       labels_dtype=st.sampled_from([np.int64, np.int32]), seed=st.integers(0, 2**31))
def test_cross_entropy_matches_reference(cpu_backend, n, c, grad, labels_dtype, seed):
    rng = np.random.default_rng(seed)
    logits = randn(rng, n, c) * 5
    labels = rng.integers(0, c, n).astype(labels_dtype)
    loss = dk.ops.cross_entropy(logits, labels)
    assert loss.shape == () and loss.dtype == np.float32
    assert_close(loss, ref.cross_entropy(logits, labels), atol=1e-5, what="cross_entropy")
    assert_close(dk.ops.cross_entropy_backward(logits, labels, grad),
                 ref.cross_entropy_backward(logits, labels, grad), atol=1e-6, what="cross_entropy backward")


# ---------------------------------------------------------------------------- optimizer updates
def _states(rng, shape, count):
    return [randn(rng, *shape) for _ in range(count)]


@pytest.mark.parametrize("shape", [(1,), (7,), (13, 17), (1000, 33)])
@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0), (0.9, True, 1e-2),
                                                  (0.5, False, 5e-4)])
def test_sgd_update_matches_reference(cpu_backend, rng, shape, momentum, nesterov, wd):
    p, g, v = _states(rng, shape, 3)
    v = np.abs(v) if momentum else None
    p2, v2 = p.copy(), None if v is None else v.copy()
    dk.ops.sgd_update(p, g, v, 0.1, momentum, wd, nesterov)
    ref.sgd_update(p2, g, v2, 0.1, momentum, wd, nesterov)
    assert_close(p, p2, what="param")
    if v is not None:
        assert_close(v, v2, what="velocity")


@pytest.mark.parametrize("shape", [(1,), (7,), (13, 17), (1000, 33)])
@pytest.mark.parametrize("step,wd", [(1, 0.0), (3, 0.0), (100, 1e-2)])
def test_adam_update_matches_reference(cpu_backend, rng, shape, step, wd):
    p, g, m, v = _states(rng, shape, 4)
    v = np.abs(v)
    copies = [t.copy() for t in (p, m, v)]
    dk.ops.adam_update(p, g, m, v, step, 1e-3, 0.9, 0.999, 1e-8, wd)
    ref.adam_update(copies[0], g, copies[1], copies[2], step, 1e-3, 0.9, 0.999, 1e-8, wd)
    for got, want, name in zip((p, m, v), copies, ("param", "m", "v")):
        assert_close(got, want, what=name)


@pytest.mark.parametrize("shape", [(1,), (31,), (64, 65)])
def test_rmsprop_update_matches_reference(cpu_backend, rng, shape):
    p, g, s = _states(rng, shape, 3)
    s = np.abs(s)
    p2, s2 = p.copy(), s.copy()
    dk.ops.rmsprop_update(p, g, s, 1e-2, 0.99, 1e-8, 1e-4)
    ref.rmsprop_update(p2, g, s2, 1e-2, 0.99, 1e-8, 1e-4)
    assert_close(p, p2, what="param")
    assert_close(s, s2, what="square_avg")


def test_ops_release_the_gil_and_are_reentrant(cpu_backend, rng):
    """Several Python threads running kernels at once get the same answers as one thread."""
    from concurrent.futures import ThreadPoolExecutor
    xs = [randn(rng, 8, 3, 17, 17) for _ in range(6)]
    w = randn(rng, 5, 3, 3, 3)
    expected = [ref.conv2d(x, w, None, (1, 1), (1, 1)) for x in xs]
    with ThreadPoolExecutor(max_workers=3) as pool:
        results = list(pool.map(lambda x: dk.ops.conv2d(x, w, padding=1), xs))
    for got, want in zip(results, expected):
        assert_close(got, want, atol=_k_tol(27), what="threaded conv2d")
