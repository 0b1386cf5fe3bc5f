"""A hypothesis fuzzer over every function of ``deepkern._cpu`` (issue P7).

Each function gets generated arguments: shapes with zero sizes and huge dimensions (held by
zero-size arrays, so they cost no memory), wrong dtypes, non-contiguous, misaligned, read-only
and overlapping buffers, NaN/inf contents, kernel/stride/padding/axis/step values up to and past
2**31 and 2**63, and bad scalars. A call may return or raise TypeError/ValueError/MemoryError;
anything else is a finding, and so is a result that differs from the NumPy reference (checked
whenever the inputs are well formed and small).

The functions run in a child process, one after another, each case written to a log before it
runs: a crash (signal) or a hang (timeout) of the child is a finding naming the case, and the
parent restarts the child at the next function.

    python -m tests.fuzz.fuzz_binding                        # fixed seed 0, 40 cases per function
    python -m tests.fuzz.fuzz_binding --examples 2000 --seed 7 --simd generic,avx2,avx512   # a long run
    python -m tests.fuzz.fuzz_binding --functions conv2d,max_pool2d_backward --examples 500

Exit status 0 when there was no finding.
"""
from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import tempfile
import time
from typing import Dict, List, Optional, Tuple

from .cases import FUNCTIONS

GEMM_FOR_SIMD = {"generic": "scalar", "avx2": "avx2", "avx512": "avx512"}


def run_child(functions: List[str], seed: int, examples: int, simd: Optional[str], timeout: float,
              log_path: str, extra: Tuple[str, ...] = ()) -> subprocess.CompletedProcess:
    """Runs the child on `functions`; returncode None when one case ran past `timeout` seconds
    (the log, written before each case, stopped growing): the child is killed, a hang."""
    env = dict(os.environ)
    if simd:
        env["DEEPKERN_SIMD"] = simd
        env["DEEPKERN_GEMM"] = GEMM_FOR_SIMD[simd]
    cmd = [sys.executable, "-m", "tests.fuzz.child", "--seed", str(seed), "--examples", str(examples),
           "--log", log_path, "--functions", ",".join(functions), *extra]
    root = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
    with tempfile.TemporaryFile("w+") as out, tempfile.TemporaryFile("w+") as err:
        proc = subprocess.Popen(cmd, env=env, cwd=root, stdout=out, stderr=err, text=True)
        returncode: Optional[int] = None
        while True:
            try:
                returncode = proc.wait(timeout=0.5)
                break
            except subprocess.TimeoutExpired:
                if time.time() - os.path.getmtime(log_path) > timeout:
                    proc.kill()
                    proc.wait()
                    break
        out.seek(0)
        err.seek(0)
        return subprocess.CompletedProcess(cmd, returncode, out.read(), err.read())


def last_case(log_path: str) -> str:
    try:
        with open(log_path, encoding="utf-8") as f:
            lines = f.read().splitlines()
    except OSError:
        return "(no log)"
    return lines[-1] if lines else "(no case started)"


def fuzz(functions: List[str], seed: int, examples: int, simd: Optional[str], timeout: float,
         extra: Tuple[str, ...] = (), counts: Optional[Dict[str, Dict[str, int]]] = None) -> List[Dict]:
    """Runs every function; returns the findings (function, kind, detail). With `counts` (and
    --count in `extra`) the children's outcome tallies are added to it, per function."""
    findings: List[Dict] = []
    pending = list(functions)
    with tempfile.TemporaryDirectory() as tmp:
        log_path = os.path.join(tmp, "cases.log")
        while pending:
            open(log_path, "w").close()
            proc = run_child(pending, seed, examples, simd, timeout, log_path, extra)
            done = [line.split(" ", 1)[1] for line in proc.stdout.splitlines() if line.startswith("DONE ")]
            for line in proc.stdout.splitlines():
                if line.startswith("COUNTS ") and counts is not None:
                    name, _, tally = line[len("COUNTS "):].partition(" ")
                    for outcome, k in json.loads(tally).items():
                        counts.setdefault(name, {})[outcome] = counts.get(name, {}).get(outcome, 0) + k
                if line.startswith("FINDING "):
                    name, _, detail = line[len("FINDING "):].partition(" ")
                    findings.append({"function": name, "kind": "wrong or unexpected error", "detail": detail})
            if proc.returncode == 0:
                break
            # the child stopped inside the function after the last one it finished
            current = pending[len(done)] if len(done) < len(pending) else None
            if current is None:
                findings.append({"function": "?", "kind": f"child exit {proc.returncode}",
                                 "detail": proc.stderr[-800:]})
                break
            if proc.returncode is None:
                kind = f"hang (no return within {timeout:.0f} s)"
            elif proc.returncode < 0:
                kind = f"crash (signal {-proc.returncode})"
            else:
                kind = f"child exit {proc.returncode}"
            if counts is not None:
                counts.setdefault(current, {})["hang" if proc.returncode is None else "crash"] = 1
            findings.append({"function": current, "kind": kind,
                             "detail": last_case(log_path) + " | " + proc.stderr[-600:].replace("\n", " ")})
            pending = pending[len(done) + 1:]
    return findings


def main(argv: Optional[List[str]] = None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--examples", type=int, default=40, help="cases per function")
    ap.add_argument("--simd", default="", help="comma-separated DEEPKERN_SIMD variants (default: the auto choice)")
    ap.add_argument("--functions", default="", help="comma-separated subset of: " + ", ".join(FUNCTIONS))
    ap.add_argument("--timeout", type=float, default=120.0, help="seconds one case may run before it is a hang")
    args = ap.parse_args(argv)
    functions = [f for f in args.functions.split(",") if f] or list(FUNCTIONS)
    unknown = sorted(set(functions) - set(FUNCTIONS))
    if unknown:
        ap.error(f"unknown functions: {', '.join(unknown)}")
    variants = [v for v in args.simd.split(",") if v] or [None]
    total = 0
    for simd in variants:
        start = time.perf_counter()
        findings = fuzz(functions, args.seed, args.examples, simd, args.timeout)
        total += len(findings)
        print(f"simd={simd or 'auto'}: {len(functions)} functions x {args.examples} cases, seed {args.seed}: "
              f"{len(findings)} findings ({time.perf_counter() - start:.0f} s)")
        for f in findings:
            print(f"  {f['function']}: {f['kind']}: {f['detail'][:1500]}")
    return 1 if total else 0


if __name__ == "__main__":
    sys.exit(main())
