"""``deepkern bench``: run the benchmark as the command line asked and turn its errors into exit codes."""
from __future__ import annotations

import argparse
import sys

from .._bench import BenchError, MismatchError
from .._bench import run as run_bench
from .._bench.blas_env import rerun_without_overrides


def run(args: argparse.Namespace) -> int:
    """Run, turning BenchError/MismatchError into a message and exit status 2/1."""
    argv = getattr(args, "argv", None)   # NumPy's OpenBLAS must run with its own kernel choice
    status = None if argv is None else rerun_without_overrides(argv)
    if status is not None:
        return status
    try:
        return run_bench(args)
    except BenchError as exc:
        print(f"deepkern bench: error: {exc}", file=sys.stderr)
        return 2
    except MismatchError as exc:
        print(f"deepkern bench: results disagree: {exc}", file=sys.stderr)
        return 1
