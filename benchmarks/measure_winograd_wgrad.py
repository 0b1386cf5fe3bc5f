"""The Winograd F(3x3, 2x2) weight gradient against the direct GEMM path (DEEPKERN_WINOGRAD on / off):
each layer's weight + bias gradient alone, then training samples/s of the seed CNN and seed 000's
150x150 network with the default rule (auto) against off.

    PYTHONPATH=python python benchmarks/measure_winograd_wgrad.py [--threads 1 2] [--seconds 1] [--rounds 5]
        [--cpu-time] [--skip-training]

DEEPKERN_WINOGRAD is read at every call, so the modes alternate inside one process, round after
round (on a machine other jobs keep busy, the load then hits both alike); each number is the median
over rounds of per-call medians. ``--cpu-time`` (one thread only) times the calling thread's CPU
time, which leaves the time spent descheduled out.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable, Dict, List

import numpy as np

import deepkern as dk
from deepkern import nn, ops
from measure_fused import NETS, layers, train_step

# (N, C, H, W, OC): the seed CNN's second conv, then seed 000's four (all 3x3, stride 1, no padding)
LAYERS = [(128, 32, 13, 13, 64), (32, 3, 150, 150, 32), (32, 32, 74, 74, 64), (32, 64, 36, 36, 64),
          (32, 64, 17, 17, 64)]


def timed(mode: str, fn: Callable[[], None], seconds: float, clock: Callable[[], float]) -> float:
    os.environ["DEEPKERN_WINOGRAD"] = mode
    fn()
    times: List[float] = []
    end = time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 3:
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def compare(fn: Callable[[], None], modes: List[str], seconds: float, rounds: int,
            clock: Callable[[], float]) -> Dict[str, float]:
    runs: Dict[str, List[float]] = {m: [] for m in modes}
    for r in range(rounds):
        for m in modes if r % 2 == 0 else modes[::-1]:
            runs[m].append(timed(m, fn, seconds, clock))
    return {m: statistics.median(v) for m, v in runs.items()}


def weight_gradient(n: int, c: int, h: int, w: int, oc: int) -> Callable[[], None]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal((n, c, h, w), dtype=np.float32)
    wt = rng.standard_normal((oc, c, 3, 3), dtype=np.float32)
    g = rng.standard_normal((n, oc, h - 2, w - 2), dtype=np.float32)
    return lambda: ops.conv2d_backward(g, x, wt, bias=True, input_grad=False)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--cpu-time", action="store_true", help="one thread, timed by its CPU time")
    p.add_argument("--skip-training", action="store_true")
    args = p.parse_args()
    clock = time.perf_counter
    if args.cpu_time:
        args.threads, clock = [1], time.thread_time
    print(f"{'CPU' if args.cpu_time else 'wall'} time, load average before: {os.getloadavg()}")
    print("| layer (weight + bias gradient) | threads | direct ms | Winograd ms | direct / Winograd |")
    print("|---|---:|---:|---:|---:|")
    for shape in LAYERS:
        fn = weight_gradient(*shape)
        for threads in args.threads:
            dk.set_num_threads(threads)
            t = compare(fn, ["on", "off"], args.seconds, args.rounds, clock)
            print(f"| {'x'.join(map(str, shape[:4]))} -> {shape[4]} | {threads} | {t['off'] * 1e3:.2f} | "
                  f"{t['on'] * 1e3:.2f} | {t['off'] / t['on']:.2f}x |", flush=True)
    if not args.skip_training:
        print("\n| network (training, Adam) | threads | off samples/s | auto samples/s | auto / off |")
        print("|---|---:|---:|---:|---:|")
        for net, (shape, batch, classes) in NETS.items():
            dk.manual_seed(0)
            rng = np.random.default_rng(1)
            x = rng.random((batch,) + shape, dtype=np.float32)
            y = rng.integers(0, classes, batch).astype(np.int64)
            step = train_step(nn.Sequential(*layers(net)), x, y)
            for threads in args.threads:
                dk.set_num_threads(threads)
                t = compare(step, ["auto", "off"], args.seconds * 2, args.rounds, clock)
                print(f"| {net} | {threads} | {batch / t['off']:,.0f} | {batch / t['auto']:,.0f} | "
                      f"{t['off'] / t['auto']:.2f}x |", flush=True)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
