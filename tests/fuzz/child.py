"""The fuzzer's child process: runs the generated cases of each named function (see fuzz_binding.py).

Prints ``DONE <function>`` after each function and ``FINDING <function> <detail>`` for a wrong
result or an unexpected exception (after hypothesis has shrunk it); a crash kills the process,
and the parent reads the case it died on from the log.
"""
from __future__ import annotations

import argparse
import collections
import json
import os
import resource
import sys
import warnings
from typing import Any, List

import numpy as np
from hypothesis import HealthCheck, given, seed, settings

from deepkern import _cpu
from deepkern.backends import numpy as ref

from .cases import FUNCTIONS, Case

CLEAN_ERRORS = (TypeError, ValueError, MemoryError)
REFERENCE_MAX_WORK = 2_000_000  # elements the reference may touch (it loops in Python/NumPy)


def _limit_memory() -> None:
    # Outputs past the limit fail as MemoryError instead of filling the machine (ASan builds
    # cap allocations with ASAN_OPTIONS=max_allocation_size_mb instead: ASan reserves terabytes).
    if "asan" in os.environ.get("LD_PRELOAD", ""):
        return
    limit = 6 << 30
    resource.setrlimit(resource.RLIMIT_AS, (limit, limit))


def _small(case: Case) -> bool:
    total = sum(a.size for a in case.args if isinstance(a, np.ndarray))
    return 0 < total and all(a.size > 0 for a in case.args if isinstance(a, np.ndarray)) and total < REFERENCE_MAX_WORK


def _same(got: Any, want: Any, what: str) -> None:
    if got is None or want is None:
        assert got is None and want is None, f"{what}: {got!r} vs {want!r}"
        return
    got, want = np.asarray(got, dtype=np.float64), np.asarray(want, dtype=np.float64)
    assert got.shape == want.shape, f"{what}: shape {got.shape} vs {want.shape}"
    assert (np.isnan(got) == np.isnan(want)).all(), f"{what}: NaN positions differ"
    for sign in (1, -1):
        assert ((got == sign * np.inf) == (want == sign * np.inf)).all(), f"{what}: {sign:+d}inf positions differ"
    fin = np.isfinite(want) & np.isfinite(got)
    if fin.any():
        scale = max(1.0, float(np.abs(want[fin]).max()))
        err = float(np.abs(got[fin] - want[fin]).max())
        assert err <= 2e-3 * scale, f"{what}: max error {err:.3g} (scale {scale:.3g})"


def _compare(name: str, case: Case, before: List[Any], result: Any) -> None:
    """The call succeeded on well-formed inputs (`before`: copies taken before it ran): the
    NumPy reference must agree."""
    if not case.comparable or not _small(case) or not hasattr(ref, name):
        return
    args = before
    with warnings.catch_warnings(), np.errstate(all="ignore"):
        warnings.simplefilter("ignore")
        try:
            want = getattr(ref, name)(*args)
        except (ValueError, TypeError, IndexError, ZeroDivisionError, MemoryError):
            return  # the reference does not define this case (e.g. an empty window)
    if case.inplace:
        for i in case.inplace:
            if isinstance(args[i], np.ndarray):
                _same(case.args[i], args[i], f"{name} arg {i}")
        return
    if isinstance(result, tuple):
        for i, (g, w) in enumerate(zip(result, want)):
            _same(g, w, f"{name} output {i}")
    else:
        _same(result, want, name)


def ops_call(name: str) -> Any:
    """dk.ops.<name> taking the binding's positional arguments (the probe's second target)."""
    from deepkern import ops
    if name == "matmul":
        return lambda a, b, bias, relu, ta, tb: ops.matmul(a, b, bias, "relu" if relu is True else relu, ta, tb)
    if name == "matmul_backward":
        return lambda g, a, b, out, ta, tb, want_bias: ops.matmul_backward(
            g, a, b, out, None if out is None else "relu", ta, tb, want_bias)
    return getattr(ops, name, None)


def run_function(name: str, seed_value: int, examples: int, log, target: str = "binding",
                 counts: "collections.Counter | None" = None) -> List[str]:
    """Runs the cases of one function. Finding mode (counts None) stops at the first wrong
    result and lets hypothesis shrink it; counting mode (the probe) tallies every outcome."""
    findings: List[str] = []
    fn = getattr(_cpu, name) if target == "binding" else ops_call(name)
    if fn is None:
        return findings
    simd0, gemm0, cache0 = _cpu.simd_variant(), _cpu.gemm_variant(), _cpu.host_cache_info()["limit_bytes"]

    @seed(seed_value)
    @settings(max_examples=examples, deadline=None, database=None, derandomize=False,
              suppress_health_check=list(HealthCheck), print_blob=False)
    @given(FUNCTIONS[name]())
    def check(case: Case) -> None:
        log.write(f"{name}{case.describe()}\n")
        log.flush()
        before = [a.copy() if isinstance(a, np.ndarray) else a for a in case.args]  # in-place updates
        try:
            result = fn(*case.args)
        except CLEAN_ERRORS:
            if counts is not None:
                counts["clean error"] += 1
            return
        except Exception as e:
            if counts is not None:
                counts["unexpected exception"] += 1
                findings.append(f"{name}{case.describe()}: unexpected {type(e).__name__}: {e}")
                return
            raise AssertionError(f"{name}{case.describe()}: unexpected {type(e).__name__}: {e}") from e
        finally:  # the admin functions change process-wide settings: put them back
            if name.startswith("set_"):
                _cpu.set_simd_variant(simd0)
                _cpu.set_gemm_variant(gemm0)
                _cpu.set_host_cache_limit(cache0)
        try:
            _compare(name, case, before, result)
        except AssertionError as e:
            if counts is None:
                raise AssertionError(f"{name}{case.describe()}: {e}") from e
            counts["silently wrong"] += 1
            findings.append(f"{name}{case.describe()}: {e}")
            return
        if counts is not None:
            counts["returned" if case.comparable and _small(case) else "returned (not compared)"] += 1

    try:
        check()
    except Exception as e:  # hypothesis re-raises the shrunk failure(s)
        for one in getattr(e, "exceptions", [e]):
            findings.append(f"{type(one).__name__}: {str(one)[:800]}".replace("\n", " "))
    return findings


def main() -> int:
    ap = argparse.ArgumentParser()
    ap.add_argument("--seed", type=int, required=True)
    ap.add_argument("--examples", type=int, required=True)
    ap.add_argument("--log", required=True)
    ap.add_argument("--functions", required=True)
    ap.add_argument("--target", choices=("binding", "ops"), default="binding")
    ap.add_argument("--count", action="store_true", help="tally every outcome (COUNTS lines) instead of shrinking")
    args = ap.parse_args()
    _limit_memory()
    with open(args.log, "a", encoding="utf-8") as log:
        for name in args.functions.split(","):
            counts = collections.Counter() if args.count else None
            for finding in run_function(name, args.seed, args.examples, log, args.target, counts):
                print(f"FINDING {name} {finding}", flush=True)
            if counts is not None:
                print(f"COUNTS {name} {json.dumps(counts)}", flush=True)
            print(f"DONE {name}", flush=True)
    return 0  # findings go to stdout; a non-zero status means the process died


if __name__ == "__main__":
    sys.exit(main())
