"""Op cases shared by the backend tests (numba on the CPU, cuda and cupy on a GPU).

Each case is (op name, positional args, keyword args) with fresh random float32 inputs on
awkward shapes (1, primes, sizes that do not divide the kernels' tiles). ``check_case`` runs
one through ``deepkern.ops`` on the NumPy reference and on the backend under test and
compares every output (or, for the in-place optimizer updates, every updated array).
"""
from __future__ import annotations

import itertools
from types import ModuleType
from typing import Any, Callable, Dict, List, Tuple, Union

import numpy as np

from .conftest import assert_close, randn
from deepkern import backends, ops

Case = Tuple[str, Tuple[Any, ...], Dict[str, Any]]


def matmul_cases(rng: np.random.Generator, sizes) -> List[Case]:
    cases: List[Case] = []
    for (m, k, n), (ta, tb) in itertools.product(sizes, itertools.product((False, True), repeat=2)):
        a = randn(rng, k, m) if ta else randn(rng, m, k)
        b = randn(rng, n, k) if tb else randn(rng, k, n)
        bias = randn(rng, n)
        cases.append(("matmul", (a, b), dict(trans_a=ta, trans_b=tb)))
        cases.append(("matmul", (a, b), dict(bias=bias, activation="relu", trans_a=ta, trans_b=tb)))
        out = ops.matmul(a, b, bias=bias, activation="relu", trans_a=ta, trans_b=tb)  # the mask both sides see
        g = randn(rng, m, n)
        cases.append(("matmul_backward", (g, a, b), dict(trans_a=ta, trans_b=tb, bias=True)))
        cases.append(("matmul_backward", (g, a, b), dict(out=out, activation="relu", trans_a=ta, trans_b=tb)))
        cases.append(("matmul_backward", (g, a, b), dict(out=out, activation="relu", trans_a=ta, trans_b=tb,
                                                         bias=True, a_grad=False)))
    return cases


def conv_cases(rng: np.random.Generator, geometries) -> List[Case]:
    """geometries: (x shape, w shape, stride, padding)."""
    cases: List[Case] = []
    for xs, ws, stride, padding in geometries:
        x, w, bias = randn(rng, *xs), randn(rng, *ws), randn(rng, ws[0])
        cases.append(("conv2d", (x, w), dict(bias=bias, stride=stride, padding=padding)))
        cases.append(("conv2d", (x, w), dict(stride=stride, padding=padding)))
        y = ops.conv2d(x, w, stride=stride, padding=padding)
        g = randn(rng, *y.shape)
        cases.append(("conv2d_backward", (g, x, w), dict(stride=stride, padding=padding, bias=True)))
    return cases


def pool_cases(rng: np.random.Generator, geometries) -> List[Case]:
    """geometries: (x shape, kernel, stride, padding); ties are exercised with small integers."""
    cases: List[Case] = []
    for xs, kernel, stride, padding in geometries:
        for x in (randn(rng, *xs), rng.integers(-2, 3, size=xs).astype(np.float32)):
            for op in ("max_pool2d", "avg_pool2d"):
                kw = dict(stride=stride, padding=padding)
                cases.append((op, (x, kernel), kw))
                y = getattr(ops, op)(x, kernel, **kw)
                cases.append((op + "_backward", (randn(rng, *y.shape), x, kernel), kw))
    return cases


def activation_cases(rng: np.random.Generator, shapes_axes) -> List[Case]:
    cases: List[Case] = []
    for shape, axis in shapes_axes:
        x, g = randn(rng, *shape) * 3, randn(rng, *shape)
        cases.append(("relu", (x,), {}))
        cases.append(("relu_backward", (g, x), {}))
        for op in ("softmax", "log_softmax"):
            cases.append((op, (x,), dict(axis=axis)))
            y = getattr(ops, op)(x, axis=axis)
            cases.append((op + "_backward", (g, y), dict(axis=axis)))
    return cases


def loss_cases(rng: np.random.Generator, shapes) -> List[Case]:
    cases: List[Case] = []
    for n, c in shapes:
        logits = randn(rng, n, c) * 2
        for dtype in (np.int64, np.int32):
            labels = rng.integers(0, c, size=n).astype(dtype)
            cases.append(("cross_entropy", (logits, labels), {}))
            cases.append(("cross_entropy_backward", (logits, labels), dict(grad=0.5)))
    return cases


def optim_cases(rng: np.random.Generator, shapes) -> List[Case]:
    cases: List[Case] = []
    for shape in shapes:
        p, g = randn(rng, *shape), randn(rng, *shape)
        state = lambda: np.abs(randn(rng, *shape)) * 0.1  # noqa: E731
        cases.append(("sgd_update", (p, g, None), dict(lr=0.1, weight_decay=0.01)))
        cases.append(("sgd_update", (p, g, state()), dict(lr=0.1, momentum=0.9, weight_decay=0.01,
                                                           nesterov=True)))
        cases.append(("adam_update", (p, g, state(), state(), 3), dict(lr=0.01, weight_decay=0.01)))
        cases.append(("adam_update", (p, g, state(), state(), 1), dict(lr=0.001)))
        cases.append(("rmsprop_update", (p, g, state()), dict(lr=0.01, alpha=0.9, weight_decay=0.01)))
    return cases


def _is_array(v: Any) -> bool:
    return isinstance(v, np.ndarray)


def _run(op: str, args, kwargs, convert: Callable[[np.ndarray], Any]):
    args = tuple(convert(a.copy()) if _is_array(a) else a for a in args)
    kwargs = {k: (convert(v.copy()) if _is_array(v) else v) for k, v in kwargs.items()}
    result = getattr(ops, op)(*args, **kwargs)
    if op.endswith("_update"):  # in place: the updated arrays are the result
        return tuple(a for a in args if not isinstance(a, (int, float)) and a is not None)
    return result if isinstance(result, tuple) else (result,)


def check_case(case: Case, backend: Union[str, ModuleType], to_device: Callable[[np.ndarray], Any],
               to_host: Callable[[Any], np.ndarray], rtol: float, atol: float) -> None:
    """Run ``case`` on the reference and on ``backend`` and compare all outputs.

    ``backend`` is a registered backend name (forced for the run), or a backend module that
    ``deepkern.ops`` is routed to directly (to check the GPU fallback's code on NumPy arrays).
    """
    op, args, kwargs = case
    backends.set_backend("numpy")
    expected = _run(op, args, kwargs, lambda a: a)
    backends.set_backend(None)
    if isinstance(backend, str):
        backends.set_backend(backend)
        actual = _run(op, args, kwargs, to_device)
    else:
        routed = backends.for_array
        backends.for_array = lambda x: backend
        try:
            actual = _run(op, args, kwargs, to_device)
        finally:
            backends.for_array = routed
        backend = backend.__name__
    assert len(actual) == len(expected)
    for i, (got, want) in enumerate(zip(actual, expected)):
        what = f"{backend} {op} output {i} ({', '.join(f'{k}={v!r}' for k, v in kwargs.items() if not _is_array(v))})"
        if want is None:
            assert got is None, what
            continue
        got = to_host(got)
        assert isinstance(got, np.ndarray) and got.flags.c_contiguous, what
        assert_close(got, want, rtol=rtol, atol=atol, what=what)
