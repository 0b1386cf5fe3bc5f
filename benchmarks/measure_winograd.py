"""Winograd F(2x2, 3x3) / F(4x4, 3x3) against the direct conv2d (DEEPKERN_WINOGRAD=f2 / f4 / auto / off) on the
seed CNN's and the 150x150 network's 3x3 layers, and training samples/s of both networks (issue P12).

    PYTHONPATH=python python benchmarks/measure_winograd.py [--threads 1 2] [--seconds 1] [--rounds 5]
        [--skip-layers] [--skip-training] [--cpu-time] [--bf16]

DEEPKERN_WINOGRAD is read at every call, so the modes alternate inside each round of one process (paired
rounds, the order reversed every other round: load from other users of the machine hits all alike). Each
cell is the median over rounds of per-call medians. The input gradient is not a call of its own: "bwd" is
conv2d_backward with the input gradient, "bwd -dX" without it, so dX is about their difference.
The training rows compare auto (the default, Winograd where the shape rule picks it) with off.
``--cpu-time`` (one thread) times the calling thread's CPU time and keeps the best round instead of the
median: on a machine other jobs keep busy, time spent descheduled then stays out of the numbers.
``--bf16`` runs the modes in bf16 precision (``dk.precision("bf16")``: bf16 Winograd, or off: the bf16 im2col
GEMMs) beside fp32's auto, in the same paired rounds.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable, Dict, List, Tuple

import numpy as np

import deepkern as dk
from deepkern import ops
from deepkern._bench import training as bench
from measure_fused import median_time

# (name, x shape, out channels)
LAYERS = [
    ("seed conv2 32->64 13x13", (128, 32, 13, 13), 64),
    ("cnn150 conv1 3->32 150x150", (32, 3, 150, 150), 32),
    ("cnn150 conv2 32->64 74x74", (32, 32, 74, 74), 64),
    ("cnn150 conv3 64->64 36x36", (32, 64, 36, 36), 64),
    ("cnn150 conv4 64->64 17x17", (32, 64, 17, 17), 64),
]


CLOCK = time.perf_counter
ACROSS_ROUNDS = statistics.median


def paired(cases: Dict[str, Callable[[], None]], seconds: float, rounds: int,
           modes: Tuple[str, ...]) -> Dict[Tuple[str, str], float]:
    """Median over rounds of each (case, mode)'s median time; modes alternate inside each round."""
    runs: Dict[Tuple[str, str], List[float]] = {}
    for r in range(rounds):
        for name, fn in cases.items():
            for mode in modes if r % 2 == 0 else modes[::-1]:
                precision, _, os.environ["DEEPKERN_WINOGRAD"] = mode.rpartition(" ")  # "[bf16 ]<mode>"
                with dk.precision(precision or "fp32"):
                    runs.setdefault((name, mode), []).append(median_time(fn, seconds, CLOCK))
    os.environ.pop("DEEPKERN_WINOGRAD", None)
    return {key: ACROSS_ROUNDS(v) for key, v in runs.items()}


def layer_cases(shape: Tuple[int, int, int, int], oc: int) -> Dict[str, Callable[[], None]]:
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal((oc, shape[1], 3, 3), dtype=np.float32) * 0.2
    b = rng.standard_normal(oc, dtype=np.float32)
    g = rng.standard_normal(ops.conv2d(x, w, b).shape, dtype=np.float32)
    return {
        "fwd": lambda: ops.conv2d(x, w, b),
        "fused fwd": lambda: ops.conv2d_relu(x, w, b, 1, 0, True),
        "bwd": lambda: ops.conv2d_backward(g, x, w, bias=True),
        "bwd -dX": lambda: ops.conv2d_backward(g, x, w, bias=True, input_grad=False),
    }


def layers_table(threads: int, seconds: float, rounds: int, bf16: bool) -> None:
    print(f"\nthreads {threads}, {CLOCK.__name__}, load average before: {os.getloadavg()}")
    modes = ("bf16 f2", "bf16 f4", "auto", "bf16 auto", "bf16 off") if bf16 else ("f2", "f4", "auto", "off")
    print("| layer | case | " + " | ".join(f"{m} ms" for m in modes) + f" | {modes[-1]} / {modes[-2]} |")
    print("|---|---|" + "---:|" * (len(modes) + 1))
    for name, shape, oc in LAYERS:
        t = paired(layer_cases(shape, oc), seconds, rounds, modes)
        for m in modes:
            t[("dX (bwd - bwd -dX)", m)] = t[("bwd", m)] - t[("bwd -dX", m)]
        for case in ("fwd", "fused fwd", "bwd", "bwd -dX", "dX (bwd - bwd -dX)"):
            ms = [t[(case, m)] * 1e3 for m in modes]
            print(f"| {name} | {case} | " + " | ".join(f"{v:.2f}" for v in ms) + f" | {ms[-1] / ms[-2]:.2f}x |")


def training_table(threads: int, seconds: float, rounds: int, bf16: bool) -> None:
    print(f"\nthreads {threads}, {CLOCK.__name__}, load average before: {os.getloadavg()}")
    modes = ("auto", "bf16 auto", "bf16 off") if bf16 else ("auto", "off")
    print("| network | batch | " + " | ".join(f"{m} samples/s" for m in modes) + " | "
          + " | ".join(f"{m} / {modes[0]}" for m in modes[1:]) + " |")
    print("|---|---:|" + "---:|" * (2 * len(modes) - 1))
    for kind, batch in (("cnn", 128), ("cnn150", 32)):
        step = bench.deepkern_train_step(kind)
        data = bench.train_data(kind, batch)
        xb, yb = data[0]
        t = paired({"step": lambda: step(xb, yb)}, seconds, rounds, modes)
        rate = [batch / t[("step", m)] for m in modes]
        print(f"| {kind} | {batch} | " + " | ".join(f"{r:,.0f}" for r in rate) + " | "
              + " | ".join(f"{r / rate[0]:.2f}x" for r in rate[1:]) + " |")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, nargs="+", default=[1, 2])
    p.add_argument("--seconds", type=float, default=1.0)
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--skip-layers", action="store_true")
    p.add_argument("--skip-training", action="store_true")
    p.add_argument("--cpu-time", action="store_true", help="one thread, its CPU time, best round")
    p.add_argument("--bf16", action="store_true", help="the layers in bf16 precision, fp32's auto beside them")
    args = p.parse_args()
    global CLOCK, ACROSS_ROUNDS
    if args.cpu_time:
        args.threads, CLOCK, ACROSS_ROUNDS = [1], time.thread_time, min
    dk.set_backend("cpu")
    for threads in args.threads:
        dk.set_num_threads(threads)
        if not args.skip_layers:
            layers_table(threads, args.seconds, args.rounds, args.bf16)
        if not args.skip_training:
            training_table(threads, args.seconds, args.rounds, args.bf16)


if __name__ == "__main__":
    main()
