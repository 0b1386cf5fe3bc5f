"""Shared set-up for the pytest-benchmark suites (run: pytest benchmarks/ --benchmark-only).

The cases are deepkern.bench's (the same rows as ``deepkern bench``): each builds its
inputs once, deepkern's result is checked against every peer's before anything is timed,
and each (op, shape) is one benchmark group with a deepkern, numpy and torch member.
DEEPKERN_BENCH_PROFILE=quick|full (default full) picks the shapes, DEEPKERN_BENCH_THREADS
the thread count for deepkern, NumPy's BLAS and PyTorch (default: all cores).
Run them through ``benchmarks/run.sh``: it drops OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE, which
OpenBLAS reads when NumPy is imported (too late to drop here); the header names the kernel that ran.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict

import warnings

import pytest

from deepkern import backends, bench
from deepkern._bench import blas_env

PROFILE = os.environ.get("DEEPKERN_BENCH_PROFILE", "full")
THREADS = int(os.environ.get("DEEPKERN_BENCH_THREADS", os.cpu_count() or 1))


def _torch() -> Any:
    try:
        import torch
    except ImportError:
        return None
    return torch


def _override_warning() -> str:
    """'' or why the NumPy peer is not OpenBLAS's own kernel choice (too late to fix here:
    NumPy, and its OpenBLAS, is already loaded)."""
    still = blas_env.overrides(os.environ)
    return (f"WARNING: {', '.join(still)} set: the NumPy peer runs a forced OpenBLAS kernel; "
            "use benchmarks/run.sh") if still else ""


def pytest_report_header(config) -> list:
    """Which OpenBLAS kernel the NumPy peer runs, and whether an override forced it."""
    lines = ["NumPy peer: " + "; ".join(f"{k}: {v}" for k, v in blas_env.header_items().items())]
    return lines + [w for w in (_override_warning(),) if w]


@pytest.fixture(scope="session")
def torch_module() -> Any:
    """PyTorch when installed, else None (its members of each group are skipped)."""
    return _torch()


@pytest.fixture(scope="session", autouse=True)
def _same_threads(torch_module):
    if not backends.available("cpu"):
        pytest.skip("the C++ CPU backend is not built")
    backends.load("cpu")   # register its thread pool with threadpoolctl before the limit is applied
    if _override_warning():
        warnings.warn(_override_warning(), stacklevel=1)
    with bench.thread_limit(THREADS, torch_module):
        yield


@pytest.fixture(scope="session")
def built_case(torch_module) -> Callable[[bench.Case], Dict[str, Callable[[], Any]]]:
    """Build a case once per session and check that every implementation agrees."""
    cache: Dict[str, Dict[str, Callable[[], Any]]] = {}
    device = bench.Device("cpu")

    def get(case: bench.Case) -> Dict[str, Callable[[], Any]]:
        if case.key not in cache:
            impls = case.build(device, torch_module)
            results = {name: fn() for name, fn in impls.items()}
            for name, result in results.items():
                if name != "deepkern":
                    bench.check_agree(case.key, name, results["deepkern"], result, case.rtol, case.atol_scale)
            cache.clear()   # keep one case's inputs alive at a time (parametrisation is case-major)
            cache[case.key] = impls
        return cache[case.key]
    return get


def run_case(benchmark, built_case, case: bench.Case, impl: str) -> None:
    """Time one implementation of one case as a member of the case's group."""
    impls = built_case(case)
    if impl not in impls:
        pytest.skip(f"{impl} is not installed")
    benchmark.group = case.key
    benchmark.extra_info.update(op=case.op, shape=case.shape, unit=case.unit, work=case.work,
                                threads=THREADS)
    benchmark(impls[impl])
