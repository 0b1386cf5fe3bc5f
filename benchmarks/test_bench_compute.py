"""Compute-bound kernels (GFLOP/s): matmul, the seed linear layers, im2col GEMMs, conv2d."""
from __future__ import annotations

import pytest

from deepkern import bench

from .conftest import PROFILE, run_case

CASES = [c for c in bench.kernel_cases(PROFILE) if c.unit == "GFLOP/s"]


@pytest.mark.parametrize("impl", bench.IMPLS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.key.replace(" ", "_"))
def test_compute(benchmark, built_case, case, impl):
    run_case(benchmark, built_case, case, impl)
