"""Hostile inputs through ``deepkern._cpu`` and ``deepkern.ops`` (issue P7): zero-size arrays,
64-bit geometry, overlapping and misaligned buffers, huge windows, bad argument types.

Calls that once crashed the interpreter run in a subprocess, so a regression is a failed test
(with the signal named) rather than a dead test run.
"""
from __future__ import annotations

import subprocess
import sys
import textwrap

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends

from .conftest import assert_close

pytestmark = pytest.mark.skipif(not backends.available("cpu"), reason="the C++ module is not built")

SIMD_VARIANTS = ("generic", "avx2", "avx512")
f32 = np.float32


def run_isolated(code: str, env_simd: str | None = None, timeout: float = 120) -> str:
    """Runs `code` in a fresh interpreter (with DEEPKERN_SIMD=env_simd); returns its stdout and
    fails the test when it dies by a signal, exits non-zero or runs past `timeout`."""
    import os
    env = dict(os.environ)
    if env_simd:
        env["DEEPKERN_SIMD"] = env_simd
    src = "import numpy as np\nfrom deepkern import _cpu\nf32 = np.float32\n" + textwrap.dedent(code)
    try:
        proc = subprocess.run([sys.executable, "-c", src], capture_output=True, text=True, timeout=timeout, env=env)
    except subprocess.TimeoutExpired:
        pytest.fail(f"did not return within {timeout} s (DEEPKERN_SIMD={env_simd})")
    if proc.returncode != 0:
        how = f"signal {-proc.returncode}" if proc.returncode < 0 else f"exit {proc.returncode}"
        pytest.fail(f"died with {how} (DEEPKERN_SIMD={env_simd}):\n{proc.stderr[-2000:]}")
    return proc.stdout


def cpu_supports(variant: str) -> bool:
    from deepkern import _cpu
    try:
        _cpu.set_simd_variant(variant)
        return True
    except ValueError:
        return False
    finally:
        _cpu.set_simd_variant("auto")


@pytest.fixture(params=SIMD_VARIANTS)
def simd(request) -> str:
    if not cpu_supports(request.param):
        pytest.skip(f"this CPU has no {request.param}")
    return request.param


# ---------------------------------------------------------------------------- crashes 1-3: zero sizes
def test_cross_entropy_with_zero_classes_is_nan_or_a_clean_error(simd):
    out = run_isolated("""
        print(float(_cpu.cross_entropy(np.zeros((0, 0), f32), np.zeros(0, np.int64))))
        print(_cpu.cross_entropy_backward(np.zeros((0, 0), f32), np.zeros(0, np.int64), 1.0).shape)
        try:
            _cpu.cross_entropy(np.zeros((3, 0), f32), np.zeros(3, np.int64))
        except ValueError as e:
            print("ValueError", e)
    """, simd)
    lines = out.splitlines()
    assert lines[0] == "nan" and lines[1] == "(0, 0)"
    assert lines[2].startswith("ValueError labels:")


def test_max_pool_backward_on_an_empty_plane_with_padding(simd):
    out = run_isolated("""
        x = np.zeros((64, 64, 0, 0), f32)
        y = _cpu.max_pool2d(x, (2, 2), (2, 2), (1, 1))
        g = _cpu.max_pool2d_backward(np.ones(y.shape, f32), x, (2, 2), (2, 2), (1, 1))
        print(y.shape, float(y.max()), g.shape)
        a = _cpu.avg_pool2d(x, (2, 2), (2, 2), (1, 1))
        print(float(np.abs(a).max()))
    """, simd)
    assert out.splitlines() == ["(64, 64, 1, 1) -inf (64, 64, 0, 0)", "0.0"]


def test_softmax_over_an_empty_strided_axis(simd):
    out = run_isolated("""
        for fn in (_cpu.softmax, _cpu.log_softmax):
            for shape, axis in (((2, 0, 3), 1), ((0, 5), 1), ((5, 0), 0), ((3, 0), 1)):
                x = np.zeros(shape, f32)
                y = fn(x, axis)
                assert y.shape == shape
        for fn in (_cpu.softmax_backward, _cpu.log_softmax_backward):
            z = np.zeros((2, 0, 3), f32)
            assert fn(z, z, 1).shape == (2, 0, 3)
        print("ok")
    """, simd)
    assert out.strip() == "ok"


def test_every_entry_handles_zero_size_arrays(simd):
    # the result NumPy's rules give: an empty product is zeros (+ bias), an empty batch empty
    out = run_isolated("""
        z = lambda *s: np.zeros(s, f32)
        c = _cpu.matmul(z(3, 0), z(0, 4), np.ones(4, f32), False, False, False)
        assert c.shape == (3, 4) and (c == 1).all()
        assert _cpu.matmul(z(0, 5), z(5, 4), None, True, False, False).shape == (0, 4)
        da, db, dbias = _cpu.matmul_backward(z(0, 4), z(0, 5), z(5, 4), None, False, False, True)
        assert da.shape == (0, 5) and (db == 0).all() and (dbias == 0).all()
        y = _cpu.conv2d(z(0, 2, 5, 5), z(3, 2, 3, 3), None, (1, 1), (0, 0))
        assert y.shape == (0, 3, 3, 3)
        gx, gw, gb = _cpu.conv2d_backward(z(0, 3, 3, 3), z(0, 2, 5, 5), z(3, 2, 3, 3), (1, 1), (0, 0), True)
        assert gx.shape == (0, 2, 5, 5) and (gw == 0).all() and (gb == 0).all()
        # no output channels (found by the fuzzer: the backward divided by OC * CKK + OC)
        gx, gw, gb = _cpu.conv2d_backward(z(2, 0, 3, 3), np.ones((2, 2, 5, 5), f32), z(0, 2, 3, 3), (1, 1),
                                          (0, 0), True)
        assert (gx == 0).all() and gw.shape == (0, 2, 3, 3) and gb.shape == (0,)
        assert _cpu.conv2d(np.ones((2, 2, 5, 5), f32), z(0, 2, 3, 3), None, (1, 1), (0, 0)).shape == (2, 0, 3, 3)
        # no input channels: the output is the bias
        y = _cpu.conv2d(z(2, 0, 5, 5), z(3, 0, 3, 3), np.arange(3, dtype=f32), (1, 1), (1, 1))
        assert (y == np.arange(3, dtype=f32)[None, :, None, None]).all()
        assert _cpu.relu(z(0, 7)).shape == (0, 7)
        assert _cpu.relu_backward(z(0, 7), z(0, 7)).shape == (0, 7)
        for p in (z(0), z(4, 0)):
            _cpu.sgd_update(p, p.copy(), p.copy(), 0.1, 0.9, 0.0, False)
            _cpu.adam_update(p, p.copy(), p.copy(), p.copy(), 1, 0.1, 0.9, 0.999, 1e-8, 0.0)
            _cpu.rmsprop_update(p, p.copy(), p.copy(), 0.1, 0.99, 1e-8, 0.0)
        print("ok")
    """, simd)
    assert out.strip() == "ok"


# ---------------------------------------------------------------------------- crash 4: 64-bit geometry
@pytest.mark.parametrize("padding", [(2**31 - 1, 0), (0, 2**31 - 1), (2**30, 2**30)])
def test_conv2d_huge_padding_is_a_clean_error(simd, padding):
    out = run_isolated(f"""
        try:
            _cpu.conv2d(np.ones((1, 1, 3, 3), f32), np.ones((1, 1, 2, 2), f32), None, (1, 1), {padding})
        except ValueError as e:
            print("ValueError", e)
    """, simd)
    assert out.startswith("ValueError padding:") and "32-bit index limit" in out


def test_huge_padding_or_stride_through_ops_names_the_limit():
    x, w = np.ones((1, 1, 3, 3), f32), np.ones((1, 1, 2, 2), f32)
    with pytest.raises(ValueError, match=r"padded input .* exceeds the kernels' 32-bit index limit"):
        dk.ops.conv2d(x, w, padding=2**31 - 1)
    with pytest.raises(ValueError, match=r"stride: 2147483648 exceeds the kernels' 32-bit index limit"):
        dk.ops.conv2d(x, w, stride=2**31)
    with pytest.raises(ValueError, match=r"stride: .* 32-bit index limit"):
        dk.ops.max_pool2d(np.ones((1, 1, 4, 4), f32), 2, stride=(1, 2**40))


def test_conv2d_huge_stride_and_padding_within_limits_match_the_reference():
    # pad + stride passes 2**31 (conv2d.cpp's valid_range once computed it in 32 bits)
    from deepkern.backends import numpy as ref
    from deepkern import _cpu
    x = np.arange(9, dtype=f32).reshape(1, 1, 3, 3)
    w = np.ones((1, 1, 1, 1), f32)
    for stride, padding in (((2**31 - 1, 2**31 - 1), (2, 2)), ((1, 2**31 - 1), (0, 1))):
        got = _cpu.conv2d(x, w, None, stride, padding)
        assert_close(got, ref.conv2d(x, w, None, stride, padding), what=f"conv2d {stride} {padding}")


# ---------------------------------------------------------------------------- the hang: K > 2**31 - KC
def test_matmul_with_k_near_the_index_limit_returns():
    # A (1, K) @ B (K, 1) of zeros mapped read-only from the zero page (no memory is touched);
    # with 32-bit block counters `pc += KC` wrapped and the GEMM never returned.
    out = run_isolated("""
        import mmap
        import deepkern as dk
        K = 2**31 - 1
        def zeros(n):
            buf = mmap.mmap(-1, n * 4, flags=mmap.MAP_PRIVATE, prot=mmap.PROT_READ)
            buf.madvise(mmap.MADV_HUGEPAGE)
            return np.frombuffer(buf, dtype=f32, count=n)
        c = dk.ops.matmul(zeros(K).reshape(1, K), zeros(K).reshape(K, 1), bias=np.full(1, 2.0, f32))
        print(float(c[0, 0]))
    """, timeout=300)
    assert out.strip() == "2.0"


# ---------------------------------------------------------------------------- silently wrong 5, 8
def test_avg_pool_with_a_huge_window_is_finite(cpu_backend):
    # kernel 65536 x 65536 (KH*KW overflowed int: 1/0 = inf); padding lets a 1x1 input hold it
    x = np.full((1, 1, 1, 1), 3.0, f32)
    k, p = 65536, 32768
    y = dk.ops.avg_pool2d(x, k, stride=1, padding=p)
    assert y.shape == (1, 1, 2, 2)
    assert_close(y, np.full((1, 1, 2, 2), 3.0 / 2**32, f32), rtol=1e-6, atol=0, what="avg_pool2d 65536")
    g = dk.ops.avg_pool2d_backward(np.ones((1, 1, 2, 2), f32), x, k, stride=1, padding=p)
    assert_close(g, np.full((1, 1, 1, 1), 4.0 / 2**32, f32), rtol=1e-6, atol=0, what="avg_pool2d_backward 65536")


@pytest.mark.parametrize("scale", [1e4, 1e8, 1e30])
def test_cross_entropy_keeps_precision_for_large_logits(cpu_backend, scale):
    # rowmax + log(sum) rounded away log(sum): logits [1e8, 1e8] gave 0.0, not ln 2
    s = f32(scale)
    logits = np.array([[s, s], [s, np.nextafter(s, f32(0))], [s, s]], f32)
    labels = np.array([0, 1, 1], np.int64)
    z = logits.astype(np.float64)
    mx = z.max(axis=1)
    rows = (mx - z[np.arange(3), labels]) + np.log(np.exp(z - mx[:, None]).sum(axis=1))
    got = float(dk.ops.cross_entropy(logits, labels))
    assert abs(got - rows.mean()) <= 1e-6 * abs(rows.mean()), (got, rows.mean())
    assert abs(float(dk.ops.cross_entropy(logits[:1], labels[:1])) - np.log(2.0)) < 1e-6


# ---------------------------------------------------------------------------- silently wrong 9, 10
def test_in_place_updates_refuse_overlapping_arrays():
    p = np.ones(16, f32)
    g = np.ones(16, f32)
    with pytest.raises(ValueError, match="velocity: shares memory with param"):
        dk.ops.sgd_update(p, g, p, lr=0.1, momentum=0.9)
    state = np.zeros(32, f32)
    with pytest.raises(ValueError, match="v: shares memory with m"):
        dk.ops.adam_update(p, g, state[:16], state[8:24], step=1)
    with pytest.raises(ValueError, match="grad: shares memory with param"):
        dk.ops.rmsprop_update(p, p, np.zeros(16, f32))
    from deepkern import _cpu
    with pytest.raises(ValueError, match="shares memory"):
        _cpu.sgd_update(p, g, p, 0.1, 0.9, 0.0, False)
    with pytest.raises(ValueError, match="v: shares memory with m"):
        _cpu.adam_update(p, g, state[:16], state[8:24], 1, 0.1, 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match="shares memory"):
        _cpu.rmsprop_update(p, g, p, 0.1, 0.99, 1e-8, 0.0)
    assert (p == 1).all()  # nothing was written


def _misaligned(n: int) -> np.ndarray:
    buf = np.zeros(4 * n + 1, np.uint8)
    x = np.frombuffer(buf.data, dtype=f32, count=n, offset=1)
    assert not x.flags.aligned
    return x


def test_misaligned_buffers_are_refused_by_ops_and_the_binding():
    from deepkern import _cpu
    x = _misaligned(64)
    with pytest.raises(ValueError, match="aligned"):
        dk.ops.relu(x)
    with pytest.raises(ValueError, match="aligned"):
        _cpu.relu(x)
    with pytest.raises(ValueError, match="aligned"):
        _cpu.softmax(x.reshape(8, 8), 1)
    with pytest.raises(ValueError, match="aligned"):
        _cpu.matmul(x.reshape(8, 8), np.ones((8, 8), f32), None, False, False, False)


# ---------------------------------------------------------------------------- unclear messages
def test_bad_scalar_arguments_get_named_messages():
    p, g = np.ones(4, f32), np.ones(4, f32)
    with pytest.raises(TypeError, match=r"lr: expected a real number, got '0.1'"):
        dk.ops.sgd_update(p, g, None, lr="0.1")
    with pytest.raises(TypeError, match=r"grad: expected a real number, got None"):
        dk.ops.cross_entropy_backward(np.ones((2, 3), f32), np.zeros(2, np.int64), grad=None)
    with pytest.raises(ValueError, match=r"step: expected an int in \[1, 2\*\*63 - 1\], got 9223372036854775808"):
        dk.ops.adam_update(p, g, np.zeros(4, f32), np.zeros(4, f32), step=2**63)
    with pytest.raises(TypeError, match="beta1: expected a real number"):
        dk.ops.adam_update(p, g, np.zeros(4, f32), np.zeros(4, f32), step=1, beta1="0.9")


# ---------------------------------------------------------------------------- host cache
def test_host_cache_limit_env_refuses_negative_values():
    import os
    env = dict(os.environ, DEEPKERN_HOST_CACHE_MB="-1")
    code = "from deepkern import _cpu; print(_cpu.host_cache_info()['limit_bytes'])"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert int(out.stdout) == 1024 << 20  # the default, not 2**64 - 1 MB (unlimited)
    env["DEEPKERN_HOST_CACHE_MB"] = "16"
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, env=env, check=True)
    assert int(out.stdout) == 16 << 20


@pytest.fixture
def big_cache():
    from deepkern import _cpu
    before = _cpu.host_cache_info()["limit_bytes"]
    _cpu.set_host_cache_limit(1 << 30)
    _cpu.empty_host_cache()
    yield _cpu
    _cpu.empty_host_cache()
    _cpu.set_host_cache_limit(before)


def test_host_cache_drops_buffers_of_sizes_that_never_come_back(big_cache):
    dk.set_backend("cpu")
    # 300 outputs of distinct sizes, 256 KiB to 1.4 MiB: none is ever reused
    for i in range(300):
        dk.ops.relu(np.ones(65536 + 1024 * i, f32))
    info = big_cache.host_cache_info()
    assert info["cached_buffers"] <= 64
    assert info["cached_bytes"] < 100 << 20  # all 300 would be ~250 MB


def test_host_cache_keeps_a_reused_working_set(big_cache):
    dk.set_backend("cpu")
    sizes = [65536 + 4096 * i for i in range(48)]   # a training step's 48 distinct outputs
    start = big_cache.host_cache_info()
    for _ in range(4):
        outs = [dk.ops.relu(np.ones(n, f32)) for n in sizes]
        del outs
    info = big_cache.host_cache_info()
    assert info["misses"] - start["misses"] == len(sizes)   # only the first step allocated
    assert info["hits"] - start["hits"] == 3 * len(sizes)


def test_plain_sgd_leaves_a_given_velocity_untouched():
    # found by the fuzzer: with momentum 0 the C++ kernel overwrote velocity, the reference not
    from deepkern import _cpu
    p, g, v = np.ones(8, f32), np.full(8, 0.5, f32), np.full(8, 7.0, f32)
    _cpu.sgd_update(p, g, v, 0.1, 0.0, 0.0, False)
    assert (v == 7.0).all()
    assert_close(p, np.full(8, 0.95, f32), what="sgd param")
