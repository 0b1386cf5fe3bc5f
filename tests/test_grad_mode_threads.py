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
