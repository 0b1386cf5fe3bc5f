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


# ---------------------------------------------------------------------------- the short way
# After a full step, the next ones go straight to the kernel while nothing but the gradients and
# the step counts changed (optim._StepPlan). Each test changes one thing the full step checked
# and expects what a full step gives: the reference's bits, or ops' error with nothing updated.
class _Reference:
    """Adam over copies of the parameters, one checked ``ops.adam_update`` per parameter."""

    def __init__(self, params, lr=0.1):
        self.arrays = [p.numpy().copy() for p in params]
        self.m = [np.zeros_like(a) for a in self.arrays]
        self.v = [np.zeros_like(a) for a in self.arrays]
        self.t = [0] * len(params)
        self.lr = lr

    def step(self, grads):
        for i, g in enumerate(grads):
            self.t[i] += 1
            ops.adam_update(self.arrays[i], np.ascontiguousarray(g, np.float32), self.m[i], self.v[i], self.t[i],
                            self.lr)


def _train(rng, params, opt, ref, steps=2, grads=None):
    """``steps`` steps of opt and ref with the same fresh gradients; checks the bits after each."""
    for _ in range(steps):
        gs = grads or [randn(rng, *p.shape) for p in params]
        for p, g in zip(params, gs):
            p.grad = g
        ref.step(gs)
        opt.step()
        for p, a in zip(params, ref.arrays):
            assert np.array_equal(p.numpy(), a)


@pytest.fixture
def short(rng):
    """Three parameters after two steps (the second one the short way), and their reference."""
    params = [Tensor(randn(rng, 3, 5), requires_grad=True), Tensor(randn(rng, 5), requires_grad=True),
              Tensor(randn(rng, 1), requires_grad=True)]
    opt, ref = optim.Adam(params, lr=0.1), _Reference(params)
    _train(rng, params, opt, ref)
    return params, opt, ref


def test_steps_after_the_first_skip_the_full_checks(rng, short, monkeypatch):
    params, opt, ref = short
    full = []
    monkeypatch.setattr(optim.Optimizer, "_step_many", lambda self, *a: full.append(a))
    _train(rng, params, opt, ref, steps=3)   # the bits of the reference, without a full step
    assert full == []


def test_a_parameter_given_a_new_array_is_updated_there(rng, short):
    params, opt, ref = short
    old = params[0].data
    kept = old.copy()
    params[0].data = randn(rng, 3, 5)
    ref.arrays[0] = params[0].numpy().copy()
    _train(rng, params, opt, ref)
    assert np.array_equal(old, kept)


def test_a_parameter_reshaped_in_place_is_refused_like_ops(rng, short):
    params, opt, _ = short
    params[0].data.shape = (5, 3)
    params[0].grad = randn(rng, 5, 3)
    kind, message = _same_error_as_ops(opt, params, 0)
    assert kind is ValueError and "m: expected shape (5, 3) like param, got (3, 5)" in message


@pytest.mark.parametrize("make", [lambda g: g.astype(np.float64), lambda g: np.asfortranarray(g),
                                  lambda g: np.repeat(g, 2, axis=-1)[..., ::2]],
                         ids=["float64", "fortran", "strided"])
def test_a_gradient_of_another_dtype_or_layout_is_converted_as_in_a_full_step(rng, short, make):
    params, opt, ref = short
    grads = [make(randn(rng, *p.shape)) for p in params]
    assert not all(g.dtype == np.float32 and g.flags.c_contiguous for g in grads)
    _train(rng, params, opt, ref, steps=1, grads=grads)


def test_a_gradient_sharing_memory_with_a_state_buffer_is_refused_like_ops(rng, short):
    params, opt, _ = short
    params[1].grad = opt.state[1]["m"]
    kind, message = _same_error_as_ops(opt, params, 1)
    assert kind is ValueError and "m: shares memory with grad" in message


def test_a_hyperparameter_changed_between_steps_is_used(rng, short):
    params, opt, ref = short
    opt.lr = ref.lr = 0.003
    _train(rng, params, opt, ref)
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1.0


def test_state_buffers_replaced_or_removed_between_steps(rng, short):
    params, opt, ref = short
    opt.state[0]["m"] = np.zeros((3, 5), np.float32)   # a reset buffer is used
    ref.m[0][...] = 0
    del opt.state[2]["v"]                               # a missing one starts again from zeros
    ref.v[2][...] = 0
    _train(rng, params, opt, ref)
    opt.state[1]["v"] = np.zeros(4, np.float32)
    params[1].grad = randn(rng, 5)
    kind, message = _same_error_as_ops(opt, params, 1)
    assert kind is ValueError and "v: expected shape (5,) like param, got (4,)" in message


def test_step_counts_set_between_steps_are_used(rng, short):
    params, opt, ref = short
    for state in opt.state:
        state["step"] = 40
    ref.t = [40] * len(params)
    _train(rng, params, opt, ref)


def test_a_restored_checkpoint_is_continued_from(rng, short):
    params, opt, ref = short
    saved = opt.state_dict()
    saved_arrays = [p.numpy().copy() for p in params]
    saved_ref = ([a.copy() for a in ref.arrays], [m.copy() for m in ref.m], [v.copy() for v in ref.v], list(ref.t))
    _train(rng, params, opt, ref)
    for p, a in zip(params, saved_arrays):
        p.data[...] = a
    opt.load_state_dict(saved)
    ref.arrays, ref.m, ref.v, ref.t = saved_ref
    _train(rng, params, opt, ref)


def test_a_parameter_without_gradient_in_a_later_step_is_skipped(rng, short):
    params, opt, ref = short
    grads = [randn(rng, 3, 5), None, randn(rng, 1)]
    for i, (p, g) in enumerate(zip(params, grads)):
        p.grad = g
        if g is not None:
            ref.t[i] += 1
            ops.adam_update(ref.arrays[i], g.copy(), ref.m[i], ref.v[i], ref.t[i], ref.lr)
    opt.step()
    assert all(np.array_equal(p.numpy(), a) for p, a in zip(params, ref.arrays))
    _train(rng, params, opt, ref)   # then at different step counts


def test_a_parameter_list_changed_between_steps_is_followed(rng, short):
    params, opt, ref = short
    params[1] = opt.params[1] = Tensor(randn(rng, 5), requires_grad=True)   # its state (index 1) stays
    ref.arrays[1] = params[1].numpy().copy()
    _train(rng, params, opt, ref)


def test_another_backend_set_between_steps_is_used(rng, short, monkeypatch):
    params, opt, ref = short
    numpy_backend = backends.load("numpy")
    calls = []
    update = numpy_backend.adam_update

    def counted(*args):
        calls.append(args[0].shape)
        return update(*args)

    monkeypatch.setattr(numpy_backend, "adam_update", counted)
    dk.set_backend("numpy")
    try:
        _train(rng, params, opt, ref, steps=1)   # the reference's ops calls run there too
    finally:
        dk.set_backend(None)
    assert calls == [(3, 5), (5,), (1,)] * 2
    _train(rng, params, opt, ref)   # and back


def test_sgd_momentum_switched_on_between_steps(rng):
    params = [Tensor(randn(rng, 4, 3), requires_grad=True), Tensor(randn(rng, 3), requires_grad=True)]
    expected = [p.numpy().copy() for p in params]
    velocity = [np.zeros_like(e) for e in expected]
    opt = optim.SGD(params, lr=0.1)
    for t in range(4):
        if t == 2:
            opt.momentum = 0.9
        for i, p in enumerate(params):
            p.grad = randn(rng, *p.shape)
            if t < 2:
                ops.sgd_update(expected[i], p.grad.copy(), None, 0.1)
            else:
                ops.sgd_update(expected[i], p.grad.copy(), velocity[i], 0.1, 0.9)
        opt.step()
        assert all(np.array_equal(p.numpy(), e) for p, e in zip(params, expected))
