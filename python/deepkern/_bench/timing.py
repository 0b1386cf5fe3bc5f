"""Checking that peers agree, timing calls, the machine's description and thread limits."""
from __future__ import annotations

import concurrent.futures
import contextlib
import datetime
import os
import platform
import statistics
import time
from dataclasses import dataclass
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence

import numpy as np

from . import blas_env
from .cases import Case, Device, MismatchError, _to_host
from .report import format_row
from .results import Row, Timing


# ---------------------------------------------------------------------------- checking and timing
def check_agree(case_key: str, impl: str, ours: Any, peer: Any, rtol: float = 2e-3,
                atol_scale: float = 1e-5) -> None:
    """Raise MismatchError unless every array of ``peer`` matches ``ours``:
    |peer - ours| <= atol_scale * max|ours| + rtol * |ours|, elementwise."""
    ours_t = ours if isinstance(ours, (tuple, list)) else (ours,)
    peer_t = peer if isinstance(peer, (tuple, list)) else (peer,)
    if len(ours_t) != len(peer_t):
        raise MismatchError(f"{case_key}: {impl} returned {len(peer_t)} arrays, deepkern {len(ours_t)}")
    for i, (a, b) in enumerate(zip(ours_t, peer_t)):
        a64, b64 = _to_host(a).astype(np.float64), _to_host(b).astype(np.float64)
        if a64.shape != b64.shape:
            raise MismatchError(f"{case_key}: {impl} result {i} has shape {b64.shape}, deepkern {a64.shape}")
        if not np.all(np.isfinite(a64)):
            raise MismatchError(f"{case_key}: deepkern result {i} is not finite")
        scale = float(np.max(np.abs(a64))) if a64.size else 0.0
        err = np.abs(a64 - b64)
        bound = atol_scale * max(scale, 1e-30) + rtol * np.abs(a64)
        if not np.all(err <= bound):
            worst = int(np.argmax(err - bound))
            raise MismatchError(f"{case_key}: {impl} result {i} disagrees with deepkern: "
                                f"{b64.flat[worst]!r} vs {a64.flat[worst]!r} (max |diff| {float(err.max()):.3g})")


def time_call(fn: Callable[[], Any], sync: Callable[[], None], target_s: float, min_repeats: int,
              max_repeats: int, min_sample_s: float = 2e-3) -> Timing:
    """Warm up, pick the calls per sample so one sample lasts >= min_sample_s (tiny ops),
    then take as many samples as fit in target_s (at least min_repeats): the median per call."""
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    single = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_sample_s / single)) if min_sample_s > 0 else 1
    repeats = int(min(max_repeats, max(min_repeats, target_s / (single * inner))))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / inner)
    return Timing(statistics.median(samples), min(samples), repeats, inner)


@dataclass
class Settings:
    profile: str = "full"
    target_s: float = 0.6           # timing budget per implementation and case
    min_repeats: int = 5
    max_repeats: int = 50
    stat: str = "median"

    @classmethod
    def for_profile(cls, profile: str) -> "Settings":
        if profile == "quick":
            return cls(profile, 0.12, 3, 15)
        if profile == "smoke":
            return cls(profile, 0.0, 1, 1)
        return cls(profile)


# How long OpenBLAS's workers (about 0.1 s, measured on NumPy 2.4's OpenBLAS 0.3.31) and
# PyTorch's OpenMP team keep busy-waiting after a call. Timed while they spin, the next library
# finds one core of two taken: deepkern's pool then runs at one thread's speed (its caller does
# not wait for a worker that has no core), an OpenMP library waits at its barrier.
SETTLE_S = 0.3


def settle(settings: Settings) -> None:
    """Pause until the previous library's thread pool has gone idle (not in the smoke profile)."""
    if settings.profile != "smoke":
        time.sleep(SETTLE_S)


def run_kernel_table(cases: Sequence[Case], device: Device, torch: Any, settings: Settings,
                     progress: Optional[Callable[[str], None]] = None) -> List[Row]:
    """Check then time every case; raises MismatchError on the first disagreement."""
    rows = []
    for case in cases:
        impls = case.build(device, torch)
        results = {name: fn() for name, fn in impls.items()}   # first call: check (and warm-up)
        device.sync()
        for name, result in results.items():
            if name != "deepkern":
                check_agree(case.key, name, results["deepkern"], result, case.rtol, case.atol_scale)
        del results
        row = Row(case, stat=settings.stat)
        for name, fn in impls.items():
            sync = (lambda: device.torch_sync(torch)) if name == "torch" else device.sync
            settle(settings)   # the library timed or checked before may still be spinning
            row.times[name] = time_call(fn, sync, settings.target_s, settings.min_repeats, settings.max_repeats,
                                        min_sample_s=0.0 if settings.profile == "smoke" else 2e-3)
        rows.append(row)
        if progress:
            progress(format_row(row))
    return rows


def combine_runs(runs: Sequence[Sequence[Row]]) -> List[Row]:
    """Rows over repeated runs of the same table: the median of the runs' medians and the
    best of their best samples."""
    combined = []
    for rows in zip(*runs):
        row = Row(rows[0].case, stat=rows[0].stat)
        for impl in rows[0].times:
            ts = [r.times[impl] for r in rows if impl in r.times]
            row.times[impl] = Timing(statistics.median(t.median_s for t in ts), min(t.best_s for t in ts),
                                     sum(t.repeats for t in ts), ts[0].inner)
        combined.append(row)
    return combined



# ---------------------------------------------------------------------------- machine and memory floor
def stream_copy_gbs(mib: int = 64, threads: int = 1, repeats: int = 10) -> float:
    """STREAM-like copy bandwidth (GB/s of bytes read + written, best of ``repeats`` as STREAM
    reports it) with np.copyto over ``threads`` Python threads (NumPy releases the GIL for
    large copies)."""
    n = mib * (1 << 20) // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    bounds = np.linspace(0, n, threads + 1).astype(int)
    chunks = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        def once() -> None:
            list(pool.map(lambda c: np.copyto(*c), chunks))
        once()
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            once()
            samples.append(time.perf_counter() - t0)
    return 2 * src.nbytes / min(samples) / 1e9


def machine_info(threads: int, torch: Any, device: Device) -> Dict[str, str]:
    """CPU model, cores, SIMD flags, library versions, threads: the header of every table."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                if model and flags:
                    break
    except OSError:
        pass
    simd = [f for f in ("avx512f", "avx512bw", "avx512vl", "avx2", "fma") if f in flags]
    info = {"date": datetime.date.today().isoformat(), "cpu": model, "cores": str(os.cpu_count()),
            "simd": " ".join(simd) or "none seen", "threads": str(threads), "numpy": np.__version__,
            "python": platform.python_version()}
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{d['internal_api']} {d.get('version') or ''}".strip() for d in threadpool_info()
                if d.get("user_api") == "blas"]
        if blas:
            info["numpy BLAS"] = ", ".join(sorted(set(blas)))
    except ImportError:
        pass
    info.update(blas_env.header_items())
    info["torch"] = torch.__version__ if torch is not None else "not installed"
    try:
        from . import _cpu  # type: ignore[attr-defined]
        info["deepkern gemm"] = _cpu.gemm_variant()
        if hasattr(_cpu, "simd_variant"):
            info["deepkern simd"] = _cpu.simd_variant()
        info["deepkern threads"] = str(_cpu.num_threads())
    except ImportError:
        pass
    info["device"] = device.name
    if hasattr(os, "getloadavg"):   # other work on the machine skews multi-threaded timings
        info["load average (1 min) at start"] = f"{os.getloadavg()[0]:.2f}"
    return info


def _import_torch(use: bool) -> Any:
    if not use:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextlib.contextmanager
def thread_limit(threads: int, torch: Any) -> Iterator[None]:
    """Run deepkern's thread pool, NumPy's BLAS and PyTorch with the same number of threads."""
    if torch is not None:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
        limiter: Any = threadpool_limits(limits=threads)
    except ImportError:  # without it only torch is limited: say so in the header via deepkern threads
        limiter = contextlib.nullcontext()
    try:
        with limiter:
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(old)


