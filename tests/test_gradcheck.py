"""Every reference backward against central finite differences, in float64.

The fast backends are tested against the reference (test_ops.py); this file makes sure the
reference itself is right. Loss = sum(forward(...) * R) for a fixed random R, so the
analytic gradient is backward(R, ...).
"""
from __future__ import annotations

import numpy as np
import pytest

from deepkern.backends import numpy as ref

EPS = 1e-6


def numeric_grad(f, x: np.ndarray) -> np.ndarray:
    grad = np.zeros_like(x)
    flat, gflat = x.reshape(-1), grad.reshape(-1)
    for i in range(flat.size):
        keep = flat[i]
        flat[i] = keep + EPS
        up = f()
        flat[i] = keep - EPS
        down = f()
        flat[i] = keep
        gflat[i] = (up - down) / (2 * EPS)
    return grad


def rand(rng, *shape):
    return rng.standard_normal(shape)


def check(analytic, numeric):
    np.testing.assert_allclose(analytic, numeric, rtol=1e-5, atol=1e-7)


@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
@pytest.mark.parametrize("relu", [False, True])
def test_matmul_backward(trans_a, trans_b, relu):
    rng = np.random.default_rng(0)
    m, k, n = 3, 5, 4
    a = rand(rng, k, m) if trans_a else rand(rng, m, k)
    b = rand(rng, n, k) if trans_b else rand(rng, k, n)
    bias, r = rand(rng, n), rand(rng, m, n)
    loss = lambda: float((ref.matmul(a, b, bias, relu, trans_a, trans_b) * r).sum())  # noqa: E731
    out = ref.matmul(a, b, bias, relu, trans_a, trans_b)
    ga, gb, gbias = ref.matmul_backward(r, a, b, out if relu else None, trans_a, trans_b, True)
    check(ga, numeric_grad(loss, a))
    check(gb, numeric_grad(loss, b))
    check(gbias, numeric_grad(loss, bias))


@pytest.mark.parametrize("stride,padding", [((1, 1), (0, 0)), ((2, 1), (1, 2)), ((3, 2), (1, 0))])
def test_conv2d_backward(stride, padding):
    rng = np.random.default_rng(1)
    x, w, b = rand(rng, 2, 3, 7, 6), rand(rng, 4, 3, 3, 2), rand(rng, 4)
    out = ref.conv2d(x, w, b, stride, padding)
    r = rand(rng, *out.shape)
    loss = lambda: float((ref.conv2d(x, w, b, stride, padding) * r).sum())  # noqa: E731
    gx, gw, gb = ref.conv2d_backward(r, x, w, stride, padding, True)
    check(gx, numeric_grad(loss, x))
    check(gw, numeric_grad(loss, w))
    check(gb, numeric_grad(loss, b))


@pytest.mark.parametrize("kind", ["max", "avg"])
@pytest.mark.parametrize("kernel,stride,padding", [((2, 2), (2, 2), (0, 0)), ((3, 2), (1, 2), (1, 1))])
def test_pool_backward(kind, kernel, stride, padding):
    rng = np.random.default_rng(2)
    x = rand(rng, 2, 2, 6, 5)  # distinct values: max is differentiable here
    fwd, bwd = getattr(ref, f"{kind}_pool2d"), getattr(ref, f"{kind}_pool2d_backward")
    r = rand(rng, *fwd(x, kernel, stride, padding).shape)
    loss = lambda: float((fwd(x, kernel, stride, padding) * r).sum())  # noqa: E731
    check(bwd(r, x, kernel, stride, padding), numeric_grad(loss, x))


def test_relu_backward():
    rng = np.random.default_rng(3)
    x = rand(rng, 4, 5)
    x[np.abs(x) < 1e-3] = 0.5  # keep away from the kink
    r = rand(rng, 4, 5)
    check(ref.relu_backward(r, x), numeric_grad(lambda: float((ref.relu(x) * r).sum()), x))


@pytest.mark.parametrize("axis", [0, 1, 2])
@pytest.mark.parametrize("log", [False, True])
def test_softmax_backward(axis, log):
    rng = np.random.default_rng(4)
    x, r = rand(rng, 3, 4, 5), rand(rng, 3, 4, 5)
    fwd = ref.log_softmax if log else ref.softmax
    bwd = ref.log_softmax_backward if log else ref.softmax_backward
    loss = lambda: float((fwd(x, axis) * r).sum())  # noqa: E731
    check(bwd(r, fwd(x, axis), axis), numeric_grad(loss, x))


def test_cross_entropy_backward():
    rng = np.random.default_rng(5)
    logits, labels = rand(rng, 6, 4), rng.integers(0, 4, 6)
    loss = lambda: float(ref.cross_entropy(logits, labels))  # noqa: E731
    check(ref.cross_entropy_backward(logits, labels, 1.0), numeric_grad(loss, logits))
    check(ref.cross_entropy_backward(logits, labels, 2.5), 2.5 * numeric_grad(loss, logits))
