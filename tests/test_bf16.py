"""bf16 compute (``dk.set_precision("bf16")``): the AVX512-BF16 GEMM against a reference that
rounds its inputs to bfloat16, the matmul gradients, the switch and its refusal without bf16.

Tolerances: a product of two bf16 numbers (8-bit significands) is exact in fp32, so the only
error left against the float64 reference of the *rounded* inputs is fp32 summation: at most
about K * 2^-24 * sum_k |a_ik b_kj| (the bound used, with a factor 2 for the sum order).
"""
from __future__ import annotations

import contextlib

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends, cli, ops

_cpu = pytest.importorskip("deepkern._cpu") if backends.available("cpu") else None
pytestmark = pytest.mark.skipif(_cpu is None, reason="the C++ CPU backend is not built")
needs_bf16 = pytest.mark.skipif(_cpu is None or not _cpu.bf16_cpu_supports(),
                                reason="this CPU has no AVX512-BF16")


def round_bf16(x: np.ndarray) -> np.ndarray:
    """fp32 -> nearest bf16 (ties to even), returned as fp32; NaN stays NaN."""
    u = np.ascontiguousarray(x, dtype=np.float32).view(np.uint32).astype(np.uint64)
    r = (((u + 0x7FFF + ((u >> 16) & 1)) >> 16) << 16).astype(np.uint32).view(np.float32)
    return np.where(np.isnan(x), np.float32(np.nan), r)


def check_close(got: np.ndarray, a: np.ndarray, b: np.ndarray) -> None:
    """got ~ round(a) @ round(b) within the fp32-summation bound of the module docstring."""
    ra, rb = round_bf16(a).astype(np.float64), round_bf16(b).astype(np.float64)
    ref, scale = ra @ rb, np.abs(ra) @ np.abs(rb)
    bound = 2 * max(a.shape[1], 1) * 2.0 ** -24 * scale + 1e-30
    assert got.shape == ref.shape
    assert np.all(np.abs(got - ref) <= bound), float(np.max(np.abs(got - ref) - bound))


@contextlib.contextmanager
def bf16_switched_off():
    _cpu.set_bf16_enabled(False)
    try:
        yield
    finally:
        _cpu.set_bf16_enabled(True)


@needs_bf16
@pytest.mark.parametrize("m,n,k", [(1, 1, 1), (1, 33, 2), (5, 7, 3), (14, 32, 2), (15, 33, 31), (29, 64, 1025),
                                   (100, 65, 129), (3, 200, 64)])
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_gemm_bf16_matches_rounded_reference(m, n, k, trans_a, trans_b):
    rng = np.random.default_rng(m * 1000 + n * 10 + k)
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    got = _cpu.gemm_bf16(a, b, trans_a, trans_b)
    check_close(got, a.T if trans_a else a, b.T if trans_b else b)


@needs_bf16
@pytest.mark.parametrize("m,k", [(1, 3), (13, 7), (14, 64), (15, 33), (29, 1025)])
def test_gemm_bf16_packs_a_transposed_a_to_the_same_bits(m, k):
    """A (M, K) read along its columns (trans_a: the vector pair packing of pack_a) or along its rows
    (row_pairs and the register transpose): the same rounded operands, so the same bits."""
    rng = np.random.default_rng(m + k)
    at = rng.standard_normal((k, m)).astype(np.float32)
    b = rng.standard_normal((k, 40)).astype(np.float32)
    np.testing.assert_array_equal(_cpu.gemm_bf16(at, b, True), _cpu.gemm_bf16(np.ascontiguousarray(at.T), b))


@needs_bf16
def test_gemm_bf16_reads_strided_views_and_empty_k():
    rng = np.random.default_rng(1)
    big = rng.standard_normal((40, 90)).astype(np.float32)
    a, b = big[::2, 1:60:2], big[3:33, ::3]   # (20, 30), (30, 30): no unit stride anywhere in a
    check_close(_cpu.gemm_bf16(a, b), a, b)
    z = _cpu.gemm_bf16(np.ones((3, 0), np.float32), np.ones((0, 4), np.float32))
    assert z.shape == (3, 4) and not z.any()
    with pytest.raises(ValueError, match="inner dimensions"):
        _cpu.gemm_bf16(np.ones((2, 3), np.float32), np.ones((4, 2), np.float32))


@needs_bf16
@pytest.mark.parametrize("k", [0, 3, 1100])   # 1100: two k blocks, the bias/ReLU go in the last store only
def test_gemm_bf16_bias_and_relu_in_the_store(k):
    rng = np.random.default_rng(k)
    a, b = rng.standard_normal((17, k)).astype(np.float32), rng.standard_normal((k, 45)).astype(np.float32)
    bias = rng.standard_normal(45).astype(np.float32)
    plain = _cpu.gemm_bf16(a, b)
    np.testing.assert_array_equal(_cpu.gemm_bf16(a, b, bias=bias), plain + bias)
    np.testing.assert_array_equal(_cpu.gemm_bf16(a, b, bias=bias, relu=True), np.maximum(plain + bias, 0))
    np.testing.assert_array_equal(_cpu.gemm_bf16(a, b, relu=True), np.maximum(plain, 0))
    with pytest.raises(ValueError, match="bias"):
        _cpu.gemm_bf16(a, b, bias=bias[:-1])


@needs_bf16
def test_packing_rounds_to_nearest_even():
    ulp = 2.0 ** -7   # bf16 spacing at 1
    x = np.array([1 + ulp / 2, 1 + 3 * ulp / 2, 1 + ulp / 2 + 2.0 ** -20, -(1 + ulp / 2), np.nan, np.inf],
                 dtype=np.float32)
    want = np.array([1.0, 1 + 2 * ulp, 1 + ulp, -1.0, np.nan, np.inf], dtype=np.float32)
    # one element per row of A (K = 1, the scalar packing path), A read as given and transposed
    np.testing.assert_array_equal(_cpu.gemm_bf16(x.reshape(-1, 1), np.ones((1, 1), np.float32))[:, 0], want)
    np.testing.assert_array_equal(_cpu.gemm_bf16(x.reshape(1, -1), np.ones((1, 1), np.float32), True)[:, 0], want)
    # B's packing (16 columns per vector, masked): one element per column
    np.testing.assert_array_equal(_cpu.gemm_bf16(np.ones((1, 1), np.float32), x.reshape(1, -1))[0], want)
    # rows of 64 equal values (the 32-wide vector conversion of A and B): 64 * the rounded value, exact
    rows = np.repeat(x.reshape(-1, 1), 64, axis=1)
    np.testing.assert_array_equal(_cpu.gemm_bf16(rows, np.ones((64, 1), np.float32))[:, 0], 64 * want)
    np.testing.assert_array_equal(round_bf16(x), want)   # the tests' own reference agrees


@needs_bf16
@pytest.mark.parametrize("trans_a,trans_b", [(False, False), (True, False), (False, True), (True, True)])
def test_precision_bf16_routes_matmul_and_its_gradients(trans_a, trans_b):
    rng = np.random.default_rng(7)
    m, n, k = 9, 21, 35
    a = rng.standard_normal((k, m) if trans_a else (m, k)).astype(np.float32)
    b = rng.standard_normal((n, k) if trans_b else (k, n)).astype(np.float32)
    bias = rng.standard_normal(n).astype(np.float32)
    g = rng.standard_normal((m, n)).astype(np.float32)
    opa, opb = (a.T if trans_a else a), (b.T if trans_b else b)
    with dk.precision("bf16"):
        assert dk.get_precision() == "bf16"
        y = ops.matmul(a, b, bias, "relu", trans_a, trans_b)
        da, db, dbias = ops.matmul_backward(g, a, b, y, "relu", trans_a, trans_b, bias=True)
    assert dk.get_precision() == "fp32"
    lin = _cpu.gemm_bf16(opa, opb) + bias
    np.testing.assert_array_equal(y, np.maximum(lin, 0))
    check_close(lin - bias, opa, opb)
    gm = g * (y > 0)
    dopa, dopb = _cpu.gemm_bf16(gm, opb.T), _cpu.gemm_bf16(opa.T, gm)
    check_close(dopa, gm, opb.T)
    check_close(dopb, opa.T, gm)
    np.testing.assert_allclose(da, dopa.T if trans_a else dopa, rtol=0, atol=0)
    np.testing.assert_allclose(db, dopb.T if trans_b else dopb, rtol=0, atol=0)
    np.testing.assert_allclose(dbias, gm.sum(axis=0), rtol=1e-6)
    # fp32 differs from bf16 by far more than fp32 rounding: the switch really changed the kernel
    assert np.abs(ops.matmul(a, b, None, None, trans_a, trans_b) - (lin - bias)).max() > 1e-3


@needs_bf16
def test_fit_with_bf16_trains_and_restores_precision():
    rng = np.random.default_rng(0)
    x = rng.standard_normal((256, 20)).astype(np.float32)
    y = (x[:, :3].sum(axis=1) > 0).astype(np.int64)
    dk.manual_seed(0)
    model = dk.nn.Sequential(dk.nn.Linear(20, 32), dk.nn.ReLU(), dk.nn.Linear(32, 2))
    hist = dk.train.fit(model, x, y, epochs=8, batch_size=32, lr=0.01, progress=False, precision="bf16")
    assert hist.history["accuracy"][-1] > 0.85
    assert all(p.data.dtype == np.float32 for p in model.parameters())   # fp32 master weights
    assert dk.get_precision() == "fp32"


def test_without_bf16_every_entry_point_refuses_clearly(tmp_path, capsys):
    """A CPU without AVX512-BF16 (simulated by switching the kernel off): clear errors, no fp32 fallback."""
    with bf16_switched_off():
        assert not dk._precision.bf16_supported()
        with pytest.raises(RuntimeError, match="switched off|AVX512-BF16"):
            _cpu.gemm_bf16(np.ones((2, 2), np.float32), np.ones((2, 2), np.float32))
        with pytest.raises(RuntimeError, match="AVX512-BF16"):
            dk.set_precision("bf16")
        with pytest.raises(RuntimeError, match="AVX512-BF16"):
            dk.train.fit(dk.nn.Linear(2, 2), np.ones((4, 2), np.float32), np.zeros(4, np.int64), epochs=1,
                         progress=False, precision="bf16")
        code = cli.main(["train", "--model", "mlp", "--precision", "bf16", "--epochs", "1", "--limit", "50",
                         "--no-progress", "--save", str(tmp_path / "m.npz"), "--plot", str(tmp_path / "m.png")])
        assert code == 2 and "AVX512-BF16" in capsys.readouterr().err
    assert dk.get_precision() == "fp32"
    with pytest.raises(ValueError, match="fp32, bf16"):
        dk.set_precision("fp16")
