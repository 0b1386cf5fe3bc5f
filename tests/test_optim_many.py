"""The optimizers' one-call step on the C++ backend (``<name>_update_many``) and the checks it
keeps: the same bits as one ``ops.<name>_update`` per parameter, and the same errors when a
parameter, gradient or state buffer is swapped for a bad one between steps."""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends, ops, optim
from deepkern.autograd import Tensor

from .conftest import randn

pytestmark = pytest.mark.skipif(not backends.available("cpu"), reason="the C++ backend is not built")

# a large tensor (split over the threads), awkward sizes, single elements
SHAPES = ((300, 211), (7,), (1,), (33, 5), (40000,))


@pytest.fixture
def two_threads():
    before = dk.get_num_threads()
    dk.set_num_threads(2)
    yield
    dk.set_num_threads(before)


def _pair(rng, shapes=SHAPES):
    """Parameters and a copy of their arrays (the reference updates the copies)."""
    params = [Tensor(randn(rng, *s), requires_grad=True) for s in shapes]
    return params, [p.numpy().copy() for p in params]


# (factory, per-parameter reference update on (param, grad, state dict, step))
CASES = {
    "adam": (lambda ps: optim.Adam(ps, lr=0.01, betas=(0.8, 0.95), eps=1e-6, weight_decay=0.01),
             lambda p, g, s, t: ops.adam_update(p, g, s.setdefault("m", np.zeros_like(p)),
                                                s.setdefault("v", np.zeros_like(p)), t, 0.01, 0.8, 0.95, 1e-6, 0.01)),
    "sgd": (lambda ps: optim.SGD(ps, lr=0.05, weight_decay=0.1),
            lambda p, g, s, t: ops.sgd_update(p, g, None, 0.05, 0.0, 0.1)),
    "nesterov": (lambda ps: optim.SGD(ps, lr=0.05, momentum=0.8, nesterov=True),
                 lambda p, g, s, t: ops.sgd_update(p, g, s.setdefault("v", np.zeros_like(p)), 0.05, 0.8, 0.0, True)),
    "rmsprop": (lambda ps: optim.RMSprop(ps, lr=0.01, alpha=0.9, eps=1e-7, weight_decay=0.01),
                lambda p, g, s, t: ops.rmsprop_update(p, g, s.setdefault("s", np.zeros_like(p)), 0.01, 0.9, 1e-7,
                                                      0.01)),
}


@pytest.mark.parametrize("name", list(CASES))
@pytest.mark.parametrize("threads", [1, 2])
def test_one_call_step_gives_the_bits_of_one_call_per_parameter(rng, name, threads):
    factory, reference = CASES[name]
    before = dk.get_num_threads()
    dk.set_num_threads(threads)
    try:
        params, expected = _pair(rng)
        opt = factory(params)
        states = [{} for _ in params]
        for t in range(1, 4):
            for i, p in enumerate(params):
                if t == 2 and i == 1:
                    p.grad = None     # skipped once: its Adam step count falls behind the others'
                    continue
                p.grad = randn(rng, *p.shape)
                states[i]["t"] = states[i].get("t", 0) + 1
                reference(expected[i], p.grad.copy(), states[i], states[i]["t"])
            opt.step()
        for p, e in zip(params, expected):
            assert np.array_equal(p.numpy(), e)
    finally:
        dk.set_num_threads(before)


def test_parameters_sharing_memory_are_updated_one_after_the_other(rng, two_threads):
    data = randn(rng, 200, 300)
    a, b = Tensor(data, requires_grad=True), Tensor(data, requires_grad=True)   # the same array
    assert a.data is b.data
    expected = data.copy()
    opt = optim.Adam([a, b], lr=0.1)
    ga, gb = randn(rng, 200, 300), randn(rng, 200, 300)
    a.grad, b.grad = ga, gb
    opt.step()
    m, v = np.zeros_like(expected), np.zeros_like(expected)
    ops.adam_update(expected, ga, m, v, 1, 0.1)
    ops.adam_update(expected, gb, np.zeros_like(expected), np.zeros_like(expected), 1, 0.1)
    assert np.array_equal(a.numpy(), expected)


def _error(fn):
    with pytest.raises((TypeError, ValueError)) as info:
        fn()
    return info.type, str(info.value)


def _stepped(rng):
    """An Adam over two parameters, after one step (their arrays are then known as checked)."""
    params = [Tensor(randn(rng, 3, 5), requires_grad=True), Tensor(randn(rng, 5), requires_grad=True)]
    opt = optim.Adam(params, lr=0.1)
    for p in params:
        p.grad = randn(rng, *p.shape)
    opt.step()
    return params, opt


def _same_error_as_ops(opt, params, index):
    """The optimizer's error equals ops.adam_update's on the same arrays; nothing was updated."""
    p, state = params[index], opt.state[index]
    before = [q.numpy().copy() for q in params if isinstance(q.data, np.ndarray)]
    expected = _error(lambda: ops.adam_update(p.data, p.grad, state["m"], state["v"], state["step"] + 1, 0.1))
    assert _error(opt.step) == expected
    after = [q.numpy() for q in params if isinstance(q.data, np.ndarray)]
    assert all(np.array_equal(x, y) for x, y in zip(before, after))
    return expected


def test_a_parameter_swapped_for_a_wrong_shape_is_refused_like_ops(rng):
    params, opt = _stepped(rng)
    params[0].data = randn(rng, 5, 3)
    kind, message = _same_error_as_ops(opt, params, 0)
    assert kind is ValueError and "expected shape (5, 3) like param" in message


def test_a_parameter_swapped_for_another_dtype_is_refused_like_ops(rng):
    params, opt = _stepped(rng)
    params[1].data = params[1].data.astype(np.float64)
    kind, message = _same_error_as_ops(opt, params, 1)
    assert kind is TypeError and "param: expected dtype float32" in message


def test_a_parameter_moved_to_the_gpu_is_refused_like_ops(rng):
    class FakeGpuArray:  # anything exposing the CUDA array interface counts as a GPU array
        __cuda_array_interface__ = {"shape": (3, 5), "typestr": "<f4", "data": (0, False), "version": 3}
        shape, ndim, dtype, size = (3, 5), 2, np.dtype(np.float32), 15

        class flags:  # noqa: N801
            c_contiguous = True
            writeable = True

    params, opt = _stepped(rng)
    params[0].data = FakeGpuArray()
    kind, message = _same_error_as_ops(opt, params, 0)
    assert kind is ValueError and "on the CPU but param is on the GPU" in message


def test_a_gradient_of_the_wrong_shape_is_refused_like_ops(rng):
    params, opt = _stepped(rng)
    params[0].grad = randn(rng, 15)
    kind, message = _same_error_as_ops(opt, params, 0)
    assert "grad: expected shape (3, 5) like param, got (15,)" in message


def test_state_aliasing_is_refused_like_ops(rng):
    params, opt = _stepped(rng)
    opt.state[0]["v"] = opt.state[0]["m"]
    kind, message = _same_error_as_ops(opt, params, 0)
    assert kind is ValueError and "v: shares memory with m" in message


def test_a_gradient_sharing_memory_with_its_parameter_is_refused_like_ops(rng):
    # nothing about the arrays' identities changed: the kernel's own check refuses it, and the
    # error is reported in ops' words
    params, opt = _stepped(rng)
    params[1].grad = params[1].data
    kind, message = _same_error_as_ops(opt, params, 1)
    assert kind is ValueError and "grad: shares memory with param" in message


def test_a_parameter_made_read_only_is_refused_like_ops(rng):
    params, opt = _stepped(rng)
    params[0].data.flags.writeable = False
    kind, message = _same_error_as_ops(opt, params, 0)
    assert "param: array is read-only" in message


def test_hyperparameters_written_past_the_setters_are_still_checked(rng):
    params, opt = _stepped(rng)
    opt.hyper["lr"] = float("nan")
    with pytest.raises(ValueError, match="lr: expected a finite value"):
        opt.step()


def test_a_step_count_below_one_is_refused_like_ops(rng):
    params, opt = _stepped(rng)
    before = [p.numpy().copy() for p in params]
    for state in opt.state:
        state["step"] = -5   # e.g. from a damaged checkpoint
    with pytest.raises(ValueError, match=r"step: expected an int in \[1, 2\*\*63 - 1\], got -4"):
        opt.step()
    assert all(np.array_equal(p.numpy(), b) for p, b in zip(params, before))


def test_a_subclass_with_its_own_rule_keeps_it(rng):
    class HalfAdam(optim.Adam):
        def _update(self, param, grad, state):
            param -= 0.5 * grad

    (p,) = [Tensor(randn(rng, 4, 4), requires_grad=True)]
    expected = p.numpy() - 0.5 * np.ones((4, 4), np.float32)
    p.grad = np.ones((4, 4), np.float32)
    HalfAdam([p]).step()
    assert np.array_equal(p.numpy(), expected)


def test_many_kernels_check_every_group_before_updating_any(rng):
    from deepkern import _cpu

    ps = [randn(rng, 4), randn(rng, 3)]
    gs = [randn(rng, 4), randn(rng, 3)]
    ms = [np.zeros(4, np.float32), np.zeros(3, np.float32)]
    vs = [np.zeros(4, np.float32), np.zeros(2, np.float32)]   # the last one is wrong
    before = [p.copy() for p in ps]
    with pytest.raises(ValueError, match=r"vs\[1\]: shape differs from params\[1\]"):
        _cpu.adam_update_many(ps, gs, ms, vs, 1, 0.1, 0.9, 0.999, 1e-8, 0.0)
    assert all(np.array_equal(p, b) for p, b in zip(ps, before))
    with pytest.raises(ValueError, match=r"grads: expected 2 arrays"):
        _cpu.adam_update_many(ps, gs[:1], ms, vs, 1, 0.1, 0.9, 0.999, 1e-8, 0.0)
    with pytest.raises(ValueError, match=r"grads\[0\]: shares memory with params\[0\]"):
        _cpu.sgd_update_many(ps, [ps[0], gs[1]], None, 0.1, 0.0, 0.0, False)
    with pytest.raises(ValueError, match="velocities: required when momentum > 0"):
        _cpu.sgd_update_many(ps, gs, None, 0.1, 0.9, 0.0, False)
    with pytest.raises(TypeError, match="square_avgs"):
        _cpu.rmsprop_update_many(ps, gs, None, 0.1, 0.9, 1e-8, 0.0)
    with pytest.raises(ValueError, match="step"):
        _cpu.adam_update_many(ps, gs, ms, [np.zeros(4, np.float32), np.zeros(3, np.float32)], 0, 0.1, 0.9,
                              0.999, 1e-8, 0.0)


def test_the_cpu_backend_updates_all_parameters_in_one_call(rng, monkeypatch):
    cpu = backends.load("cpu")
    calls = []
    many = cpu.adam_update_many

    def counted(params, *args):
        calls.append(len(params))
        return many(params, *args)

    monkeypatch.setattr(cpu, "adam_update_many", counted)
    params, opt = _stepped(rng)
    for p in params:
        p.grad = randn(rng, *p.shape)
    opt.step()
    assert calls == [2, 2]
