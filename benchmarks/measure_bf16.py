"""bf16 compute (``dk.set_precision("bf16")``) against fp32, PyTorch's CPU autocast(bfloat16) beside it.

    PYTHONPATH=python python benchmarks/measure_bf16.py matmul          # GEMM squares 512-2048
    PYTHONPATH=python python benchmarks/measure_bf16.py train           # seed MLP/CNN samples/s
    PYTHONPATH=python python benchmarks/measure_bf16.py accuracy        # seed CNN on mnist5k, hold-out

Timed calls alternate between the variants (one round = one call of each), so a change in the
machine's load hits them alike; the table gives medians and best samples over the rounds.
``--cpu-time`` times the calling thread's CPU time (use with OMP_NUM_THREADS=1): steadier than
wall time on a machine shared with other work. Prints Markdown rows and the load average.
"""
from __future__ import annotations

import argparse
import os
import statistics
import time
from typing import Callable, Dict

import numpy as np

import deepkern as dk
from deepkern import _cpu
from deepkern._bench.training import deepkern_train_step, torch_train_step, train_data


def rounds(fns: Dict[str, Callable[[], object]], n: int, clock: Callable[[], float]) -> Dict[str, list]:
    for f in fns.values():
        f()
    times: Dict[str, list] = {k: [] for k in fns}
    for _ in range(n):
        for k, f in fns.items():
            t0 = clock()
            f()
            times[k].append(clock() - t0)
    return times


def matmul(args: argparse.Namespace, clock: Callable[[], float]) -> None:
    rng = np.random.default_rng(0)
    print("| n | fp32 GFLOP/s (median / best) | bf16 GFLOP/s (median / best) | bf16 / fp32 (median / best) |")
    print("|---|---|---|---|")
    for n in (512, 1024, 1536, 2048):
        a, b = (rng.standard_normal((n, n)).astype(np.float32) for _ in range(2))
        t = rounds({"fp32": lambda: _cpu.matmul(a, b, None, False, False, False),
                    "bf16": lambda: _cpu.gemm_bf16(a, b)}, args.rounds, clock)
        med = {k: statistics.median(v) for k, v in t.items()}
        best = {k: min(v) for k, v in t.items()}

        def gf(s: float) -> float:
            return 2 * n ** 3 / s / 1e9
        print(f"| {n} | {gf(med['fp32']):.0f} / {gf(best['fp32']):.0f} | {gf(med['bf16']):.0f} / "
              f"{gf(best['bf16']):.0f} | {med['fp32'] / med['bf16']:.2f}x / {best['fp32'] / best['bf16']:.2f}x |",
              flush=True)


def train(args: argparse.Namespace, clock: Callable[[], float]) -> None:
    import torch
    torch.set_num_threads(_cpu.num_threads())
    print("| model | batch | deepkern fp32 | deepkern bf16 | bf16 / fp32 | torch fp32 | torch autocast bf16 | "
          "torch bf16 / fp32 |")
    print("|---|---|---|---|---|---|---|---|")
    for kind, batch in (("mlp", 100), ("cnn", 128)):
        data = train_data(kind, batch, 2)
        dk32, dk16 = deepkern_train_step(kind), deepkern_train_step(kind)
        t32, t16 = torch_train_step(torch, kind), torch_train_step(torch, kind)

        def with_bf16() -> None:
            with dk.precision("bf16"):
                dk16(*data[0])

        def torch_autocast() -> None:
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
                t16(*data[0])
        t = rounds({"dk32": lambda: dk32(*data[0]), "dk16": with_bf16, "t32": lambda: t32(*data[0]),
                    "t16": torch_autocast}, args.rounds, clock)
        sps = {k: batch / statistics.median(v) for k, v in t.items()}
        print(f"| {kind} | {batch} | {sps['dk32']:,.0f} | {sps['dk16']:,.0f} | {sps['dk16'] / sps['dk32']:.2f}x | "
              f"{sps['t32']:,.0f} | {sps['t16']:,.0f} | {sps['t16'] / sps['t32']:.2f}x |", flush=True)


def accuracy(args: argparse.Namespace) -> None:
    x_train, y_train, x_test, y_test = dk.data.load_mnist5k(seed=0)
    print("| precision | epochs | hold-out accuracy | train s |")
    print("|---|---|---|---|")
    for prec in ("fp32", "bf16"):
        dk.manual_seed(0)
        model = dk.models.CNN()
        t0 = time.perf_counter()
        dk.train.fit(model, x_train, y_train, epochs=args.epochs, batch_size=128, progress=False, precision=prec)
        wall = time.perf_counter() - t0
        with dk.precision(prec):
            acc = dk.train.evaluate(model, x_test, y_test)[1]
        print(f"| {prec} | {args.epochs} | {acc:.4f} | {wall:.0f} |", flush=True)


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("matmul", "train", "accuracy"))
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--cpu-time", action="store_true", help="thread CPU time instead of wall time")
    args = p.parse_args()
    if not _cpu.bf16_available():
        raise SystemExit("this CPU has no AVX512-BF16")
    clock = time.thread_time if args.cpu_time else time.perf_counter
    print(f"load average before: {os.getloadavg()}, deepkern threads {_cpu.num_threads()}, "
          f"{'thread CPU time' if args.cpu_time else 'wall time'}")
    if args.what == "matmul":
        matmul(args, clock)
    elif args.what == "train":
        train(args, clock)
    else:
        accuracy(args)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
