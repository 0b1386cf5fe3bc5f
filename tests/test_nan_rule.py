"""The NaN/inf rule (DESIGN.md, "NaN and infinities"), on every CPU backend and SIMD variant.

- NaN propagates through every op: relu, the ReLU fused into matmul, max/avg pooling,
  softmax and log_softmax (a NaN makes its whole row NaN), the losses.
- max_pool2d counts a NaN as the largest value; ties (equal numbers, or several NaNs) go to the
  first in row-major window order, so the backward credits the window's first NaN.
- -inf logits are legal: softmax gives exact zeros there, log_softmax -inf, and cross_entropy
  stays finite while the label's logit is finite (its gradient is exactly 0 at -inf entries).

Each backend is compared with the NumPy reference (NaN positions equal, values close); the C++
backend runs once per SIMD variant (generic, avx2, avx512) with the matching GEMM micro-kernel.
"""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends

from .conftest import assert_close

f32 = np.float32
CPU_VARIANTS = {"generic": "scalar", "avx2": "avx2", "avx512": "avx512"}  # simd -> gemm variant


def _targets():
    out = ["numpy"]
    if backends.available("numba"):
        out.append("numba")
    if backends.available("cpu"):
        out += [f"cpu:{v}" for v in CPU_VARIANTS]
    return out


@pytest.fixture(params=_targets())
def backend(request):
    """Forces one backend (and, for cpu, one SIMD variant); yields its name."""
    name, _, variant = request.param.partition(":")
    if variant:
        from deepkern import _cpu
        try:
            _cpu.set_simd_variant(variant)
            _cpu.set_gemm_variant(CPU_VARIANTS[variant])
        except ValueError:
            _cpu.set_simd_variant("auto")
            _cpu.set_gemm_variant("auto")
            pytest.skip(f"this CPU has no {variant}")
    backends.set_backend(name)
    yield request.param
    backends.set_backend(None)
    if variant:
        from deepkern import _cpu
        _cpu.set_simd_variant("auto")
        _cpu.set_gemm_variant("auto")


def reference(op: str, *args, **kwargs):
    backends.set_backend("numpy")
    try:
        return getattr(dk.ops, op)(*args, **kwargs)
    finally:
        backends.set_backend(None)


def check(backend_name: str, op: str, *args, rtol=1e-5, atol=1e-6, **kwargs):
    """ops.<op> on the forced backend equals the reference: same NaNs, same infinities, close values."""
    name = backend_name.partition(":")[0]
    backends.set_backend(name)
    got = getattr(dk.ops, op)(*args, **kwargs)
    want = reference(op, *args, **kwargs)
    backends.set_backend(name)
    got, want = np.asarray(got), np.asarray(want)
    what = f"{op} on {backend_name}"
    np.testing.assert_array_equal(np.isnan(got), np.isnan(want), err_msg=f"{what}: NaN positions")
    np.testing.assert_array_equal(np.isinf(got) & (got > 0), np.isinf(want) & (want > 0), err_msg=f"{what}: +inf")
    np.testing.assert_array_equal(np.isinf(got) & (got < 0), np.isinf(want) & (want < 0), err_msg=f"{what}: -inf")
    finite = np.isfinite(want)
    assert_close(got[finite], want[finite], rtol=rtol, atol=atol, what=what)
    return got


def with_nans(rng, shape, count):
    x = rng.standard_normal(shape).astype(f32)
    x.flat[rng.choice(x.size, count, replace=False)] = np.nan
    return x


# ---------------------------------------------------------------------------- relu, fused relu
def test_relu_and_fused_relu_propagate_nan(backend, rng):
    x = with_nans(rng, (7, 37), 9)
    y = check(backend, "relu", x)
    assert np.isnan(y).sum() == 9
    a = with_nans(rng, (13, 37), 3)          # NaN rows of a make NaN rows of a @ b
    b = rng.standard_normal((37, 45)).astype(f32)
    bias = rng.standard_normal(45).astype(f32)
    y = check(backend, "matmul", a, b, bias=bias, activation="relu", rtol=1e-4, atol=1e-4)
    assert np.isnan(y).any()
    y = check(backend, "matmul", a, b, activation="relu", trans_b=False, rtol=1e-4, atol=1e-4)
    nan_rows = np.isnan(a).any(axis=1)
    assert np.isnan(y[nan_rows]).all() and not np.isnan(y[~nan_rows]).any()


# ---------------------------------------------------------------------------- pooling
@pytest.mark.parametrize("geometry", [((2, 2), (2, 2), (0, 0)), ((3, 3), (1, 1), (1, 1)), ((3, 2), (2, 1), (1, 0))])
def test_max_pool_propagates_nan_and_credits_the_first(backend, rng, geometry):
    k, s, p = geometry
    x = rng.standard_normal((2, 3, 9, 34)).astype(f32)
    x[0, 0, 0, 1] = np.nan                      # not first in its 2x2 window
    x[0, 1, 1, 1] = np.nan                      # last in its 2x2 window
    x[1, 2, 4, 4] = np.nan
    x[1, 2, 5, 5] = np.nan                      # two NaNs in one window: the first takes the gradient
    x[1, 0, 2:4, 20:22] = 1.5                   # a tie of numbers
    x[1, 1, 6, 30:] = np.nan                    # NaNs across a vector boundary
    y = check(backend, "max_pool2d", x, k, stride=s, padding=p)
    assert np.isnan(y).any()
    g = rng.standard_normal(y.shape).astype(f32)
    gx = check(backend, "max_pool2d_backward", g, x, k, stride=s, padding=p)
    # the gradient lands on NaN inputs, never lost: totals agree
    assert_close(np.float32(gx.sum(dtype=np.float64)), np.float32(g.sum(dtype=np.float64)), rtol=1e-4, atol=1e-3)


def test_avg_pool_propagates_nan(backend, rng):
    x = with_nans(rng, (2, 2, 8, 8), 3)
    y = check(backend, "avg_pool2d", x, 2)
    assert np.isnan(y).sum() == 3
    check(backend, "avg_pool2d", x, 3, stride=1, padding=1)


# ---------------------------------------------------------------------------- softmax family
@pytest.mark.parametrize("axis", [-1, 0])
def test_softmax_nan_rows_and_exact_zeros_for_neg_inf(backend, rng, axis):
    x = rng.standard_normal((6, 300)).astype(f32) * 4
    if axis == 0:
        x = np.ascontiguousarray(x.T)            # (300, 6), softmax down the strided axis
    line = (slice(None), 3) if axis == 0 else (3, slice(None))
    x[line] = -np.inf
    x[(0, 3) if axis == 0 else (3, 0)] = 0.5     # one finite logit in the line
    other = (slice(None), 1) if axis == 0 else (1, slice(None))
    x[other][::7] = -np.inf
    nan_line = (slice(None), 5) if axis == 0 else (5, slice(None))
    x[nan_line][17] = np.nan
    y = check(backend, "softmax", x, axis=axis)
    assert (y[x == -np.inf] == 0).all()          # exact zeros, not exp(-87)
    assert y[(0, 3) if axis == 0 else (3, 0)] == 1
    assert np.isnan(y[nan_line]).all()
    ly = check(backend, "log_softmax", x, axis=axis)
    assert (ly[x == -np.inf] == -np.inf).all()
    g = rng.standard_normal(x.shape).astype(f32)
    gx = check(backend, "softmax_backward", g, y, axis=axis, rtol=1e-4, atol=1e-5)
    assert (gx[x == -np.inf] == 0).all()
    check(backend, "log_softmax_backward", g, ly, axis=axis, rtol=1e-4, atol=1e-5)


def test_exp_of_very_negative_shifts_is_exactly_zero(backend):
    # below float32's normal range the fast exp flushes to 0 (never exp(-87) = 1.6e-38 for -inf)
    x = np.array([[0.0, -87.5, -100.0, -1e30, -np.inf]], f32)
    y = check(backend, "softmax", x, atol=1.2e-38, rtol=1e-6)
    assert y[0, 0] == 1 and (y[0, 3:] == 0).all()


# ---------------------------------------------------------------------------- cross_entropy
def test_cross_entropy_with_neg_inf_logits_is_finite(backend, rng):
    logits = rng.standard_normal((9, 11)).astype(f32)
    labels = rng.integers(0, 11, 9).astype(np.int64)
    mask = rng.random((9, 11)) < 0.4
    mask[np.arange(9), labels] = False             # the label's logit stays finite
    logits[mask] = -np.inf
    loss = check(backend, "cross_entropy", logits, labels)
    assert np.isfinite(loss)
    g = check(backend, "cross_entropy_backward", logits, labels, 0.5)
    assert (g[mask] == 0).all()
    logits[0, labels[0]] = np.nan
    assert np.isnan(check(backend, "cross_entropy", logits, labels))


def test_max_pool_of_all_neg_inf_credits_the_first_input_not_padding(backend):
    # padding is -inf too, but never takes a gradient (the reference once lost it there)
    x = np.full((1, 1, 3, 3), -np.inf, f32)
    x[0, 0, 2, 2] = 1.0
    y = check(backend, "max_pool2d", x, 3, stride=1, padding=1)
    g = check(backend, "max_pool2d_backward", np.ones(y.shape, f32), x, 3, stride=1, padding=1)
    assert g.sum() == 9 and g[0, 0, 0, 0] == 3
