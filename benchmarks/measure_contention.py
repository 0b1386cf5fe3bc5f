"""Training throughput of the seed MLP and CNN on a busy machine: deepkern and PyTorch, with 1
thread and with all cores, beside 0, 1 and 3 spinning processes (the "Runtime under
contention" table of RESULTS.md).

    PYTHONPATH=python python benchmarks/measure_contention.py [--busy 0 1 3] [--seconds 3] [--rounds 3]
        [--builds new=python old=/tmp/old-tree]    # deepkern from each tree, interleaved
        [--build-env on=DEEPKERN_WINOGRAD=on off=DEEPKERN_WINOGRAD=off]   # extra environment per build
        [--impls deepkern deepkern-bf16 torch torch-bf16] [--models mlp cnn cnn150]

Each (framework, model, threads) cell runs in a fresh process (the thread count is set from the
environment before import, as a user would) while this script keeps ``busy`` processes spinning
(``while 1: pass``); it starts and stops them itself. Rates are samples/s: per cell the median of
0.25 s samples, then the median over ``rounds`` repetitions (interleaved, so that the load the
other users of the machine add hits every cell alike).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Dict, List, Tuple

CHILD = r"""
import itertools, json, os, statistics, sys, time
import numpy as np
from deepkern import bench
impl, kind, seconds = sys.argv[1], sys.argv[2], float(sys.argv[3])
batch = {"mlp": 100, "cnn": 128, "cnn150": 32}[kind]
if impl.startswith("torch"):
    import torch
    torch.set_num_threads(int(os.environ["OMP_NUM_THREADS"]))
    step = bench.torch_train_step(torch, kind)
    if impl == "torch-bf16":   # PyTorch's CPU mixed precision: autocast(bfloat16)
        fp32_step = step
        def step(x, y):
            with torch.autocast("cpu", dtype=torch.bfloat16):
                return fp32_step(x, y)
else:
    if impl == "deepkern-bf16":
        import deepkern as dk
        dk.set_precision("bf16")
    step = bench.deepkern_train_step(kind)
data = itertools.cycle(bench.train_data(kind, batch))
for _ in range(3):
    step(*next(data))
samples, end = [], time.perf_counter() + seconds
while time.perf_counter() < end:
    n, t0 = 0, time.perf_counter()
    while time.perf_counter() - t0 < 0.25:
        step(*next(data))
        n += 1
    samples.append(n * batch / (time.perf_counter() - t0))
print(json.dumps(statistics.median(samples)))
"""


def cell(impl: str, kind: str, threads: int, seconds: float, path: str,
         extra_env: Dict[str, str] | None = None) -> float:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), DEEPKERN_NUM_THREADS=str(threads), **(extra_env or {}))
    if path:
        env["PYTHONPATH"] = path
    env.pop("OPENBLAS_CORETYPE", None)
    out = subprocess.run([sys.executable, "-c", CHILD, impl, kind, str(seconds)], env=env,
                         capture_output=True, text=True, check=True)
    return float(json.loads(out.stdout.strip().splitlines()[-1]))


def spinners(n: int) -> List[subprocess.Popen]:
    return [subprocess.Popen([sys.executable, "-c", "while 1: pass"]) for _ in range(n)]


def stop(procs: List[subprocess.Popen]) -> None:
    for p in procs:
        p.kill()
        p.wait()


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--busy", type=int, nargs="+", default=[0, 1, 3])
    parser.add_argument("--seconds", type=float, default=3.0)
    parser.add_argument("--rounds", type=int, default=3)
    parser.add_argument("--impls", nargs="+", default=["deepkern", "torch"],
                        choices=["deepkern", "deepkern-bf16", "torch", "torch-bf16"],
                        help="-bf16: dk.set_precision('bf16') / torch.autocast('cpu', bfloat16)")
    parser.add_argument("--models", nargs="+", default=["mlp", "cnn"], choices=["mlp", "cnn", "cnn150"],
                        help="cnn150: seed 000's 150x150x3 network, batch 32")
    parser.add_argument("--builds", nargs="+", default=[],
                        help="label=PYTHONPATH: time deepkern from each tree (torch once)")
    parser.add_argument("--build-env", nargs="+", default=[],
                        help="label=VAR=VALUE: set VAR for that build's runs (e.g. one tree run two ways)")
    args = parser.parse_args()
    cores = os.cpu_count() or 1
    builds = dict(b.split("=", 1) for b in args.builds) or {"deepkern": os.environ.get("PYTHONPATH", "")}
    # deepkern and deepkern-bf16 run from each build (label, label-bf16); PyTorch from the first
    impls: List[str] = []
    for i in args.impls:
        impls += [b + i[len("deepkern"):] for b in builds] if i.startswith("deepkern") else [i]
    paths = {**builds, **{b + "-bf16": p for b, p in builds.items()}}
    envs: Dict[str, Dict[str, str]] = {}
    for item in args.build_env:
        label, setting = item.split("=", 1)
        var, value = setting.split("=", 1)
        for key in (label, label + "-bf16"):
            envs.setdefault(key, {})[var] = value
    first = next(iter(builds.values()))
    cells: List[Tuple[str, str, int]] = [(i, m, t) for m in args.models for i in impls for t in (1, cores)]
    for busy in args.busy:
        rates: Dict[Tuple[str, str, int], List[float]] = {c: [] for c in cells}
        procs = spinners(busy)
        try:
            time.sleep(0.5)
            for _ in range(args.rounds):
                for c in cells:
                    impl = c[0] if c[0].startswith("torch") else (
                        "deepkern-bf16" if c[0].endswith("-bf16") else "deepkern")
                    rates[c].append(cell(impl, c[1], c[2], args.seconds, paths.get(c[0], first), envs.get(c[0])))
        finally:
            stop(procs)
        load = os.getloadavg()[0]   # 1-minute average at the end of this level
        for impl, kind, threads in cells:
            if threads != 1:
                continue
            one = statistics.median(rates[(impl, kind, 1)])
            alls = statistics.median(rates[(impl, kind, cores)])
            print(f"busy={busy} load1={load:.2f} {kind} {impl}: 1 thread {one:,.0f}, {cores} threads "
                  f"{alls:,.0f} samples/s ({alls / one:.2f}x)  runs 1t={[round(r) for r in rates[(impl, kind, 1)]]}"
                  f" {cores}t={[round(r) for r in rates[(impl, kind, cores)]]}", flush=True)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
