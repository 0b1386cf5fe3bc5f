"""Training samples/s with the fused conv + ReLU + 2x2 max-pool layers against the same networks run
op by op (issue P12): the seed CNN (28x28x1, batch 128) and seed 000's 150x150x3 network (four
conv + pool layers, batch 32), one Adam step per batch, plus the layers alone.

    PYTHONPATH=python python benchmarks/measure_fused.py [--threads 2] [--seconds 3] [--rounds 3] [--cpu-time]

The unfused network is the same layer objects with each ReLU + MaxPool2d pair nested in its own
Sequential: the outer Sequential then sees no Conv2d, ReLU pair and runs conv2d, then max_pool2d
and relu (what the library did before the fusion). Both share weights, alternate within each
round, and report the median of ``rounds`` medians of per-step times. ``--cpu-time`` (one thread)
times the calling thread's CPU time instead of wall time: on a machine other jobs keep busy, the
time spent descheduled then stays out of the numbers.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable, Dict, List, Optional, Tuple

import numpy as np

import deepkern as dk
from deepkern import nn, ops

NETS = {"seed CNN": ((1, 28, 28), 128, 10), "150x150 CNN (seed 000)": ((3, 150, 150), 32, 2)}


def layers(net: str) -> List[nn.Module]:
    if net == "seed CNN":
        return [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10)]
    out: List[nn.Module] = []
    for c_in, c_out in ((3, 32), (32, 64), (64, 64), (64, 64)):   # 150 -> 74 -> 36 -> 17 -> 7
        out += [nn.Conv2d(c_in, c_out, 3), nn.ReLU(), nn.MaxPool2d(2)]
    return out + [nn.Flatten(), nn.Linear(64 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 2)]


def unfused(parts: List[nn.Module]) -> nn.Sequential:
    """The layers with every ReLU, MaxPool2d pair nested: no fusion of the conv with them."""
    out, i = [], 0
    while i < len(parts):
        if isinstance(parts[i], nn.ReLU) and i + 1 < len(parts) and isinstance(parts[i + 1], nn.MaxPool2d):
            out.append(nn.Sequential(parts[i], parts[i + 1]))
            i += 2
        else:
            out.append(parts[i])
            i += 1
    return nn.Sequential(*out)


def train_step(model: nn.Module, x: np.ndarray, y: np.ndarray) -> Callable[[], None]:
    opt, loss_fn = dk.optim.Adam(model.parameters()), nn.CrossEntropyLoss()

    def step() -> None:
        opt.zero_grad()
        loss_fn(model(dk.Tensor(x)), y).backward()
        opt.step()
    return step


CLOCK = time.perf_counter


def median_time(fn: Callable[[], None], seconds: float, clock: Optional[Callable[[], float]] = None) -> float:
    """Median of fn's times (clock: this module's CLOCK unless given) over `seconds`, at least 5 calls."""
    clock = clock or CLOCK
    fn()
    times, end = [], time.perf_counter() + seconds
    while time.perf_counter() < end or len(times) < 5:
        t0 = clock()
        fn()
        times.append(clock() - t0)
    return statistics.median(times)


def compare(cases: Dict[str, Callable[[], None]], seconds: float, rounds: int) -> Dict[str, float]:
    """Median over rounds of each case's median time; the cases alternate within a round."""
    runs: Dict[str, List[float]] = {name: [] for name in cases}
    for _ in range(rounds):
        for name, fn in cases.items():
            runs[name].append(median_time(fn, seconds))
    return {name: statistics.median(v) for name, v in runs.items()}


def layer_cases(shape: Tuple[int, int, int, int], oc: int) -> Dict[str, Callable[[], None]]:
    """conv + ReLU + 2x2 max-pool of one layer: forward and forward + backward, fused and op by op."""
    rng = np.random.default_rng(0)
    x = rng.standard_normal(shape, dtype=np.float32)
    w = rng.standard_normal((oc, shape[1], 3, 3), dtype=np.float32) * 0.2
    b = rng.standard_normal(oc, dtype=np.float32)

    def fused(backward: bool) -> None:
        out, route = ops.conv2d_relu(x, w, b, 1, 0, True)
        if backward:
            ops.conv2d_relu_backward(out, x, w, out, route, 1, 0, bias=True, input_grad=shape[1] > 1)

    def op_by_op(backward: bool) -> None:
        y = ops.conv2d(x, w, b)
        p = ops.max_pool2d(y, 2)
        a = ops.relu(p)
        if backward:
            gp = ops.relu_backward(a, a)
            gy = ops.max_pool2d_backward(gp, y, 2)
            ops.conv2d_backward(gy, x, w, bias=True, input_grad=shape[1] > 1)
    return {"fused fwd": lambda: fused(False), "op-by-op fwd": lambda: op_by_op(False),
            "fused fwd+bwd": lambda: fused(True), "op-by-op fwd+bwd": lambda: op_by_op(True)}


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--threads", type=int, default=2)
    p.add_argument("--seconds", type=float, default=3.0)
    p.add_argument("--rounds", type=int, default=3)
    p.add_argument("--skip-layers", action="store_true")
    p.add_argument("--cpu-time", action="store_true", help="one thread, timed by its CPU time")
    args = p.parse_args()
    global CLOCK
    if args.cpu_time:
        args.threads, CLOCK = 1, time.thread_time
    dk.set_num_threads(args.threads)
    print(f"threads {args.threads}, {'CPU' if args.cpu_time else 'wall'} time, load average before: {os.getloadavg()}")
    print("| network | batch | op by op samples/s | fused samples/s | fused / op by op |")
    print("|---|---:|---:|---:|---:|")
    for net, (shape, batch, classes) in NETS.items():
        dk.manual_seed(0)
        parts = layers(net)
        rng = np.random.default_rng(1)
        x = rng.random((batch,) + shape, dtype=np.float32)
        y = rng.integers(0, classes, batch).astype(np.int64)
        t = compare({"op": train_step(unfused(parts), x, y), "fused": train_step(nn.Sequential(*parts), x, y)},
                    args.seconds, args.rounds)
        print(f"| {net} | {batch} | {batch / t['op']:,.0f} | {batch / t['fused']:,.0f} | {t['op'] / t['fused']:.2f}x |")
    if not args.skip_layers:
        print("\n| layer (conv 3x3 + ReLU + 2x2 pool) | op by op fwd ms | fused fwd ms | op by op fwd+bwd ms | "
              "fused fwd+bwd ms |")
        print("|---|---:|---:|---:|---:|")
        for shape, oc in (((128, 1, 28, 28), 32), ((128, 32, 13, 13), 64), ((32, 3, 150, 150), 32),
                          ((32, 32, 74, 74), 64)):
            t = compare(layer_cases(shape, oc), args.seconds / 2, args.rounds)
            ms = {k: v * 1e3 for k, v in t.items()}
            print(f"| {'x'.join(map(str, shape))} -> {oc} | {ms['op-by-op fwd']:.2f} | {ms['fused fwd']:.2f} | "
                  f"{ms['op-by-op fwd+bwd']:.2f} | {ms['fused fwd+bwd']:.2f} |")
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
