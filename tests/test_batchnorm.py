"""Batch normalisation: the op on every backend against the float64 reference (awkward shapes,
NaN, N=1), the reference against finite differences, BatchNorm1d/2d against PyTorch (train,
eval, backward, running statistics), buffers through state_dict/checkpoints/to(device)."""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends, ops
from deepkern.backends import numpy as ref
from deepkern.backends import cupy as cupy_backend

from .conftest import CPU_BACKENDS_UNDER_TEST, assert_close, gpu_available, randn
from .test_gradcheck import numeric_grad

try:  # PyTorch (CPU) is the reference for the layers' semantics; the GPU checks run without it
    import torch
except ImportError:
    torch = None
needs_torch = pytest.mark.skipif(torch is None, reason="PyTorch is not installed")

# (N, C, *spatial): ones, primes, N=1 with spatial extent, rows of C (BatchNorm1d), large
SHAPES = [(2, 1), (7, 13), (1, 3, 5, 7), (3, 5, 11), (5, 7, 3, 2), (2, 300, 1, 1), (257, 37), (16, 8, 33, 31)]


def _bn_case(rng, shape, affine=True, offset=3.0):
    c = shape[1]
    x = randn(rng, *shape) * 2 + np.float32(offset)
    w = randn(rng, c) if affine else None
    b = randn(rng, c) if affine else None
    rm, rv = randn(rng, c), np.abs(randn(rng, c)) + 0.5
    return x, w, b, rm, rv


def _run(backend: str, x, w, b, rm, rv, training, unbiased=True, device=lambda a: a, host=np.asarray):
    """Forward and backward of one case on ``backend``: (y, mean, invstd, running mean, running var,
    gx, gw, gb) as host arrays. ``device`` moves the inputs (cupy.asarray for a GPU backend)."""
    backends.set_backend(backend)
    x, w, b, rm, rv = (None if a is None else device(a.copy()) for a in (x, w, b, rm, rv))
    y, mean, invstd = ops.batch_norm(x, w, b, rm, rv, training=training, momentum=0.1, eps=1e-5,
                                     unbiased=unbiased)
    g = device(np.sin(np.arange(x.size, dtype=np.float32)).reshape(x.shape))
    grads = ops.batch_norm_backward(g, x, w, mean, invstd, training=training, affine=w is not None)
    backends.set_backend(None)
    return tuple(None if a is None else host(a) for a in (y, mean, invstd, rm, rv) + tuple(grads))


def _compare(got, want, what: str) -> None:
    for i, (g, w) in enumerate(zip(got, want)):
        if w is None:
            assert g is None, what
            continue
        assert_close(g, w, rtol=1e-4, atol=2e-5, what=f"{what} output {i}")


@pytest.mark.parametrize("backend", CPU_BACKENDS_UNDER_TEST + ["cupy-code-on-numpy"])
@pytest.mark.parametrize("shape", SHAPES)
@pytest.mark.parametrize("training", [True, False])
def test_backends_match_the_reference(backend, shape, training, rng):
    case = _bn_case(rng, shape, affine=shape[1] != 13)
    want = _run("numpy", *case, training)
    if backend == "cupy-code-on-numpy":  # the CuPy backend's array-API code, run on NumPy arrays
        routed = backends.for_array
        backends.for_array = lambda x: cupy_backend
        try:
            got = _run("numpy", *case, training)
        finally:
            backends.for_array = routed
    else:
        got = _run(backend, *case, training)
    _compare(got, want, backend)


@pytest.mark.gpu
@pytest.mark.skipif(not gpu_available(), reason="no usable GPU")
@pytest.mark.parametrize("backend", ["cuda", "cupy"])
@pytest.mark.parametrize("shape", SHAPES + [(3, 70001), (1000, 3, 1, 1), (2, 1, 513, 257)])
@pytest.mark.parametrize("training", [True, False])
def test_gpu_backends_match_the_reference(backend, shape, training, rng):
    if not backends.available(backend):
        pytest.skip(f"{backend}: {backends.reason_unavailable(backend)}")
    import cupy
    case = _bn_case(rng, shape, affine=shape[1] != 13)
    got = _run(backend, *case, training, device=cupy.asarray, host=cupy.asnumpy)
    cupy.cuda.get_current_stream().synchronize()
    _compare(got, _run("numpy", *case, training), backend)


def test_cpu_kernel_gives_the_same_bits_for_any_thread_count(rng):
    if "cpu" not in CPU_BACKENDS_UNDER_TEST:
        pytest.skip("the C++ module is not built")
    results = []
    before = dk.get_num_threads()
    try:
        for shape in ((64, 3, 40, 40), (300, 700)):   # past the parallel grain: spatial and row paths
            case = _bn_case(rng, shape)
            dk.set_num_threads(2)
            results.append(_run("cpu", *case, True))
            dk.set_num_threads(1)
            results.append(_run("cpu", *case, True))
    finally:
        dk.set_num_threads(before)
    for a, b in zip(results[0] + results[2], results[1] + results[3]):
        np.testing.assert_array_equal(a, b)


def test_large_offsets_keep_the_variance(rng):
    """A mean far from zero against a small spread: the shifted sums must not cancel."""
    x = (randn(rng, 64, 4, 9) * 0.01 + np.float32(1000)).astype(np.float32)
    for backend in CPU_BACKENDS_UNDER_TEST:
        backends.set_backend(backend)
        _, _, invstd = ops.batch_norm(x)
        want = 1 / np.sqrt(x.astype(np.float64).var(axis=(0, 2)) + 1e-5)
        np.testing.assert_allclose(invstd, want, rtol=2e-3)


@needs_torch
@pytest.mark.parametrize("backend", CPU_BACKENDS_UNDER_TEST or ["numpy"])
def test_nan_propagates_to_its_channel_only(backend, rng):
    x, w, b, rm, rv = _bn_case(rng, (4, 3, 5))
    x[2, 1, 3] = np.nan
    y, _, _, rm2, rv2, *_ = _run(backend, x, w, b, rm, rv, True)
    assert np.isnan(y[:, 1]).all() and np.isfinite(y[:, [0, 2]]).all()
    assert np.isnan(rm2[1]) and np.isnan(rv2[1]) and np.isfinite(rm2[[0, 2]]).all()
    t = torch.nn.functional.batch_norm(torch.tensor(x), torch.tensor(rm), torch.tensor(rv), training=True)
    assert np.array_equal(np.isnan(t.numpy()), np.isnan(y))


@needs_torch
def test_training_needs_more_than_one_value_per_channel_like_pytorch():
    with pytest.raises(ValueError, match="more than 1 value per channel"):
        torch.nn.BatchNorm1d(3)(torch.zeros(1, 3))
    with pytest.raises(ValueError, match="more than 1 value per channel when training"):
        dk.nn.BatchNorm1d(3)(dk.Tensor(np.zeros((1, 3), np.float32)))
    bn = dk.nn.BatchNorm1d(3).eval()
    assert bn(dk.Tensor(np.ones((1, 3), np.float32))).shape == (1, 3)   # eval is fine, as in PyTorch
    assert dk.nn.BatchNorm2d(3)(dk.Tensor(np.ones((1, 3, 2, 1), np.float32))).shape == (1, 3, 2, 1)


def test_ops_validation_names_the_argument(rng):
    x = randn(rng, 4, 3)
    with pytest.raises(ValueError, match="weight: expected shape \\(3,\\)"):
        ops.batch_norm(x, randn(rng, 4))
    with pytest.raises(ValueError, match="give both or neither"):
        ops.batch_norm(x, running_mean=randn(rng, 3))
    with pytest.raises(ValueError, match="required when training=False"):
        ops.batch_norm(x, training=False)
    with pytest.raises(ValueError, match="at least 2 dimensions"):
        ops.batch_norm(randn(rng, 5))
    with pytest.raises(TypeError, match="float32"):
        ops.batch_norm(x.astype(np.float64))
    frozen = randn(rng, 3)
    frozen.flags.writeable = False
    with pytest.raises(ValueError, match="read-only"):
        ops.batch_norm(x, running_mean=frozen, running_var=np.ones(3, np.float32))


# ---------------------------------------------------------------------------- finite differences
@pytest.mark.parametrize("shape", [(5, 3), (3, 2, 4), (2, 3, 2, 3)])
@pytest.mark.parametrize("training", [True, False])
def test_reference_backward_matches_finite_differences(shape, training):
    rng = np.random.default_rng(7)
    c = shape[1]
    x, w, b = rng.standard_normal(shape), rng.standard_normal(c), rng.standard_normal(c)
    rm, rv = rng.standard_normal(c), rng.random(c) + 0.5
    r = rng.standard_normal(shape)

    def loss():
        y, _, _ = ref.batch_norm(x, w, b, rm.copy(), rv.copy(), training, 0.1, 1e-5, True)
        return float((y * r).sum())

    _, mean, invstd = ref.batch_norm(x, w, b, rm.copy(), rv.copy(), training, 0.1, 1e-5, True)
    gx, gw, gb = ref.batch_norm_backward(r, x, w, mean, invstd, training, True)
    for analytic, wrt in ((gx, x), (gw, w), (gb, b)):
        np.testing.assert_allclose(analytic, numeric_grad(loss, wrt), rtol=1e-5, atol=1e-7)


def test_functional_gradients_through_the_tape_match_finite_differences():
    rng = np.random.default_rng(3)
    x = dk.Tensor(rng.standard_normal((6, 4)).astype(np.float32), requires_grad=True)
    w = dk.Tensor(rng.standard_normal(4).astype(np.float32), requires_grad=True)
    r = rng.standard_normal((6, 4)).astype(np.float32)
    (dk.nn.functional.batch_norm(x, weight=w, training=True) * dk.Tensor(r)).sum().backward()
    x64, w64 = x.data.astype(np.float64), w.data.astype(np.float64)

    def loss():
        return float((ref.batch_norm(x64, w64, None, None, None, True, 0.1, 1e-5, True)[0] * r).sum())
    np.testing.assert_allclose(x.grad, numeric_grad(loss, x64), rtol=1e-3, atol=1e-4)
    np.testing.assert_allclose(w.grad, numeric_grad(loss, w64), rtol=1e-3, atol=1e-4)


# ---------------------------------------------------------------------------- layers vs PyTorch
def _pair(cls, tcls, c, rng, **kwargs):
    ours, theirs = cls(c, **kwargs), tcls(c, **kwargs)
    if ours.affine:
        ours.weight.data[...] = randn(rng, c)
        ours.bias.data[...] = randn(rng, c)
        theirs.weight.data = torch.tensor(ours.weight.data.copy())
        theirs.bias.data = torch.tensor(ours.bias.data.copy())
    return ours, theirs


@needs_torch
@pytest.mark.parametrize("cls,tcls,shape", [("BatchNorm1d", "BatchNorm1d", (8, 5)),
                                            ("BatchNorm1d", "BatchNorm1d", (6, 5, 7)),
                                            ("BatchNorm2d", "BatchNorm2d", (4, 5, 6, 3))])
@pytest.mark.parametrize("kwargs", [{}, {"momentum": None}, {"affine": False, "momentum": 0.3},
                                    {"track_running_stats": False}])
def test_layers_match_pytorch(cls, tcls, shape, kwargs, rng):
    ours, theirs = _pair(getattr(dk.nn, cls), getattr(torch.nn, tcls), shape[1], rng, **kwargs)
    tol = dict(rtol=1e-4, atol=1e-5)
    for _ in range(3):
        x = randn(rng, *shape) * 2 + 1
        g = randn(rng, *shape)
        xo, xt = dk.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
        yo, yt = ours(xo), theirs(xt)
        yo.backward(g)
        yt.backward(torch.tensor(g))
        np.testing.assert_allclose(yo.numpy(), yt.detach().numpy(), **tol)
        np.testing.assert_allclose(xo.grad, xt.grad.numpy(), **tol)
        if ours.affine:
            np.testing.assert_allclose(ours.weight.grad, theirs.weight.grad.numpy(), **tol)
            np.testing.assert_allclose(ours.bias.grad, theirs.bias.grad.numpy(), **tol)
        ours.zero_grad()
        theirs.zero_grad()
    theirs_state = {k: v.numpy() for k, v in theirs.state_dict().items()}
    assert list(ours.state_dict()) == list(theirs_state)
    for name, value in ours.state_dict().items():
        np.testing.assert_allclose(value, theirs_state[name], **tol)
    ours.eval()
    theirs.eval()
    x = randn(rng, *shape)
    xo, xt = dk.Tensor(x, requires_grad=True), torch.tensor(x, requires_grad=True)
    yo, yt = ours(xo), theirs(xt)
    np.testing.assert_allclose(yo.numpy(), yt.detach().numpy(), **tol)
    yo.sum().backward()
    yt.sum().backward()
    np.testing.assert_allclose(xo.grad, xt.grad.numpy(), **tol)


def test_layers_check_the_input_rank_and_channels():
    with pytest.raises(ValueError, match="expected 4D input"):
        dk.nn.BatchNorm2d(3)(dk.Tensor(np.ones((2, 3), np.float32)))
    with pytest.raises(ValueError, match="expected 3 channels"):
        dk.nn.BatchNorm1d(3)(dk.Tensor(np.ones((2, 4), np.float32)))


# ---------------------------------------------------------------------------- buffers
def _trained_net(rng):
    dk.manual_seed(0)
    net = dk.nn.Sequential(dk.nn.Conv2d(2, 3, 3), dk.nn.BatchNorm2d(3), dk.nn.ReLU(), dk.nn.Flatten(),
                           dk.nn.Linear(12, 4), dk.nn.BatchNorm1d(4))
    for _ in range(3):
        net(dk.Tensor(randn(rng, 5, 2, 4, 4)))
    return net.eval()


def test_buffers_are_state_not_parameters(rng):
    net = _trained_net(rng)
    names = [n for n, _ in net.named_buffers()]
    assert names == ["1.running_mean", "1.running_var", "1.num_batches_tracked",
                     "5.running_mean", "5.running_var", "5.num_batches_tracked"]
    assert all(not p.shape == (3,) or p is not net[1].running_mean for p in net.parameters())
    assert len(net.parameters()) == 8 and int(net[1].num_batches_tracked.numpy()) == 3
    assert set(names) <= set(net.state_dict())


def test_buffers_survive_state_dict_and_checkpoint_round_trips(rng, tmp_path):
    net = _trained_net(rng)
    x = dk.Tensor(randn(rng, 2, 2, 4, 4))
    want = net(x).numpy()
    fresh = dk.nn.Sequential(dk.nn.Conv2d(2, 3, 3), dk.nn.BatchNorm2d(3), dk.nn.ReLU(), dk.nn.Flatten(),
                             dk.nn.Linear(12, 4), dk.nn.BatchNorm1d(4)).eval()
    fresh.load_state_dict(net.state_dict())
    np.testing.assert_array_equal(fresh(x).numpy(), want)
    path = dk.train.save(net, tmp_path / "bn.npz")
    restored = _trained_net(np.random.default_rng(99))  # different running statistics
    assert not np.array_equal(restored(x).numpy(), want)
    dk.train.load(restored, path)
    np.testing.assert_array_equal(restored(x).numpy(), want)


def test_load_state_dict_refuses_a_missing_buffer(rng):
    net = _trained_net(rng)
    state = net.state_dict()
    del state["1.running_var"]
    with pytest.raises(ValueError, match="missing keys: \\['1.running_var'\\]"):
        net.load_state_dict(state)


def test_register_buffer_rules():
    m = dk.nn.Module()
    m.register_buffer("stat", np.zeros(2, np.float32))
    m.register_buffer("scratch", np.ones(2, np.float32), persistent=False)
    m.register_buffer("absent", None)
    assert list(m.state_dict()) == ["stat"] and [n for n, _ in m.named_buffers()] == ["stat", "scratch"]
    m.stat = np.full(2, 3, np.float32)       # reassigning keeps it a buffer
    assert isinstance(m.stat, dk.Tensor) and m.state_dict()["stat"].tolist() == [3, 3]
    with pytest.raises(TypeError, match="a Parameter cannot be a buffer"):
        m.stat = dk.nn.Parameter(np.zeros(2))
    m.weight = dk.nn.Parameter(np.zeros(2))
    with pytest.raises(ValueError, match="already a parameter"):
        m.register_buffer("weight", np.zeros(2))
    del m.stat
    assert "stat" not in m.state_dict()


def test_module_to_cpu_keeps_buffers(rng):
    net = _trained_net(rng)
    before = net[1].running_mean.data
    net.to("cpu")
    assert net[1].running_mean.data is before


@pytest.mark.skipif(not gpu_available(), reason="no usable GPU")
def test_module_to_cuda_moves_buffers_and_runs_there(rng):
    import cupy
    net = _trained_net(rng)
    x = randn(rng, 2, 2, 4, 4)
    want = net(dk.Tensor(x)).numpy()
    net.to("cuda")
    assert all(isinstance(b.data, cupy.ndarray) for b in net.buffers())
    assert_close(net(dk.Tensor(x).to("cuda")).numpy(), want, rtol=1e-4, atol=1e-5)
    net.train()
    net(dk.Tensor(x).to("cuda"))          # running statistics updated in place on the GPU
    assert int(net[1].num_batches_tracked.numpy()) == 4
    net.to("cpu")
    assert isinstance(net[1].running_mean.data, np.ndarray)


@pytest.mark.parametrize("variant", ["generic", "avx2", "avx512"])
def test_every_simd_variant_of_the_cpu_kernels_matches_the_reference(variant, rng):
    if "cpu" not in CPU_BACKENDS_UNDER_TEST:
        pytest.skip("the C++ module is not built")
    from deepkern import _cpu
    try:
        _cpu.set_simd_variant(variant)
    except ValueError as exc:
        pytest.skip(f"{variant}: {exc}")
    try:
        for shape in ((7, 13), (3, 5, 11), (33, 300), (16, 8, 33, 31)):
            for training in (True, False):
                case = _bn_case(rng, shape)
                for got, want in zip(_run("cpu", *case, training), _run("numpy", *case, training)):
                    assert_close(got, want, rtol=1e-4, atol=2e-5, what=f"{variant} {shape}")
    finally:
        _cpu.set_simd_variant("auto")
