"""``deepkern bench`` (``deepkern._bench``): the kernel table and the training benchmark.

For every op and shape the table gives deepkern's time per call and rate (GFLOP/s for
compute-bound ops, GB/s of the fewest bytes the op must read and write for memory-bound
ones), vectorised NumPy's time (``deepkern._bench.numpy_peer``) and PyTorch CPU's (when
installed), with ratios peer time / deepkern time (> 1: deepkern is faster). Results are
compared before anything is timed; a disagreement stops the run. Times are medians of the
samples, or with ``--stat min`` the best sample (steadier when other work shares the cores).

    deepkern bench                 # full table, about 1 minute on 2 cores
    deepkern bench --quick         # fewer shapes and repeats, about 20 s
    deepkern bench --train         # also samples/s of the seed MLP and CNN (Adam)
    deepkern bench --repeat 3 --threads 1 --out-dir results/

It writes kernels.md (and kernels-min.md or kernels-median.md, the other statistic) and a
kernels.png bar chart of the ratios into --out-dir.

The same cases feed the pytest-benchmark suites in ``benchmarks/``.
"""
from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import List


from .. import _contention, backends
from .cases import (IMPLS, PROFILES, BenchError, Case, Device, MismatchError, kernel_cases,
                    resolve_device)
from .report import format_row, format_table, markdown, plot
from .results import Row, Timing, TrainResult
from .timing import (Settings, _import_torch, check_agree, combine_runs,
                     machine_info, run_kernel_table, stream_copy_gbs, thread_limit, time_call)
from .training import (deepkern_train_step, numpy_train_step, run_training,
                       torch_train_step, train_data)

__all__ = ["IMPLS", "PROFILES", "BenchError", "MismatchError", "Case", "Device", "kernel_cases", "resolve_device",
           "format_row", "format_table", "markdown", "plot", "Row", "Settings", "Timing", "check_agree",
           "combine_runs", "machine_info", "run_kernel_table", "stream_copy_gbs", "thread_limit", "time_call",
           "TrainResult", "deepkern_train_step", "numpy_train_step", "run_training", "torch_train_step",
           "train_data", "run"]


def run(args: argparse.Namespace) -> int:
    """Run the benchmark as the CLI asked; returns the exit status."""
    load_before = _contention.load_average()   # before this process adds its own load
    profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = Settings.for_profile(profile)
    settings.stat = args.stat
    device = resolve_device(args.device)
    threads = args.threads if args.threads is not None else (os.cpu_count() or 1)
    if threads < 1:
        raise BenchError(f"--threads: expected a positive count, got {threads}")
    if args.repeat < 1:
        raise BenchError(f"--repeat: expected a positive count, got {args.repeat}")
    torch = _import_torch(not args.no_torch)
    if torch is not None and device.is_gpu and not torch.cuda.is_available():
        torch = None
    backends.load("cpu")   # register deepkern's pool with threadpoolctl before limiting threads
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = kernel_cases(profile)
    if args.only:
        cases = [c for c in cases if args.only in c.op]

    def say(line: str) -> None:
        print(line, flush=True)

    with thread_limit(threads, torch):
        info = machine_info(threads, torch, device)
        info["runs"] = str(args.repeat)
        info["statistic"] = "best sample" if args.stat == "min" else "median of samples"
        if profile != "smoke" and not device.is_gpu:
            copy = f"{stream_copy_gbs(64, 1):.1f} GB/s (1 thread)"
            if threads > 1:
                copy += f", {stream_copy_gbs(64, threads):.1f} GB/s ({threads} threads)"
            info["NumPy copy (64 MiB, best of 10)"] = copy
        say(" | ".join(f"{k}: {v}" for k, v in info.items()))
        say(format_table([]))
        runs = []
        for i in range(args.repeat):
            if args.repeat > 1:
                say(f"run {i + 1} of {args.repeat}:")
            runs.append(run_kernel_table(cases, device, torch, settings, progress=say))
        rows = combine_runs(runs)
        for line in _contention.assess(runs, os.cpu_count() or 1, threads, load_before).warnings():
            say(line)   # a contended run says so, here and in kernels.md's header
            info["warning"] = f"{info.get('warning', '')} {line}".strip()
        if args.repeat > 1:
            say(f"medians over {args.repeat} runs:")
            say(format_table(rows))
        training: List[TrainResult] = []
        if args.train:
            say("training (samples/s" + (", on the CPU" if device.is_gpu else "") + "):")
            training = run_training(torch, settings, progress=say)
    md_path, png_path = out_dir / "kernels.md", out_dir / "kernels.png"
    md_path.write_text(markdown(rows, info, training), encoding="utf-8")
    # the same runs under the other statistic, kernel rows only (training kept one statistic)
    other = "median" if args.stat == "min" else "min"
    other_rows = [Row(r.case, dict(r.times), other) for r in rows]
    other_info = dict(info, statistic="best sample" if other == "min" else "median of samples")
    (out_dir / f"kernels-{other}.md").write_text(markdown(other_rows, other_info), encoding="utf-8")
    if rows:
        plot(rows, png_path, f"deepkern vs NumPy / PyTorch — {info['cpu']}, {threads} threads")
    say(f"wrote {md_path}" + (f" and {png_path}" if rows else ""))
    return 0

