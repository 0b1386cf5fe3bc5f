"""The fast paths of the memory-bound C++ kernels against the float64 reference.

Each instruction-set variant of the relu/softmax/optimizer/max-pool-backward kernels the CPU
supports is forced in turn (avx512, avx2, generic); shapes are awkward (1, primes, more than one
strided column block, sizes on both sides of the parallel grain), and every kernel also runs on one
thread. Pooling covers the 2x2/stride-2 special case (odd sizes, ties) next to the general path.
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends
from deepkern.backends import numpy as ref

from .conftest import assert_close, randn

_cpu = pytest.importorskip("deepkern._cpu", reason="the C++ CPU backend is not built")

VARIANTS = ["avx512", "avx2", "generic"]
GRAIN = 1 << 15   # common/parallel.hpp kParallelGrain
STREAM = 1 << 21  # cpu/activation.cpp kStreamFloats: relu outputs from here use streaming stores


@contextlib.contextmanager
def omp_threads(n):
    """Limit the kernels' threads (1: the serial paths) when threadpoolctl is there."""
    if n is None:
        yield
        return
    threadpoolctl = pytest.importorskip("threadpoolctl")
    with threadpoolctl.threadpool_limits(limits=n, user_api="openmp"):
        yield


@pytest.fixture
def cpu():
    backends.set_backend("cpu")
    yield
    backends.set_backend(None)


@pytest.fixture(params=VARIANTS)
def variant(request, cpu):
    try:
        _cpu.set_simd_variant(request.param)
    except ValueError:
        pytest.skip(f"this CPU has no {request.param}")
    yield request.param
    _cpu.set_simd_variant("auto")


# ---------------------------------------------------------------------------- variant switch
def test_variant_names_and_errors(cpu):
    assert _cpu.simd_variant() in VARIANTS
    _cpu.set_simd_variant("generic")
    assert _cpu.simd_variant() == "generic"
    _cpu.set_simd_variant("auto")
    with pytest.raises(ValueError, match="unknown SIMD variant 'sse9'"):
        _cpu.set_simd_variant("sse9")


# ---------------------------------------------------------------------------- relu
@pytest.mark.parametrize("threads", [None, 1])
@pytest.mark.parametrize("n", [1, 7, 17, 1031, GRAIN - 1, GRAIN + 13, STREAM + 13])
def test_relu_exact(variant, rng, n, threads):
    x, g = randn(rng, n), randn(rng, n)
    x[::5] = 0.0          # the boundary: relu'(0) is 0
    x[1::97] = np.nan     # kept by relu, blocked by its backward
    with omp_threads(threads):   # exact, NaN positions included
        np.testing.assert_array_equal(dk.ops.relu(x), ref.relu(x), err_msg="relu")
        np.testing.assert_array_equal(dk.ops.relu_backward(g, x), ref.relu_backward(g, x), err_msg="relu backward")


def test_relu_keeps_nan(variant):
    x = np.array([np.nan, -1.0, 2.0], np.float32)
    y = dk.ops.relu(x)
    assert np.isnan(y[0]) and y[1] == 0 and y[2] == 2


# ---------------------------------------------------------------------------- softmax family
SOFTMAX_CASES = [
    ((1,), 0), ((1, 1), 1), ((3, 1), 1), ((7, 13), 1), ((37, 1031), 1), ((2, 5, 3), 2),
    ((13, 7), 0),                 # strided, inner 7
    ((3, 5, 257), 1),             # strided, inner 257: two column blocks, the second of 1
    ((4, 2, 600), 1),             # strided, inner 600: a partial third block
    ((64, 1031), 1),              # rows x dim above the grain: threaded rows
    ((40, 1031), 0),              # strided and above the grain: threaded column blocks
]


@pytest.mark.parametrize("threads", [None, 1])
@pytest.mark.parametrize("shape,axis", SOFTMAX_CASES)
@pytest.mark.parametrize("scale", [1.0, 30.0])
def test_softmax_family(variant, rng, shape, axis, scale, threads):
    x = (randn(rng, *shape) * scale).astype(np.float32)
    g = randn(rng, *shape)
    with omp_threads(threads):
        y = dk.ops.softmax(x, axis)
        ly = dk.ops.log_softmax(x, axis)
        gy = dk.ops.softmax_backward(g, y, axis)
        gly = dk.ops.log_softmax_backward(g, ly, axis)
    assert_close(y, ref.softmax(x, axis), atol=1e-6, what="softmax")
    assert_close(ly, ref.log_softmax(x, axis), atol=1e-5, what="log_softmax")
    assert_close(gy, ref.softmax_backward(g, y, axis), atol=1e-5, what="softmax backward")
    assert_close(gly, ref.log_softmax_backward(g, ly, axis), atol=1e-5, what="log_softmax backward")


def test_softmax_extreme_gaps(variant):
    # exp of the shifted logits underflows for most entries; the clamp in fast_exp must keep
    # them at ~0 and the maximum's probability at 1, along rows and along a strided axis
    x = np.array([[0.0, -200.0, -1000.0, 5.0, 5.0], [-3e4, 1e4, 0.0, -1e4, 88.5]], np.float32)
    for axis in (0, 1):
        assert_close(dk.ops.softmax(x, axis), ref.softmax(x, axis), atol=1e-6, what=f"softmax axis {axis}")
        assert_close(dk.ops.log_softmax(x, axis), ref.log_softmax(x, axis), atol=1e-5,
                     what=f"log_softmax axis {axis}")


def test_softmax_exp_accuracy_over_range(variant):
    # two-element rows [t, 0]: softmax[0] = 1 / (1 + exp(-t)) exercises exp over its range
    t = np.linspace(-80.0, 80.0, 4001, dtype=np.float32)
    x = np.stack([t, np.zeros_like(t)], axis=1)
    assert_close(dk.ops.softmax(x, 1), ref.softmax(x, 1), rtol=2e-6, atol=1e-30, what="softmax [t, 0]")
    ls = dk.ops.log_softmax(x, 1)
    assert_close(ls, ref.log_softmax(x, 1), rtol=1e-6, atol=2e-6, what="log_softmax [t, 0]")


def test_exp_within_two_ulp(variant):
    # log_softmax_backward of rows y = [v, 0] with grad [0, 1] is [-exp(v), 1 - 1]: it exposes the
    # kernels' exp directly (the product and difference are exact)
    v = np.unique(np.linspace(-87.0, 88.0, 200_003, dtype=np.float32))
    y = np.stack([v, np.zeros_like(v)], axis=1)
    g = np.zeros_like(y)
    g[:, 1] = 1.0
    got = -dk.ops.log_softmax_backward(g, y, 1)[:, 0].astype(np.float64)
    want = np.exp(v.astype(np.float64))
    ulps = np.abs(got - want) / np.spacing(want.astype(np.float32)).astype(np.float64)
    assert ulps.max() <= 2.0, f"exp error {ulps.max():.2f} ulp at v = {v[np.argmax(ulps)]}"


# ---------------------------------------------------------------------------- pooling
POOL_SHAPES = [(1, 1, 2, 2), (1, 1, 3, 3), (2, 3, 7, 9), (1, 2, 2, 11), (3, 1, 13, 2), (2, 5, 26, 26),
               (1, 2, 4, 34), (2, 1, 5, 33),   # rows of 17 / 16 windows: a full zmm plus a masked one
               (128, 3, 26, 27)]   # the last is above the grain: threaded planes


@pytest.mark.parametrize("threads", [None, 1])
@pytest.mark.parametrize("shape", POOL_SHAPES)
@pytest.mark.parametrize("kind", ["max", "avg"])
def test_pool_2x2_stride2(variant, rng, shape, kind, threads):
    x = randn(rng, *shape)
    fwd, bwd = getattr(dk.ops, f"{kind}_pool2d"), getattr(dk.ops, f"{kind}_pool2d_backward")
    ref_fwd, ref_bwd = getattr(ref, f"{kind}_pool2d"), getattr(ref, f"{kind}_pool2d_backward")
    pair = (2, 2)
    with omp_threads(threads):
        y = fwd(x, 2)
        g = randn(rng, *y.shape)
        gx = bwd(g, x, 2)
    assert_close(y, ref_fwd(x, pair, pair, (0, 0)), what=f"{kind} pool")
    assert_close(gx, ref_bwd(g, x, pair, pair, (0, 0)), what=f"{kind} pool backward")


@pytest.mark.parametrize("shape", [(2, 3, 6, 8), (1, 2, 5, 7), (3, 2, 6, 38)])
def test_max_pool_2x2_ties_go_to_first_maximum(variant, rng, shape):
    # few distinct values: most windows hold ties, some in every position pattern
    x = rng.integers(0, 3, shape).astype(np.float32)
    x[0, 0] = 1.0                                   # a plane of all-equal windows
    y = dk.ops.max_pool2d(x, 2)
    g = rng.integers(1, 9, y.shape).astype(np.float32)   # exact in float: compare bit for bit
    np.testing.assert_array_equal(y, ref.max_pool2d(x, (2, 2), (2, 2), (0, 0)))
    np.testing.assert_array_equal(dk.ops.max_pool2d_backward(g, x, 2),
                                  ref.max_pool2d_backward(g, x, (2, 2), (2, 2), (0, 0)))


def test_max_pool_2x2_with_infinities(variant):
    x = np.full((1, 1, 4, 4), -np.inf, np.float32)
    x[0, 0, 1, 1] = 2.0
    x[0, 0, 2, 3] = np.inf
    g = np.arange(1, 5, dtype=np.float32).reshape(1, 1, 2, 2)
    np.testing.assert_array_equal(dk.ops.max_pool2d(x, 2), ref.max_pool2d(x, (2, 2), (2, 2), (0, 0)))
    np.testing.assert_array_equal(dk.ops.max_pool2d_backward(g, x, 2),
                                  ref.max_pool2d_backward(g, x, (2, 2), (2, 2), (0, 0)))


# ---------------------------------------------------------------------------- cross-entropy
@pytest.mark.parametrize("threads", [None, 1])
@pytest.mark.parametrize("n,c", [(1, 1), (1, 2), (7, 3), (128, 10), (4001, 11)])   # 4001x11: threaded
@pytest.mark.parametrize("scale", [1.0, 40.0])
def test_cross_entropy(cpu, rng, n, c, scale, threads):
    logits = (randn(rng, n, c) * scale).astype(np.float32)
    labels = rng.integers(0, c, n).astype(np.int64)
    with omp_threads(threads):
        loss = dk.ops.cross_entropy(logits, labels)
        grad = dk.ops.cross_entropy_backward(logits, labels, 0.5)
    assert_close(loss, ref.cross_entropy(logits, labels), what="cross_entropy")
    assert_close(grad, ref.cross_entropy_backward(logits, labels, 0.5), what="cross_entropy backward")


# ---------------------------------------------------------------------------- optimizer updates
def _state(rng, n, *names):
    return {name: randn(rng, n) for name in names}


@pytest.mark.parametrize("threads", [None, 1])
@pytest.mark.parametrize("n", [1, 13, GRAIN + 7])
@pytest.mark.parametrize("mode", ["plain", "momentum", "nesterov"])
def test_sgd_update(variant, rng, n, mode, threads):
    s = _state(rng, n, "p", "g", "v")
    momentum = 0.0 if mode == "plain" else 0.9
    velocity = None if mode == "plain" else s["v"]
    p_ref, v_ref = s["p"].copy(), s["v"].copy()
    ref.sgd_update(p_ref, s["g"], None if mode == "plain" else v_ref, 0.1, momentum, 0.01, mode == "nesterov")
    with omp_threads(threads):
        dk.ops.sgd_update(s["p"], s["g"], velocity, 0.1, momentum, 0.01, mode == "nesterov")
    assert_close(s["p"], p_ref, what="param")
    if velocity is not None:
        assert_close(s["v"], v_ref, what="velocity")


@pytest.mark.parametrize("threads", [None, 1])
@pytest.mark.parametrize("n", [1, 13, GRAIN + 7])
def test_adam_and_rmsprop_updates(variant, rng, n, threads):
    s = _state(rng, n, "p", "g", "m")
    s["v"] = np.abs(randn(rng, n))
    p_ref, m_ref, v_ref = s["p"].copy(), s["m"].copy(), s["v"].copy()
    ref.adam_update(p_ref, s["g"], m_ref, v_ref, 3, 1e-2, 0.9, 0.999, 1e-8, 0.01)
    with omp_threads(threads):
        dk.ops.adam_update(s["p"], s["g"], s["m"], s["v"], 3, 1e-2, 0.9, 0.999, 1e-8, 0.01)
    for got, want, name in ((s["p"], p_ref, "param"), (s["m"], m_ref, "m"), (s["v"], v_ref, "v")):
        assert_close(got, want, what=f"adam {name}")

    p, g, sq = randn(rng, n), randn(rng, n), np.abs(randn(rng, n))
    p_ref, sq_ref = p.copy(), sq.copy()
    ref.rmsprop_update(p_ref, g, sq_ref, 1e-2, 0.99, 1e-8, 0.01)
    with omp_threads(threads):
        dk.ops.rmsprop_update(p, g, sq, 1e-2, 0.99, 1e-8, 0.01)
    assert_close(p, p_ref, what="rmsprop param")
    assert_close(sq, sq_ref, what="rmsprop square_avg")


# ---------------------------------------------------------------------------- DEEPKERN_SIMD
def _run_with_env(value, code):
    import os
    import subprocess
    import sys
    env = dict(os.environ, DEEPKERN_SIMD=value)
    return subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=60)


def test_simd_environment_variable():
    done = _run_with_env("generic", "from deepkern import _cpu; print(_cpu.simd_variant())")
    assert done.returncode == 0, done.stderr
    assert done.stdout.strip() == "generic"
    bad = _run_with_env("sse9", "import numpy as np\nfrom deepkern import _cpu\n"
                                "try:\n    _cpu.relu(np.ones(3, np.float32))\n"
                                "except ValueError as e:\n    print('error:', e)\n")
    assert "DEEPKERN_SIMD: unknown SIMD variant 'sse9'" in bad.stdout, bad.stdout + bad.stderr
