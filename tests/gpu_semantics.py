"""The NaN/-inf rule every backend follows, as op cases (shared by test_gpu.py and the CPU checks).

NaN propagates as in NumPy and PyTorch: relu(NaN) = NaN (also fused into matmul), a NaN anywhere in
a max-pool window is the window's maximum and takes the gradient (the first NaN). -inf logits give
exact zeros from softmax, -inf from log_softmax, and leave cross_entropy finite.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, Callable, List, Union

import numpy as np
from deepkern import backends

from .backend_cases import Case, _run


def _cases() -> List[Case]:
    rng = np.random.default_rng(13)

    def f32(*shape):
        return rng.standard_normal(shape).astype(np.float32)
    cases: List[Case] = []
    x = f32(1029)
    x[[0, 5, 700, 1028]] = np.nan
    cases += [("relu", (x,), {}), ("relu", (x[:7].copy(),), {})]
    a, b = f32(5, 8), f32(8, 6)
    a[2, 3] = np.nan
    cases.append(("matmul", (a, b), dict(bias=f32(6), activation="relu")))
    img = f32(1, 2, 6, 6)
    img[0, 0, 1, 1] = np.nan          # not the first element of its window
    img[0, 1, 4, 5] = img[0, 1, 5, 4] = np.nan
    for kernel, stride in ((2, 2), (3, 1)):
        cases.append(("max_pool2d", (img, kernel), dict(stride=stride)))
        oh = (6 - kernel) // stride + 1
        cases.append(("max_pool2d_backward", (f32(1, 2, oh, oh), img, kernel), dict(stride=stride)))
    for shape, axis, where in (((2, 2), 0, (0, slice(None))), ((1, 40), 1, (0, 0)), ((1, 2000), 1, (0, 0)),
                               ((1, 2001), 1, (0, slice(0, 600)))):
        z = f32(*shape)
        z[where] = -np.inf
        cases += [("softmax", (z,), dict(axis=axis)), ("log_softmax", (z,), dict(axis=axis))]
    z = f32(2, 40)
    z[0, 0] = np.nan
    cases.append(("softmax", (z,), dict(axis=1)))
    logits = f32(1, 40)
    logits[0, 0] = -np.inf
    labels = np.array([3], np.int64)
    cases += [("cross_entropy", (logits, labels), {}), ("cross_entropy_backward", (logits, labels), {})]
    return cases


NAN_INF_CASES = _cases()


def assert_same_nan(got, want, rtol: float = 1e-4, atol: float = 1e-5, what: str = "") -> None:
    """NaN and +-inf exactly where the reference has them, close elsewhere."""
    got, want = np.asarray(got, np.float64), np.asarray(want, np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} != {want.shape}"
    assert np.array_equal(np.isnan(got), np.isnan(want)), f"{what}: NaN at different places"
    inf = np.isinf(want)
    assert np.array_equal(got[inf], want[inf]) and not np.isinf(got[~inf]).any(), f"{what}: infinities differ"
    fin = np.isfinite(want)
    assert np.all(np.abs(got[fin] - want[fin]) <= atol + rtol * np.abs(want[fin])), f"{what}: values differ"


def compare_case(case: Case, backend: Union[str, ModuleType], to_device: Callable[[np.ndarray], Any],
                 to_host: Callable[[Any], np.ndarray]) -> None:
    """Run case on the NumPy reference and on backend (a name, or a module routed to directly)."""
    op, args, kwargs = case
    backends.set_backend("numpy")
    want = _run(op, args, kwargs, lambda v: v)
    backends.set_backend(None)
    routed = backends.for_array
    try:
        if isinstance(backend, str):
            backends.set_backend(backend)
        else:
            backends.for_array = lambda x: backend
        got = _run(op, args, kwargs, to_device)
    finally:
        backends.for_array = routed
        backends.set_backend(None)
    for g, w in zip(got, want):
        assert_same_nan(to_host(g), w, what=f"{op} {[getattr(v, 'shape', v) for v in args]} {kwargs}")
