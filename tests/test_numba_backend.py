"""The Numba backend against the NumPy reference, every op and backward, awkward shapes.

Runs on any CPU where numba is installed (the whole op suite also runs under
DEEPKERN_BACKEND=numba in CI); the first run compiles and caches the kernels.
"""
from __future__ import annotations

import numpy as np
import pytest

from .backend_cases import (activation_cases, check_case, conv_cases, loss_cases, matmul_cases, optim_cases,
                           pool_cases)
from deepkern import backends

if not backends.available("numba"):
    pytest.skip(f"numba backend unavailable: {backends.reason_unavailable('numba')}", allow_module_level=True)


def _identity(a: np.ndarray) -> np.ndarray:
    return a


def _check_all(cases) -> None:
    for case in cases:
        check_case(case, "numba", _identity, np.asarray, rtol=1e-4, atol=1e-5)


def test_matmul(rng):
    _check_all(matmul_cases(rng, [(1, 1, 1), (7, 13, 5), (31, 67, 17)]))


def test_conv2d(rng):
    _check_all(conv_cases(rng, [
        ((2, 3, 9, 7), (5, 3, 3, 2), 1, 0),
        ((1, 2, 8, 11), (3, 2, 3, 3), (2, 3), (1, 2)),
        ((3, 1, 5, 5), (1, 1, 1, 1), 1, 0),
    ]))


def test_pooling(rng):
    _check_all(pool_cases(rng, [
        ((2, 3, 8, 6), 2, None, 0),
        ((1, 2, 7, 9), (3, 2), (1, 2), (1, 1)),
        ((2, 1, 5, 5), 3, 2, 1),
    ]))


def test_activations(rng):
    _check_all(activation_cases(rng, [((1,), 0), ((7, 13), 1), ((3, 5, 7), 0), ((3, 5, 7), 1), ((2, 301), -1)]))


def test_cross_entropy(rng):
    _check_all(loss_cases(rng, [(1, 1), (7, 10), (13, 3)]))


def test_optimizers(rng):
    _check_all(optim_cases(rng, [(1,), (7, 13)]))


def test_forced_numba_is_the_backend_that_runs():
    backends.set_backend("numba")
    assert backends.get_backend("cpu") == "numba"
