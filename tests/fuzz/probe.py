"""The reliability probe (RELIABILITY.md): hostile inputs through ``deepkern._cpu`` and through
``deepkern.ops``, every outcome counted.

The cases are the binding fuzzer's (tests/fuzz/cases.py), run in child processes per SIMD
variant; each call either returns (and, when its inputs are well formed and small, is compared
with the NumPy reference), raises a clean TypeError/ValueError/MemoryError, raises something
else, returns a wrong result, crashes the process or hangs.

    python -m tests.fuzz.probe                          # seed 0, 60 cases per function and variant
    python -m tests.fuzz.probe --examples 200 --seed 3 --targets ops
    PYTHONPATH=/path/to/other/build/python python -m tests.fuzz.probe   # probe another build
"""
from __future__ import annotations

import argparse
import sys
import time
from typing import Dict, List, Optional

from .cases import FUNCTIONS
from .fuzz_binding import fuzz

OUTCOMES = ["returned", "returned (not compared)", "clean error", "unexpected exception", "silently wrong",
            "crash", "hang"]
KERNEL_FUNCTIONS = [f for f in FUNCTIONS if not f.startswith(("set_", "empty_", "host_", "simd_", "gemm_", "cpu_",
                                                                "num_"))]


def probe(target: str, seed: int, examples: int, variants: List[str], timeout: float):
    functions = list(FUNCTIONS) if target == "binding" else KERNEL_FUNCTIONS
    totals: Dict[str, int] = {o: 0 for o in OUTCOMES}
    findings = []
    for simd in variants:
        counts: Dict[str, Dict[str, int]] = {}
        findings += fuzz(functions, seed, examples, simd or None, timeout, ("--count", "--target", target), counts)
        for per_fn in counts.values():
            for outcome, k in per_fn.items():
                totals[outcome] = totals.get(outcome, 0) + k
    return totals, findings


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--examples", type=int, default=60, help="cases per function and SIMD variant")
    ap.add_argument("--simd", default="generic,avx2,avx512")
    ap.add_argument("--targets", default="binding,ops")
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one case may run before it is a hang")
    args = ap.parse_args(argv)
    variants = [v for v in args.simd.split(",") if v] or [""]
    print("| target | cases | returned, checked | returned, unchecked | clean errors | unexpected exceptions "
          "| silently wrong | crashes | hangs |")
    print("|---|---|---|---|---|---|---|---|---|")
    bad = 0
    all_findings = []
    for target in [t for t in args.targets.split(",") if t]:
        start = time.perf_counter()
        totals, findings = probe(target, args.seed, args.examples, variants, args.timeout)
        cases = sum(totals.values())
        bad += totals["unexpected exception"] + totals["silently wrong"] + totals["crash"] + totals["hang"]
        print(f"| {target} | {cases} | " + " | ".join(str(totals[o]) for o in OUTCOMES) + " |"
              f"  <!-- {time.perf_counter() - start:.0f} s -->")
        all_findings += [(target, f) for f in findings]
    for target, f in all_findings:
        print(f"- {target} {f['function']}: {f['kind']}: {f['detail'][:400]}")
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
