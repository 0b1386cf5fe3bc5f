"""Side-by-side GEMM and conv2d timings: deepkern's CPU backend against NumPy and PyTorch.

Prints GFLOP/s and the ratio (reference time / deepkern time; > 1 means deepkern is faster)
for the shapes the seed networks issue, medians over interleaved repeats in one process.

    PYTHONPATH=python python benchmarks/measure_gemm.py [--repeats 15] [--only matmul|conv]
    PYTHONPATH=python python benchmarks/measure_gemm.py --squares [--threads 1,2] [--base OLD_CPU_SO]

--squares prints the square GEMMs (256-2048) at each thread count as a markdown table;
--base also times another build's deepkern._cpu extension (e.g. main's) in the same process.
NumPy's OpenBLAS runs with the kernel it picks for this CPU: when OPENBLAS_CORETYPE or
OPENBLAS_L2_SIZE is set, the script runs itself again without them (this process only).

Thread counts follow OMP_NUM_THREADS for deepkern and NumPy's BLAS; torch is set to match.
On a busy shared machine, wall-clock times of multi-threaded calls mostly measure the wait for
a descheduled thread; for kernel quality there, run one thread and time CPU seconds:

    OMP_NUM_THREADS=1 OPENBLAS_NUM_THREADS=1 PYTHONPATH=python python benchmarks/measure_gemm.py --cpu-time

and for the work of several threads (what duplicated packing costs), the process's CPU time with
deepkern's idle workers sleeping instead of polling (rates are then per core of CPU time; NumPy's
OpenBLAS workers poll while idle, so its column is not comparable there):

    DEEPKERN_SPIN_US=0 PYTHONPATH=python python benchmarks/measure_gemm.py --squares --work --base OLD.so
"""
from __future__ import annotations

import argparse
import importlib.machinery
import importlib.util
import os
import platform
import statistics
import subprocess
import sys
import time
from types import ModuleType
from typing import Callable, List, Optional, Sequence, Tuple

import numpy as np

from deepkern import _cpu
from deepkern._bench import blas_env


CLOCK: Callable[[], float] = time.perf_counter
QUIET = False  # --quiet: keep only blocks timed while the rest of the machine was idle
IDLE_PAUSE_S = 0.25  # longer than OpenBLAS's default worker spin (2^28 cycles)


def median_seconds(fns: Sequence[Callable[[], object]], repeats: int, rounds: int = 3) -> List[float]:
    """Median time of each callable, timed in alternating blocks (all of one, then the next).

    Blocks rather than call-by-call interleaving: each library's thread pool keeps its workers
    spinning for a while after a call (OpenBLAS's for about 0.1 s), and on 2 cores a spinning
    pool takes a core from the other library's next calls (measured: a 2-thread 1024^3 sgemm
    right after a NumPy matmul runs ~40% slower for ~0.1 s). So each block starts with a pause
    that lets the other pool go idle, then two untimed calls; the blocks alternate over several
    rounds so slow drifts of machine load hit all callables alike.
    """
    return [statistics.median(s) for s in block_samples(fns, repeats, rounds)]


def block_samples(fns: Sequence[Callable[[], object]], repeats: int, rounds: int = 3) -> List[List[float]]:
    """The timed samples of each callable, in the alternating blocks median_seconds describes."""
    samples: List[List[float]] = [[] for _ in fns]
    per_block = max(1, repeats // rounds)
    for _ in range(rounds):
        for i, fn in enumerate(fns):
            time.sleep(IDLE_PAUSE_S)
            fn()  # warm up: thread pool awake, packing buffers, pages
            fn()
            for _ in range(per_block):
                t0 = CLOCK()
                fn()
                samples[i].append(CLOCK() - t0)
    return samples


def machine_busy_seconds() -> float:
    """CPU seconds all processes have run (user + system time of every CPU), from /proc/stat."""
    with open("/proc/stat") as f:
        ticks = [int(x) for x in f.readline().split()[1:]]
    return (sum(ticks[:8]) - ticks[3] - ticks[4]) / os.sysconf("SC_CLK_TCK")


def quiet_samples(fns: Sequence[Callable[[], object]], blocks: int, budget_s: float = 15.0,
                  min_block_s: float = 0.2, max_others: float = 0.1) -> Tuple[List[List[float]], List[int]]:
    """Seconds per call of each callable, from blocks of calls (>= min_block_s each) kept only
    when the other processes on the machine used under max_others of one core meanwhile
    (/proc/stat's busy time minus this process's CPU time): on a shared machine, the timings of
    the quiet moments. Blocks alternate between the callables after a pause (see
    median_seconds); each gets up to `blocks` quiet blocks within budget_s, or, failing two, its
    two quietest blocks. Also returns how many quiet blocks each got."""
    samples: List[List[Tuple[float, float]]] = [[] for _ in fns]
    deadline = time.perf_counter() + budget_s * len(fns)
    while time.perf_counter() < deadline and any(sum(o <= max_others for _, o in s) < blocks for s in samples):
        for i, fn in enumerate(fns):
            if sum(o <= max_others for _, o in samples[i]) >= blocks:
                continue
            time.sleep(IDLE_PAUSE_S)
            fn()
            b0, c0, t0 = machine_busy_seconds(), time.process_time(), time.perf_counter()
            calls = 0
            while time.perf_counter() - t0 < min_block_s:
                fn()
                calls += 1
            elapsed = time.perf_counter() - t0
            others = max(0.0, machine_busy_seconds() - b0 - (time.process_time() - c0)) / elapsed
            samples[i].append((elapsed / calls, others))
    out, counts = [], []
    for s in samples:
        quiet = [t for t, o in s if o <= max_others]
        out.append(quiet if len(quiet) >= 2 else [t for t, _ in sorted(s, key=lambda x: x[1])[:2]])
        counts.append(len(quiet))
    return out, counts


# (label, M, K, N, trans_a, trans_b): C (M, N) = op(A) (M, K) @ op(B) (K, N)
MATMUL_SHAPES: List[Tuple[str, int, int, int, bool, bool]] = [
    ("square 256", 256, 256, 256, False, False),
    ("square 512", 512, 512, 512, False, False),
    ("square 1024", 1024, 1024, 1024, False, False),
    ("square 2048", 2048, 2048, 2048, False, False),
    # MLP / CNN linear layers, forward x @ W^T (W stored (out, in))
    ("fc 100x784x256 fwd", 100, 784, 256, False, True),
    ("fc 100x256x256 fwd", 100, 256, 256, False, True),
    ("fc 128x1600x64 fwd", 128, 1600, 64, False, True),
    # their backward: dX = G W (M, N) @ (N, K); dW = G^T X with trans_a
    ("fc 100x784x256 dX", 100, 256, 784, False, False),
    ("fc 100x784x256 dW", 256, 100, 784, True, False),
    ("fc 100x256x256 dX", 100, 256, 256, False, False),
    ("fc 100x256x256 dW", 256, 100, 256, True, False),
    ("fc 128x1600x64 dX", 128, 64, 1600, False, False),
    ("fc 128x1600x64 dW", 64, 128, 1600, True, False),
    # im2col shapes of the seed CNN (batch 128): (N*OH*OW, C*KH*KW) @ (C*KH*KW, OC)
    ("im2col 86528x9x32", 86528, 9, 32, False, False),
    ("im2col 15488x288x64", 15488, 288, 64, False, False),
]


def load_base(path: str) -> ModuleType:
    """Another build's deepkern._cpu (a .so file) as a module of its own, to time side by side."""
    loader = importlib.machinery.ExtensionFileLoader("_cpu", path)
    spec = importlib.util.spec_from_file_location("_cpu", path, loader=loader)
    assert spec is not None
    module = importlib.util.module_from_spec(spec)
    loader.exec_module(module)
    return module


def set_threads(n: int, base: Optional[ModuleType]) -> None:
    """n threads for deepkern (and the base build) and NumPy's BLAS."""
    from threadpoolctl import threadpool_limits
    _cpu.set_num_threads(n)
    if base is not None:
        base.set_num_threads(n)
    threadpool_limits(limits=n, user_api="blas")


def bench_matmul(repeats: int, base: Optional[ModuleType] = None) -> None:
    rng = np.random.default_rng(0)
    extra = f" {'base GF/s':>9s} {'base/dk':>7s}" if base else ""
    print(f"{'matmul (M x K x N)':28s} {'dk GF/s':>9s} {'np GF/s':>9s} {'np/dk':>7s}{extra}")
    for label, m, k, n, ta, tb in MATMUL_SHAPES:
        a = rng.standard_normal((k, m) if ta else (m, k)).astype(np.float32)
        b = rng.standard_normal((n, k) if tb else (k, n)).astype(np.float32)
        an = a.T if ta else a
        bn = b.T if tb else b
        fns = [lambda: _cpu.matmul(a, b, None, False, ta, tb), lambda: np.matmul(an, bn)]
        if base is not None:
            fns.append(lambda: base.matmul(a, b, None, False, ta, tb))
        times = median_seconds(fns, repeats if m * n * k < 2**30 else max(3, repeats // 3))
        flops = 2.0 * m * n * k
        line = f"{label:28s} {flops / times[0] / 1e9:9.1f} {flops / times[1] / 1e9:9.1f} {times[1] / times[0]:7.2f}"
        if base is not None:
            line += f" {flops / times[2] / 1e9:9.1f} {times[2] / times[0]:7.2f}"
        print(line)


SQUARES = [256, 384, 512, 768, 1024, 1536, 2048]


def bench_squares(repeats: int, threads: Sequence[int], base: Optional[ModuleType] = None) -> None:
    """Square fp32 GEMMs at each thread count: a markdown table of GFLOP/s (median; best)."""
    rng = np.random.default_rng(0)
    head = "| n | threads | deepkern GFLOP/s (best) | NumPy GFLOP/s (best) | deepkern / NumPy |"
    rule = "|---|---|---|---|---|"
    if base is not None:
        head += " base GFLOP/s (best) | deepkern / base |"
        rule += "---|---|"
    print(head)
    print(rule)
    for nt in threads:
        set_threads(nt, base)
        for n in SQUARES:
            a = rng.standard_normal((n, n)).astype(np.float32)
            b = rng.standard_normal((n, n)).astype(np.float32)
            fns = [lambda: _cpu.matmul(a, b, None, False, False, False), lambda: np.matmul(a, b)]
            if base is not None:
                fns.append(lambda: base.matmul(a, b, None, False, False, False))
            note = ""
            if QUIET:
                samples, counts = quiet_samples(fns, max(3, repeats // 3))
                note = ", quiet blocks " + "/".join(map(str, counts))
            else:
                samples = block_samples(fns, repeats if n <= 1024 else max(3, repeats // 2))
            rate = [2.0 * n ** 3 / statistics.median(s) / 1e9 for s in samples]
            best = [2.0 * n ** 3 / min(s) / 1e9 for s in samples]
            line = (f"| {n} | {nt} | {rate[0]:.0f} ({best[0]:.0f}) | {rate[1]:.0f} ({best[1]:.0f}) | "
                    f"{rate[0] / rate[1]:.2f}x |")
            if base is not None:
                line += f" {rate[2]:.0f} ({best[2]:.0f}) | {rate[0] / rate[2]:.2f}x |"
            print(line + f" <!-- load {os.getloadavg()[0]:.2f}{note} -->", flush=True)


CONV_LAYERS = [("conv1 1->32 28x28", 128, 1, 28, 32), ("conv2 32->64 13x13", 128, 32, 13, 64)]


def bench_conv(repeats: int) -> None:
    try:
        import torch
    except Exception as exc:  # torch is optional: a comparison, never a dependency
        print(f"conv2d: torch not importable ({exc.__class__.__name__}); skipped")
        return
    torch.set_num_threads(int(os.environ.get("OMP_NUM_THREADS", os.cpu_count() or 1)))
    rng = np.random.default_rng(1)
    print(f"{'conv2d (batch, 3x3)':28s} {'dk ms':>9s} {'torch ms':>9s} {'torch/dk':>9s}")
    for label, nb, c, hw, oc in CONV_LAYERS:
        x = rng.standard_normal((nb, c, hw, hw)).astype(np.float32)
        w = rng.standard_normal((oc, c, 3, 3)).astype(np.float32)
        bias = rng.standard_normal(oc).astype(np.float32)
        oh = hw - 2
        gy = rng.standard_normal((nb, oc, oh, oh)).astype(np.float32)
        tx, tw, tb, tgy = (torch.from_numpy(v) for v in (x, w, bias, gy))
        txg = tx.clone().requires_grad_(True)
        twg = tw.clone().requires_grad_(True)
        _tbg = tb.clone().requires_grad_(True)

        def torch_fwd():
            with torch.no_grad():
                return torch.nn.functional.conv2d(tx, tw, tb)

        def torch_bwd():
            # input, weight and bias gradients of one conv: what conv2d_backward computes
            return torch.ops.aten.convolution_backward(tgy, txg, twg, [oc], [1, 1], [0, 0], [1, 1],
                                                       False, [0, 0], 1, [True, True, True])

        t_dk, t_pt = median_seconds(
            [lambda: _cpu.conv2d(x, w, bias, (1, 1), (0, 0)), torch_fwd], repeats)
        print(f"{label + ' fwd':28s} {t_dk * 1e3:9.3f} {t_pt * 1e3:9.3f} {t_pt / t_dk:9.2f}")
        t_dk, t_pt = median_seconds(
            [lambda: _cpu.conv2d_backward(gy, x, w, (1, 1), (0, 0), True), torch_bwd], repeats)
        print(f"{label + ' bwd':28s} {t_dk * 1e3:9.3f} {t_pt * 1e3:9.3f} {t_pt / t_dk:9.2f}")


def clock_name(args: argparse.Namespace) -> str:
    if args.work:
        return "process CPU time (rates per core)"
    return "thread CPU time" if args.cpu_time else "wall time"


def rerun_without_blas_overrides() -> None:
    """Run this script again without OPENBLAS_CORETYPE/OPENBLAS_L2_SIZE when one is set (OpenBLAS
    reads them when NumPy is imported), and exit with the child's status."""
    if not blas_env.overrides(os.environ) or blas_env.CHILD_MARK in os.environ:
        return
    print(f"running again without {', '.join(blas_env.overrides(os.environ))}", flush=True)
    sys.exit(subprocess.call([sys.executable, *sys.argv], env=blas_env.clean_env(os.environ)))


def main() -> None:
    rerun_without_blas_overrides()
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=15)
    parser.add_argument("--only", choices=["matmul", "conv"], default=None)
    parser.add_argument("--squares", action="store_true", help="the square GEMMs 256-2048 only")
    parser.add_argument("--threads", default="1,2", help="thread counts for --squares, e.g. 1,2")
    parser.add_argument("--base", default=None, help="another build's _cpu extension to time side by side")
    parser.add_argument("--quiet", action="store_true",
                        help="--squares: time blocks of >= 0.2 s, kept when other processes were idle")
    parser.add_argument("--work", action="store_true",
                        help="time the process's CPU time, all threads (set DEEPKERN_SPIN_US=0)")
    parser.add_argument("--cpu-time", action="store_true",
                        help="time CPU seconds of the calling thread (meaningful with one thread only)")
    args = parser.parse_args()
    global CLOCK, QUIET
    QUIET = args.quiet
    if args.cpu_time:
        if _cpu.num_threads() != 1:
            parser.error("--cpu-time needs OMP_NUM_THREADS=1 (other threads' work would not be counted)")
        CLOCK = time.thread_time
    if args.work:
        CLOCK = time.process_time
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} CPUs, "
          f"deepkern threads {_cpu.num_threads()}, gemm variant {_cpu.gemm_variant()}, "
          f"load {os.getloadavg()[0]:.2f}, {clock_name(args)}, "
          f"{time.strftime('%Y-%m-%d %H:%M')}")
    print("; ".join(f"{k}: {v}" for k, v in blas_env.header_items().items()))
    base = load_base(args.base) if args.base else None
    if args.squares:
        bench_squares(args.repeats, [int(t) for t in args.threads.split(",")], base)
        return
    if args.only in (None, "matmul"):
        bench_matmul(args.repeats, base)
    if args.only in (None, "conv"):
        bench_conv(args.repeats)


if __name__ == "__main__":
    main()
