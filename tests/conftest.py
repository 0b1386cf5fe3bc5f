"""Shared fixtures: random inputs, backend parametrisation, tolerances."""
from __future__ import annotations

import contextlib
import os
import zlib

import numpy as np
import pytest

from deepkern import backends

# DEEPKERN_BACKEND=numba (say) runs the op suite on that backend alone; otherwise every
# built fast CPU backend is compared with the NumPy reference.
_FORCED = os.environ.get("DEEPKERN_BACKEND", "").strip().lower()
if _FORCED and _FORCED in backends.CPU_BACKENDS:
    CPU_BACKENDS_UNDER_TEST = [_FORCED]
else:
    CPU_BACKENDS_UNDER_TEST = [name for name in ("cpu", "numba") if backends.available(name)]


def gpu_available() -> bool:
    """True when a CUDA GPU is usable through the cuda or cupy backend."""
    for name in ("cuda", "cupy"):
        if backends.available(name):
            return True
    return False


def require_gpu_backend(name: str) -> None:
    """In the GPU tests: skip nothing silently. A GPU machine where the cuda backend cannot run
    (deepkern._cuda not built, no kernel image for this GPU) fails the test, since the CUDA kernels
    would otherwise go untested in a passing run; DEEPKERN_GPU_CUPY_ONLY=1 says that is intended
    (a CuPy-only install) and skips instead. Any other unavailable backend fails too."""
    reason = backends.reason_unavailable(name)
    if reason is None:
        return
    if name == "cuda" and os.environ.get("DEEPKERN_GPU_CUPY_ONLY") == "1":
        pytest.skip(f"cuda backend not tested (DEEPKERN_GPU_CUPY_ONLY=1): {reason}")
    pytest.fail(f"the {name} backend is not usable on this GPU machine: {reason} "
                f"(set DEEPKERN_GPU_CUPY_ONLY=1 if deepkern._cuda is meant to be absent)")


@pytest.fixture
def rng(request) -> np.random.Generator:
    # fresh random inputs per test, reproducible from the test's name
    seed = zlib.crc32(request.node.nodeid.encode())
    return np.random.default_rng(seed)


def write_idx(path, array: np.ndarray) -> None:
    """Write ``array`` (uint8) as an IDX file: magic 0x0000 08 <ndim>, big-endian dims, the bytes."""
    header = bytes([0, 0, 8, array.ndim]) + b"".join(int(d).to_bytes(4, "big") for d in array.shape)
    with open(path, "wb") as f:
        f.write(header + np.ascontiguousarray(array, np.uint8).tobytes())


@contextlib.contextmanager
def simd_variant(variant: str):
    """Forces the C++ module's SIMD variant for the block (skips the test where the CPU lacks it)."""
    from deepkern import _cpu
    try:
        _cpu.set_simd_variant(variant)
    except ValueError:
        pytest.skip(f"this CPU has no {variant}")
    try:
        yield
    finally:
        _cpu.set_simd_variant("auto")


@contextlib.contextmanager
def num_threads(n: int):
    """The kernels run on n threads for the block, then on as many as before."""
    import deepkern as dk
    before = dk.get_num_threads()
    dk.set_num_threads(n)
    try:
        yield
    finally:
        dk.set_num_threads(before)


def randn(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def assert_close(actual, expected, rtol: float = 1e-4, atol: float = 1e-5, what: str = "") -> None:
    """|actual - expected| <= atol + rtol * |expected| everywhere (the DESIGN's rule)."""
    actual = np.asarray(actual)
    expected = np.asarray(expected)
    assert actual.shape == expected.shape, f"{what}: shape {actual.shape} != {expected.shape}"
    assert actual.dtype == expected.dtype, f"{what}: dtype {actual.dtype} != {expected.dtype}"
    err = np.abs(actual.astype(np.float64) - expected.astype(np.float64))
    bound = atol + rtol * np.abs(expected.astype(np.float64))
    worst = np.argmax(err - bound) if err.size else 0
    assert np.all(err <= bound), (
        f"{what}: max excess {float((err - bound).flat[worst]):.3g} at {np.unravel_index(worst, err.shape)}: "
        f"{actual.flat[worst]!r} vs {expected.flat[worst]!r}")


@pytest.fixture(params=CPU_BACKENDS_UNDER_TEST or ["numpy"])
def cpu_backend(request):
    """Each built CPU backend (cpu, numba), forced for the test, restored after."""
    backends.set_backend(request.param)
    yield request.param
    backends.set_backend(None)


@pytest.fixture(autouse=True)
def _restore_backend():
    yield
    backends.set_backend(None)
    # a DEEPKERN_BACKEND from the environment stays in force across tests
    backends._apply_environment()


def pytest_collection_modifyitems(config, items):
    """The CUDA emulation tests (marker emul) run when selected with ``-k emul`` or DEEPKERN_EMUL=1.

    They compile the .cu kernels for the CPU and run thousands of OS threads: CI runs them in
    their own job (.ci/cuda_emu.sh) rather than in every plain ``pytest``.
    """
    if os.environ.get("DEEPKERN_EMUL") == "1" or "emul" in (config.getoption("keyword") or ""):
        return
    skip = pytest.mark.skip(reason="CUDA emulation suite: run with pytest -k emul (CI: .ci/cuda_emu.sh)")
    for item in items:
        if "emul" in item.keywords:
            item.add_marker(skip)
