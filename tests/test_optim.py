"""Optimizers against hand-written NumPy updates; validation; flat state_dict round trips; penalties."""
from __future__ import annotations

import io

import numpy as np
import pytest

import deepkern as dk
from deepkern import optim
from deepkern.autograd import Tensor

from .conftest import assert_close, randn


def _params(rng, shapes=((3, 5), (7,), (1,))):
    return [Tensor(randn(rng, *s), requires_grad=True) for s in shapes]


def _grads(rng, params):
    return [randn(rng, *p.shape) for p in params]


def _run(opt_factory, reference_step, rng, steps=3):
    """Run an optimizer and a float64 NumPy re-implementation side by side for a few steps."""
    params = _params(rng)
    expected = [p.numpy().astype(np.float64) for p in params]
    states = [dict() for _ in params]
    opt = opt_factory(params)
    for t in range(1, steps + 1):
        grads = _grads(rng, params)
        for p, g in zip(params, grads):
            p.grad = g
        opt.step()
        for i, g in enumerate(grads):
            expected[i] = reference_step(expected[i], g.astype(np.float64), states[i], t)
    for p, e in zip(params, expected):
        assert_close(p.numpy(), e.astype(np.float32), rtol=1e-5, atol=1e-6)
    return opt


@pytest.mark.parametrize("momentum,nesterov,wd", [(0.0, False, 0.0), (0.9, False, 0.0), (0.8, True, 0.01),
                                                  (0.0, False, 0.1)])
def test_sgd_matches_numpy(rng, cpu_backend, momentum, nesterov, wd):
    lr = 0.05

    def step(w, g, s, t):
        g = g + wd * w
        if momentum:
            s["v"] = momentum * s.get("v", 0) + g
            g = g + momentum * s["v"] if nesterov else s["v"]
        return w - lr * g

    _run(lambda p: optim.SGD(p, lr=lr, momentum=momentum, nesterov=nesterov, weight_decay=wd), step, rng)


@pytest.mark.parametrize("wd", [0.0, 0.02])
def test_adam_matches_numpy(rng, cpu_backend, wd):
    lr, b1, b2, eps = 0.01, 0.8, 0.95, 1e-6

    def step(w, g, s, t):
        g = g + wd * w
        s["m"] = b1 * s.get("m", 0) + (1 - b1) * g
        s["v"] = b2 * s.get("v", 0) + (1 - b2) * g * g
        m_hat = s["m"] / (1 - b1 ** t)
        v_hat = s["v"] / (1 - b2 ** t)
        return w - lr * m_hat / (np.sqrt(v_hat) + eps)

    opt = _run(lambda p: optim.Adam(p, lr=lr, betas=(b1, b2), eps=eps, weight_decay=wd), step, rng)
    assert opt.step_count == 3 and opt.betas == (b1, b2)


def test_rmsprop_matches_numpy(rng, cpu_backend):
    lr, alpha, eps, wd = 0.01, 0.9, 1e-7, 0.01

    def step(w, g, s, t):
        g = g + wd * w
        s["s"] = alpha * s.get("s", 0) + (1 - alpha) * g * g
        return w - lr * g / (np.sqrt(s["s"]) + eps)

    _run(lambda p: optim.RMSprop(p, lr=lr, alpha=alpha, eps=eps, weight_decay=wd), step, rng)


def test_step_skips_params_without_grad_and_zero_grad_clears(rng):
    a, b = _params(rng, ((2, 2), (3,)))
    before = b.numpy().copy()
    opt = optim.Adam([a, b], lr=0.1)
    a.grad = randn(rng, 2, 2)
    opt.step()
    assert np.array_equal(b.numpy(), before)
    assert opt.state[1] == {}
    opt.zero_grad()
    assert a.grad is None and b.grad is None


def test_non_contiguous_grad_is_accepted(rng):
    (p,) = _params(rng, ((3, 4),))
    p.grad = np.asfortranarray(randn(rng, 3, 4))
    expected = p.numpy() - 0.5 * p.grad
    optim.SGD([p], lr=0.5).step()
    assert_close(p.numpy(), expected, rtol=1e-6)


def test_hyperparameter_validation(rng):
    params = _params(rng)
    with pytest.raises(ValueError, match="lr"):
        optim.SGD(params, lr=-0.1)
    with pytest.raises(ValueError, match="lr"):
        optim.Adam(params, lr=float("nan"))
    with pytest.raises(ValueError, match="momentum"):
        optim.SGD(params, lr=0.1, momentum=-1)
    with pytest.raises(ValueError, match="nesterov"):
        optim.SGD(params, lr=0.1, nesterov=True)
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(params, betas=(0.9, 1.0))
    with pytest.raises(ValueError, match="betas"):
        optim.Adam(params, betas=0.9)
    with pytest.raises(ValueError, match="alpha"):
        optim.RMSprop(params, alpha=1.5)
    with pytest.raises(ValueError, match="eps"):
        optim.RMSprop(params, eps=-1e-8)
    with pytest.raises(ValueError, match="weight_decay"):
        optim.Adam(params, weight_decay=-1)
    with pytest.raises(TypeError, match="lr"):
        optim.SGD(params, lr="fast")
    with pytest.raises(ValueError, match="empty"):
        optim.SGD([], lr=0.1)
    with pytest.raises(ValueError, match="twice"):
        optim.SGD([params[0], params[0]], lr=0.1)
    with pytest.raises(ValueError, match="require grad"):
        optim.SGD([Tensor([1.0])], lr=0.1)
    opt = optim.SGD(params, lr=0.1)
    opt.lr = 0.01   # schedulers assign lr; it is validated too
    assert opt.lr == 0.01
    with pytest.raises(ValueError, match="lr"):
        opt.lr = -1


@pytest.mark.parametrize("factory", [lambda p: optim.SGD(p, lr=0.1, momentum=0.9, nesterov=True),
                                     lambda p: optim.Adam(p, lr=0.01, weight_decay=1e-3),
                                     lambda p: optim.RMSprop(p, lr=0.01)])
def test_state_dict_npz_round_trip_resumes_identically(rng, factory):
    params = _params(rng)
    opt = factory(params)
    for _ in range(2):
        for p in params:
            p.grad = randn(rng, *p.shape)
        opt.step()
    sd = opt.state_dict()
    assert all(isinstance(k, str) and isinstance(v, np.ndarray) for k, v in sd.items())
    assert sd["step"].shape == () and int(sd["step"]) == 2 and sd["lr"].shape == ()
    buf = io.BytesIO()
    np.savez(buf, **sd)
    buf.seek(0)
    loaded = dict(np.load(buf, allow_pickle=False))

    clones = [Tensor(p.numpy().copy(), requires_grad=True) for p in params]
    resumed = factory(clones)
    resumed.load_state_dict(loaded)
    assert resumed.step_count == 2 and resumed.hyper == opt.hyper
    for _ in range(2):
        grads = _grads(rng, params)
        for p, c, g in zip(params, clones, grads):
            p.grad, c.grad = g, g.copy()
        opt.step()
        resumed.step()
    for p, c in zip(params, clones):
        assert np.array_equal(p.numpy(), c.numpy())


def test_load_state_dict_refuses_mismatches(rng):
    params = _params(rng)
    opt = optim.Adam(params, lr=0.01)
    for p in params:
        p.grad = randn(rng, *p.shape)
    opt.step()
    sd = opt.state_dict()
    other = optim.Adam(_params(rng), lr=0.5)
    for broken, pattern in [
        ({k: v for k, v in sd.items() if k != "lr"}, "missing keys.*lr"),
        ({**sd, "bogus": np.zeros(1)}, "unexpected keys.*bogus"),
        ({**sd, "state.0.m": np.zeros((2, 2), np.float32)}, r"state.0.m: shape"),
        ({**sd, "state.9.m": np.zeros(1, np.float32)}, "out of range"),
        ({k: v for k, v in sd.items() if k != "state.1.v"}, r"state.1: missing buffers \['v'\]"),
        ({**sd, "lr": np.array(-1.0)}, "lr"),
    ]:
        with pytest.raises(ValueError, match=pattern):
            other.load_state_dict(broken)
        assert other.lr == 0.5 and other.step_count == 0, "a refused load must change nothing"


def test_penalties(rng):
    a, b = _params(rng, ((3, 2), (4,)))
    loss = optim.l1_penalty([a, b], 0.1) + optim.l2_penalty([a, b], 0.01)
    expected = 0.1 * (np.abs(a.numpy()).sum() + np.abs(b.numpy()).sum()) + \
        0.01 * ((a.numpy() ** 2).sum() + (b.numpy() ** 2).sum())
    assert loss.item() == pytest.approx(float(expected), rel=1e-5)
    loss.backward()
    for p in (a, b):
        assert_close(p.grad, 0.1 * np.sign(p.numpy()) + 0.02 * p.numpy(), rtol=1e-5, atol=1e-7)
    with pytest.raises(ValueError, match="lam"):
        optim.l2_penalty([a], -1.0)


def test_training_lowers_the_loss(rng, cpu_backend):
    dk.manual_seed(0)
    x = randn(rng, 64, 5)
    labels = (x[:, 0] + x[:, 1] > 0).astype(np.int64) + (x[:, 2] > 1).astype(np.int64)
    for make in (lambda p: optim.SGD(p, lr=0.1, momentum=0.9), lambda p: optim.Adam(p, lr=0.01),
                 lambda p: optim.RMSprop(p, lr=0.01)):
        model = dk.nn.Sequential(dk.nn.Linear(5, 16), dk.nn.ReLU(), dk.nn.Linear(16, 3))
        opt = make(model.parameters())
        loss_fn = dk.nn.CrossEntropyLoss()
        losses = []
        for _ in range(30):
            opt.zero_grad()
            loss = loss_fn(model(Tensor(x)), labels)
            loss.backward()
            opt.step()
            losses.append(loss.item())
        assert losses[-1] < 0.6 * losses[0], type(opt).__name__
