"""Grad mode is per thread (PyTorch's rule): no_grad in one thread never changes another's."""
from __future__ import annotations

import threading

import numpy as np

import deepkern as dk


def test_new_threads_start_with_grad_enabled_and_no_grad_stays_in_its_thread():
    seen = {}
    with dk.no_grad():
        def probe() -> None:
            seen["worker"] = dk.is_grad_enabled()
        t = threading.Thread(target=probe)
        t.start()
        t.join()
        assert not dk.is_grad_enabled()
    assert seen["worker"] is True
    assert dk.is_grad_enabled()


def test_one_decorated_function_entered_from_two_threads_restores_each():
    inside = threading.Barrier(2)
    results = []

    @dk.no_grad()
    def work() -> None:
        inside.wait()               # both threads are inside the same _GradMode object at once
        results.append(dk.is_grad_enabled())
        inside.wait()

    threads = [threading.Thread(target=work) for _ in range(2)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert results == [False, False]
    assert dk.is_grad_enabled()


def test_predict_threads_under_no_grad_never_break_training(rng):
    """8 threads call predict (under no_grad) while the main thread trains: every step records
    its graph and gets gradients (before grad mode was per thread, most steps failed)."""
    dk.manual_seed(0)
    model = dk.models.MLP(16, (32,), 4)
    x = rng.standard_normal((64, 16)).astype(np.float32)
    y = rng.integers(0, 4, 64)
    opt = dk.optim.SGD(model.parameters(), lr=0.01)
    stop = threading.Event()
    errors = []

    def predictor() -> None:
        try:
            while not stop.is_set():
                with dk.no_grad():
                    out = dk.train.predict(model, x[:8])
                assert out.shape == (8, 4)
        except Exception as exc:  # pragma: no cover - reported below
            errors.append(exc)

    threads = [threading.Thread(target=predictor, daemon=True) for _ in range(8)]
    for t in threads:
        t.start()
    failures = 0
    try:
        for _ in range(200):
            opt.zero_grad()
            loss = dk.nn.functional.cross_entropy(model(dk.Tensor(x)), y)
            if not loss.requires_grad:
                failures += 1
                continue
            loss.backward()
            if any(p.grad is None for p in model.parameters()):
                failures += 1
            opt.step()
    finally:
        stop.set()
        for t in threads:
            t.join(timeout=30)
    assert failures == 0
    assert not errors
    assert dk.is_grad_enabled()


def test_eval_mode_stays_in_its_thread():
    model = dk.nn.Sequential(dk.nn.Linear(4, 4), dk.nn.Dropout(0.5))
    inside, release, seen = threading.Event(), threading.Event(), {}

    def evaluator() -> None:
        with dk.nn.eval_mode():
            seen["worker"] = (model.training, model[1].training)
            inside.set()
            release.wait(30)
        seen["worker after"] = model.training

    t = threading.Thread(target=evaluator)
    t.start()
    assert inside.wait(30)
    seen["main"] = (model.training, model[1].training)   # while the other thread is inside
    release.set()
    t.join(30)
    assert seen == {"worker": (False, False), "main": (True, True), "worker after": True}


def test_predict_beside_training_leaves_dropout_on_in_the_training_thread():
    """predict used to call model.eval(), which is process-wide: while another thread predicted,
    the training thread's Dropout stopped dropping. Here the predicting thread is held inside its
    forward while the main thread runs a training forward."""
    entered, release = threading.Event(), threading.Event()
    main = threading.current_thread()

    class _Hold(dk.nn.Module):
        def forward(self, x):
            if threading.current_thread() is not main:
                entered.set()
                release.wait(30)
            return x

    model = dk.nn.Sequential(dk.nn.Dropout(0.5), _Hold())
    x = np.ones((8, 256), np.float32)
    result = {}
    t = threading.Thread(target=lambda: result.update(out=dk.train.predict(model, x)))
    t.start()
    try:
        assert entered.wait(30)
        dropped = float(np.mean(np.asarray(model(dk.Tensor(x)).data) == 0))
    finally:
        release.set()
        t.join(30)
    assert dropped > 0.3, "the training forward ran with Dropout switched off by the other thread"
    assert np.array_equal(result["out"], x)   # and the predicting thread saw eval behaviour


def test_predict_keeps_each_submodules_own_mode(rng):
    model = dk.nn.Sequential(dk.nn.Linear(4, 4), dk.nn.Dropout(0.5), dk.nn.BatchNorm1d(4))
    model[2].eval()   # frozen statistics, chosen by the user
    dk.train.predict(model, rng.standard_normal((3, 4)).astype(np.float32))
    dk.train.evaluate(model, rng.standard_normal((3, 4)).astype(np.float32), np.array([0, 1, 2]))
    assert [m.training for m in model] == [True, True, False]
