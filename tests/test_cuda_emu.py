"""The CUDA kernels (csrc/cuda/*.cu) run on the CPU emulator against the NumPy reference.

Every kernel and every path the host launchers choose: both SIMT GEMM tiles (the launcher picks
by the multiprocessor count, which the emulator lets a test set), the TF32 wmma GEMM forward and
backward with every transpose, the warp/block/strided softmax paths (float4 and scalar), conv2d
forward, input and weight gradients (with and without the split sum), pooling, loss and the
optimizers, on awkward shapes: 1, primes, tile +- 1, operands offset by one float (the unaligned
paths), -inf and NaN entries. Selected with ``pytest -k emul`` (CI: .ci/cuda_emu.sh); see
tests/cuda_emu/README.md.
"""
from __future__ import annotations

import itertools
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from deepkern.backends import numpy as ref

from .conftest import randn
from .cuda_emu import emu
from .gpu_semantics import assert_same_nan as assert_same

pytestmark = pytest.mark.emul


@pytest.fixture(autouse=True)
def _fresh_device():
    emu.reset()
    yield
    emu.reset()


def _maybe_offset(a, offset: bool):
    return emu.offset_copy(a) if offset else a


# ---------------------------------------------------------------------------- matmul
# sms=1000 keeps the 64 tile (too few big tiles to fill the "GPU"); sms=1 always picks 128.
SIMT = {"simt64": 1000, "simt128": 1}
MM_SHAPES = [(1, 1, 1), (7, 13, 5), (65, 17, 63), (129, 33, 127)]  # (M, K, N): 1, primes, tile +- 1


@pytest.mark.parametrize("tile", sorted(SIMT))
def test_emul_matmul_simt(tile, rng):
    emu.set_device(SIMT[tile], 9)
    for (m, k, n), (ta, tb) in itertools.product(MM_SHAPES, itertools.product((False, True), repeat=2)):
        a = randn(rng, k, m) if ta else randn(rng, m, k)
        b = randn(rng, n, k) if tb else randn(rng, k, n)
        bias = randn(rng, n)
        got = emu.matmul(a, b, bias, True, ta, tb)
        assert_same(got, ref.matmul(a, b, bias, True, ta, tb), 1e-4, 1e-4, f"{tile} {m}x{k}x{n} {ta} {tb}")
    # float4 paths (every row length % 4 == 0) and the same operands one float off alignment
    a, b = randn(rng, 68, 36), randn(rng, 36, 132)
    for offset in (False, True):
        got = emu.matmul(_maybe_offset(a, offset), _maybe_offset(b, offset), None, False, False, False,
                         out=_maybe_offset(np.zeros((68, 132), np.float32), offset))
        assert_same(got, ref.matmul(a, b, None, False, False, False), 1e-4, 1e-4, f"{tile} offset={offset}")


@pytest.mark.parametrize("tile", sorted(SIMT))
def test_emul_matmul_backward(tile, rng):
    emu.set_device(SIMT[tile], 9)
    for (m, k, n), (ta, tb) in zip([(1, 1, 1), (7, 13, 5), (66, 17, 129), (33, 65, 4)],
                                   itertools.product((False, True), repeat=2)):
        a = randn(rng, k, m) if ta else randn(rng, m, k)
        b = randn(rng, n, k) if tb else randn(rng, k, n)
        out = ref.matmul(a, b, randn(rng, n), True, ta, tb)
        g = randn(rng, m, n)
        for fused in (None, out):
            got = emu.matmul_backward(g, a, b, fused, ta, tb, True)
            want = ref.matmul_backward(g, a, b, fused, ta, tb, True)
            for x, y, name in zip(got, want, ("da", "db", "dbias")):
                assert_same(x, y, 1e-4, 1e-4, f"{tile} {name} {m}x{k}x{n} {ta} {tb} fused={fused is not None}")


def _tf32_close(got, want, k, what):
    assert_same(got, want, 5e-3, 5e-3 * np.sqrt(k), what)


def test_emul_matmul_tf32_forward_and_backward(rng):
    emu.set_device(132, 8)
    emu.set_matmul_variant("tf32")
    cases = [((1, 1, 1), (False, False)), ((128, 64, 4), (False, False))]
    cases += [((67, 33, 129), t) for t in itertools.product((False, True), repeat=2)]
    for (m, k, n), (ta, tb) in cases:
        a = randn(rng, k, m) if ta else randn(rng, m, k)
        b = randn(rng, n, k) if tb else randn(rng, k, n)
        bias = randn(rng, n)
        _tf32_close(emu.matmul(a, b, bias, True, ta, tb), ref.matmul(a, b, bias, True, ta, tb), k,
                    f"tf32 {m}x{k}x{n} {ta} {tb}")
        if m > 1:
            g = randn(rng, m, n)
            got = emu.matmul_backward(g, a, b, None, ta, tb, False)
            want = ref.matmul_backward(g, a, b, None, ta, tb, False)
            _tf32_close(got[0], want[0], n, f"tf32 da {m}x{k}x{n} {ta} {tb}")
            _tf32_close(got[1], want[1], m, f"tf32 db {m}x{k}x{n} {ta} {tb}")
    a, b = randn(rng, 36, 20), randn(rng, 20, 44)  # unaligned operands: the scalar loads
    _tf32_close(emu.matmul(emu.offset_copy(a), emu.offset_copy(b), None, False, False, False),
                ref.matmul(a, b, None, False, False, False), 20, "tf32 offset")


def test_emul_tf32_falls_back_before_sm80(rng):
    emu.set_device(132, 7)
    emu.set_matmul_variant("tf32")
    a, b = randn(rng, 5, 7), randn(rng, 7, 3)
    # exact float32 products: the SIMT kernel ran
    assert_same(emu.matmul(a, b, None, False, False, False), ref.matmul(a, b, None, False, False, False))


# ---------------------------------------------------------------------------- conv2d
CONV = [((2, 3, 9, 7), (5, 3, 3, 2), (1, 1), (0, 0)),
        ((1, 2, 8, 11), (3, 2, 3, 3), (2, 3), (1, 2)),
        ((3, 1, 5, 5), (1, 1, 1, 1), (1, 1), (0, 0)),
        ((2, 67, 5, 5), (65, 67, 3, 3), (2, 2), (1, 1))]  # channels off the 64-row tile


@pytest.mark.parametrize("sms", [1, 1000])  # 1000 SMs: the weight gradient splits its sum (atomics)
def test_emul_conv2d(sms, rng):
    emu.set_device(sms, 9)
    for xs, ws, stride, padding in CONV:
        x, w, bias = randn(rng, *xs), randn(rng, *ws), randn(rng, ws[0])
        y = emu.conv2d(x, w, bias, stride, padding)
        assert_same(y, ref.conv2d(x, w, bias, stride, padding), 1e-4, 1e-4, f"conv {xs} {ws}")
        g = randn(rng, *y.shape)
        got = emu.conv2d_backward(g, x, w, stride, padding, True)
        want = ref.conv2d_backward(g, x, w, stride, padding, True)
        for a, b, name in zip(got, want, ("gx", "gw", "gb")):
            assert_same(a, b, 1e-4, 1e-3, f"conv {name} {xs} {ws} sms={sms}")


# ---------------------------------------------------------------------------- pooling
POOL = [((2, 3, 8, 6), (2, 2), (2, 2), (0, 0)), ((1, 2, 7, 9), (3, 2), (1, 2), (1, 1)),
        ((2, 1, 5, 5), (3, 3), (2, 2), (1, 1)), ((1, 3, 13, 11), (3, 3), (1, 1), (1, 1))]


def test_emul_pooling(rng):
    for xs, kernel, stride, padding in POOL:
        for x in (randn(rng, *xs), rng.integers(-2, 3, size=xs).astype(np.float32)):  # ties
            for kind in ("max", "avg"):
                y = emu.pool(kind, x, kernel, stride, padding)
                assert_same(y, getattr(ref, kind + "_pool2d")(x, kernel, stride, padding), what=f"{kind} {xs}")
                g = randn(rng, *y.shape)
                got = emu.pool(kind + "_bwd", x, kernel, stride, padding, grad_out=g)
                want = getattr(ref, kind + "_pool2d_backward")(g, x, kernel, stride, padding)
                assert_same(got, want, what=f"{kind} backward {xs}")


# ---------------------------------------------------------------------------- activations
def test_emul_relu(rng):
    for n, offset in itertools.product((1, 7, 1029), (False, True)):
        x, g = randn(rng, n), randn(rng, n)
        x[0] = 0.0
        xo, go = _maybe_offset(x, offset), _maybe_offset(g, offset)
        assert_same(emu.relu(xo), ref.relu(x))
        assert_same(emu.relu_backward(go, xo), ref.relu_backward(g, x))


SOFTMAX = [((1, 1), 1), ((7, 13), 1), ((9, 1024), 1),  # warp per row, up to its limit
           ((3, 1025), 1), ((2, 2048), 1), ((2, 3001), 1),  # block per row: scalar, float4, odd length
           ((3, 5, 7), 0), ((4, 33, 6), 1), ((2, 2), 0)]  # strided (inner > 1)


@pytest.mark.parametrize("log", [False, True], ids=["softmax", "log_softmax"])
def test_emul_softmax_paths(log, rng):
    fwd = ref.log_softmax if log else ref.softmax
    bwd = ref.log_softmax_backward if log else ref.softmax_backward
    for shape, axis in SOFTMAX:
        x, g = randn(rng, *shape) * 3, randn(rng, *shape)
        for offset in ((False, True) if shape == (2, 2048) else (False,)):
            y = emu.softmax(_maybe_offset(x, offset), axis, log)
            assert_same(y, fwd(x, axis), 1e-4, 1e-5, f"{shape} axis {axis} offset={offset}")
        y = fwd(x, axis)
        assert_same(emu.softmax_backward(g, y, axis, log), bwd(g, y, axis), 1e-4, 1e-5, f"bwd {shape} {axis}")


# ---------------------------------------------------------------------------- loss
def test_emul_cross_entropy(rng):
    for (n, c), dtype in itertools.product([(1, 1), (7, 10), (13, 3), (9, 40)], (np.int64, np.int32)):
        logits = randn(rng, n, c) * 2
        labels = rng.integers(0, c, size=n).astype(dtype)
        loss, bad = emu.cross_entropy(logits, labels)
        assert_same(loss, ref.cross_entropy(logits, labels), 1e-4, 1e-5, f"ce {n}x{c}")
        assert bad == 0
        assert_same(emu.cross_entropy_backward(logits, labels, 0.5),
                    ref.cross_entropy_backward(logits, labels, 0.5), 1e-4, 1e-6, f"ce bwd {n}x{c}")


# ---------------------------------------------------------------------------- optimizers
def test_emul_optimizers(rng):
    for n in (1, 7, 1031):
        p, g = randn(rng, n), randn(rng, n)
        for momentum, nesterov in ((0.0, False), (0.9, False), (0.9, True)):
            pe, ve, pr, vr = p.copy(), np.zeros(n, np.float32), p.copy(), np.zeros(n, np.float32)
            for _ in range(2):
                emu.sgd_update(pe, g, ve if momentum else None, 0.1, momentum, 0.01, nesterov)
                ref.sgd_update(pr, g, vr, 0.1, momentum, 0.01, nesterov)
            assert_same(pe, pr, 1e-5, 1e-6, f"sgd {n} {momentum} {nesterov}")
        pe, me, ve = p.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        pr, mr, vr = p.copy(), np.zeros(n, np.float32), np.zeros(n, np.float32)
        for step in (1, 2, 3):
            emu.adam_update(pe, g, me, ve, step, 1e-3, 0.9, 0.999, 1e-8, 0.01)
            ref.adam_update(pr, g, mr, vr, step, 1e-3, 0.9, 0.999, 1e-8, 0.01)
        assert_same(pe, pr, 1e-5, 1e-6, f"adam {n}")
        pe, se, pr, sr = p.copy(), np.zeros(n, np.float32), p.copy(), np.zeros(n, np.float32)
        for _ in range(2):
            emu.rmsprop_update(pe, g, se, 1e-2, 0.99, 1e-8, 0.0)
            ref.rmsprop_update(pr, g, sr, 1e-2, 0.99, 1e-8, 0.0)
        assert_same(pe, pr, 1e-5, 1e-6, f"rmsprop {n}")


@pytest.mark.parametrize("probe,message", [
    (0, "wait at different barriers"), (1, "lanes of the warp have exited"), (2, "misaligned __ldg")])
def test_emul_reports_misuse_a_gpu_would_not(probe, message):
    # tests/cuda_emu/probes.cpp: each wrong kernel aborts the process with the emulator's message
    code = f"from tests.cuda_emu import emu; emu.lib().emu_probe({probe})"
    proc = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120,
                          cwd=Path(__file__).resolve().parents[1])
    assert proc.returncode != 0 and message in proc.stderr, proc.stderr[-2000:]


def test_emul_refuses_a_launch_a_gpu_refuses():
    assert emu.lib().emu_probe(3) == 9  # cudaErrorInvalidConfiguration: 2048 threads in a block


def test_emul_dynamic_shared_memory_and_shfl_down():
    assert emu.lib().emu_probe(4) == 2080


def test_emul_launch_rewrite():
    from .cuda_emu.build import rewrite_launches
    assert rewrite_launches("k<T><<<g, b, 0, s>>>(x, y);") == "::cuda_emu::launch(g, b, 0, s).with(k<T>)(x, y);"
    assert rewrite_launches("k<<<f(a),\n b>>>(x)").count("\n") == 1  # line numbers kept
    assert rewrite_launches("extern __shared__ __align__(16) float sm[];") == \
        "float* sm = ::cuda_emu::dynamic_shared<float>();"
