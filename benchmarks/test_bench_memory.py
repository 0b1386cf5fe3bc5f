"""Memory-bound kernels (GB/s of the fewest bytes moved): pooling, relu, the softmax family,
cross-entropy and the Adam update."""
from __future__ import annotations

import pytest

from deepkern import bench

from .conftest import PROFILE, run_case

CASES = [c for c in bench.kernel_cases(PROFILE) if c.unit == "GB/s"]


@pytest.mark.parametrize("impl", bench.IMPLS)
@pytest.mark.parametrize("case", CASES, ids=lambda c: c.key.replace(" ", "_"))
def test_memory(benchmark, built_case, case, impl):
    run_case(benchmark, built_case, case, impl)
