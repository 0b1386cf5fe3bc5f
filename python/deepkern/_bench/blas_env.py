"""An honest NumPy peer: OpenBLAS with the kernel it picks for this CPU.

``OPENBLAS_CORETYPE`` (and ``OPENBLAS_L2_SIZE``) force OpenBLAS onto a given kernel and cache
size; some environments set ``OPENBLAS_CORETYPE=Haswell`` as a guard for old builds, which
halves NumPy's matmul on an AVX-512 CPU. OpenBLAS reads them once, when NumPy is first
imported, so ``deepkern bench`` cannot drop them in its own process: it runs itself again
in a child process without them (this process only; tests and CI keep their environment).
"""
from __future__ import annotations

import os
import subprocess
import sys
from typing import Dict, List, Mapping, Optional

OVERRIDES = ("OPENBLAS_CORETYPE", "OPENBLAS_L2_SIZE")
CHILD_MARK = "DEEPKERN_BENCH_CLEAN_BLAS"   # set in the child: it never re-runs itself again


def overrides(env: Mapping[str, str]) -> Dict[str, str]:
    """The OpenBLAS kernel/cache overrides set in ``env``."""
    return {k: env[k] for k in OVERRIDES if k in env}


def clean_env(env: Mapping[str, str]) -> Dict[str, str]:
    """``env`` without the overrides, marked as the clean child's."""
    out = {k: v for k, v in env.items() if k not in OVERRIDES}
    out[CHILD_MARK] = ",".join(f"{k}={v}" for k, v in overrides(env).items())
    return out


def child_command(argv: List[str]) -> List[str]:
    return [sys.executable, "-m", "deepkern.cli", *argv]


def rerun_without_overrides(argv: List[str]) -> Optional[int]:
    """When an override is set, run ``deepkern <argv>`` in a child without it and return its
    exit status (its output is passed through line by line); else None: go on here."""
    if not overrides(os.environ) or CHILD_MARK in os.environ:
        return None
    names = ", ".join(overrides(os.environ))
    print(f"deepkern bench: running again without {names} (NumPy's OpenBLAS reads them at import)",
          flush=True)
    with subprocess.Popen(child_command(argv), env=clean_env(os.environ), stdout=subprocess.PIPE,
                          text=True) as child:
        assert child.stdout is not None
        for line in child.stdout:
            print(line, end="", flush=True)
    return child.returncode


def openblas_kernels() -> List[str]:
    """The kernel (``architecture``) of each OpenBLAS NumPy loaded, as threadpoolctl reports it."""
    try:
        from threadpoolctl import threadpool_info
    except ImportError:
        return []
    return sorted({str(d.get("architecture") or "unknown") for d in threadpool_info()
                   if d.get("internal_api") == "openblas"})


def header_items() -> Dict[str, str]:
    """The header lines about the NumPy peer's OpenBLAS: its kernel and the overrides."""
    items: Dict[str, str] = {}
    kernels = openblas_kernels()
    if kernels:
        items["numpy OpenBLAS kernel"] = ", ".join(kernels)
    dropped = os.environ.get(CHILD_MARK)
    still = overrides(os.environ)
    if still:
        items["OpenBLAS overrides"] = "still set: " + ", ".join(f"{k}={v}" for k, v in still.items())
    elif dropped:
        items["OpenBLAS overrides"] = f"dropped for this run ({dropped})"
    else:
        items["OpenBLAS overrides"] = "none"
    return items
