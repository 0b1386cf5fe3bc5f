"""The binding fuzzer's fixed-seed short run (the long run: see fuzz_binding.py's docstring)."""
from __future__ import annotations

import pytest

from deepkern import backends

from .fuzz_binding import fuzz
from .cases import FUNCTIONS

pytestmark = pytest.mark.skipif(not backends.available("cpu"), reason="the C++ module is not built")


def test_fixed_seed_fuzz_run_has_no_findings():
    findings = fuzz(list(FUNCTIONS), seed=0, examples=20, simd=None, timeout=120)
    assert not findings, "\n".join(f"{f['function']}: {f['kind']}: {f['detail'][:600]}" for f in findings)
