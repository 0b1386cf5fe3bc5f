"""Data-parallel training throughput of the seed MLP and CNN: 1 rank x 1 thread, 1 rank x 2
threads, 2 ranks x 1 thread, with the gradient allreduce's cost and the overlap on and off.

    python benchmarks/distributed_bench.py             # runs the three layouts, prints markdown
    python benchmarks/distributed_bench.py --scaling-model   # the ring-allreduce model alone
    mpiexec -n 2 python benchmarks/distributed_bench.py --worker   # one layout (used by the above)

Every layout trains with the same global batch (MLP 100, CNN 128: per rank 50 and 64 on two
ranks), one Adam step per batch on fixed MNIST-shaped batches. A step is zero_grad, forward,
backward, (gradient averaging), optimizer step; its median over the timed steps gives
samples/s = global batch / step time. On several ranks three modes of gradient averaging
(overlap with the progress thread, overlap from the hooks only, after backward) alternate in
blocks so machine load hits them alike; "wait" is the median time the step spent in
``GradientReducer.synchronize`` (the communication backward did not hide, plus any wait for
a slower rank), "reduced during backward" the share of gradient bytes whose allreduce had
finished before backward returned, and "allreduce" the median time of a lone allreduce of
all gradient bytes (no compute around it).
"""
from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import time
from typing import Any, Dict, List

import numpy as np

GLOBAL_BATCH = {"mlp": 100, "cnn": 128}
LAYOUTS = [("1 rank x 1 thread", 1, 1), ("1 rank x 2 threads", 1, 2), ("2 ranks x 1 thread", 2, 1)]


def _model(kind: str) -> Any:
    import deepkern as dk
    from deepkern._bench.training import _seed_layers
    dk.manual_seed(0)
    return dk.nn.Sequential(*_seed_layers(dk.nn, kind))


def _step_times(kind: str, batch: int, steps: int, reducer_factory: Any, blocks: int) -> Dict[str, Any]:
    import deepkern as dk
    from deepkern._bench.training import train_data

    model = _model(kind)
    loss_fn = dk.nn.CrossEntropyLoss()
    opt = dk.optim.Adam(model.parameters(), lr=1e-3)
    data = train_data(kind, batch, n_batches=4)
    modes = ["single"] if reducer_factory is None else ["overlap + thread", "overlap, hooks only", "after backward"]
    times: Dict[str, List[float]] = {m: [] for m in modes}
    waits: Dict[str, List[float]] = {m: [] for m in modes}
    hidden: Dict[str, List[float]] = {m: [] for m in modes}
    for block in range(blocks):
        for mode in modes:
            reducer = None if reducer_factory is None else reducer_factory(model, mode)
            for i in range(steps + 3):  # 3 warm-up steps per block
                x, y = data[i % len(data)]
                start = time.perf_counter()
                opt.zero_grad()
                loss_fn(model(dk.Tensor(x)), y).backward()
                wait = reducer.synchronize() if reducer is not None else 0.0
                opt.step()
                if i >= 3:
                    times[mode].append(time.perf_counter() - start)
                    waits[mode].append(wait)
            if reducer is not None:
                hidden[mode].append(reducer.hidden_bytes / (reducer.steps * sum(reducer.bucket_sizes)))
                reducer.close()
    return {m: {"step_ms": 1e3 * statistics.median(times[m]), "wait_ms": 1e3 * statistics.median(waits[m]),
                "hidden": statistics.median(hidden[m]) if hidden[m] else 0.0} for m in modes}


def _lone_allreduce_ms(nbytes: int, repeats: int = 50) -> float:
    from deepkern import distributed as dist
    buf = np.ones(nbytes // 4, dtype=np.float32)
    samples = []
    for _ in range(repeats):
        dist.barrier()
        start = time.perf_counter()
        dist.allreduce_(buf)
        samples.append(time.perf_counter() - start)
    return 1e3 * statistics.median(samples)


def worker(steps: int, blocks: int, bucket_mb: float) -> None:
    """One layout: the launcher's ranks and the environment's thread count."""
    from deepkern import distributed as dist
    ranks = 1
    if dist.launched_under_mpi():
        dist.init()
        ranks = dist.world_size()
    out = {}
    for kind in ("mlp", "cnn"):
        batch = GLOBAL_BATCH[kind] // ranks
        factory = None
        if ranks > 1:
            def factory(model: Any, mode: str) -> Any:
                return dist.GradientReducer(model.parameters(), bucket_mb=bucket_mb, overlap=mode != "after backward",
                                            progress_thread=mode == "overlap + thread")
        result = _step_times(kind, batch, steps, factory, blocks)
        grad_bytes = 4 * sum(p.size for p in _model(kind).parameters())
        entry = {"ranks": ranks, "batch_per_rank": batch, "grad_bytes": grad_bytes, "modes": result}
        if ranks > 1:
            entry["allreduce_ms"] = _lone_allreduce_ms(grad_bytes)
        out[kind] = entry
    if dist.rank() == 0:
        print("RESULT " + json.dumps(out))


def _run_layout(ranks: int, threads: int, args: argparse.Namespace) -> Dict[str, Any]:
    env = dict(os.environ, OMP_NUM_THREADS=str(threads), DEEPKERN_NUM_THREADS=str(threads))
    cmd = [sys.executable, os.path.abspath(__file__), "--worker", "--steps", str(args.steps),
           "--blocks", str(args.blocks), "--bucket-mb", str(args.bucket_mb)]
    if ranks > 1:
        cmd = ["mpiexec", "-n", str(ranks)] + cmd
    out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
    line = [ln for ln in out.splitlines() if ln.startswith("RESULT ")][-1]
    return json.loads(line[len("RESULT "):])


# Per-machine compute of one step at the seed batch, from "Training step, final check" in
# RESULTS.md (this 2-core machine, 2 threads): MLP ~107,000 samples/s at batch 100, CNN ~7,900 at 128.
MEASURED_STEP_MS = {"mlp": 100 / 107_000 * 1e3, "cnn": 128 / 7_900 * 1e3}
GRADIENT_BYTES = {"mlp": 4 * 269_322, "cnn": 4 * 121_930}
LATENCY_US = 10.0  # per ring hop and message, a typical TCP/Ethernet figure


def ring_allreduce_ms(grad_bytes: float, ranks: int, gbit_s: float, latency_us: float = LATENCY_US) -> float:
    """Ring allreduce: 2(N-1)/N of the bytes over each link, in 2(N-1) latency-bound hops."""
    if ranks < 2:
        return 0.0
    return 1e3 * (2 * (ranks - 1) / ranks * grad_bytes / (gbit_s * 1e9 / 8)) + 2 * (ranks - 1) * latency_us / 1e3


def stop_scaling_n(kind: str, gbit_s: float, fixed_global_batch: bool = False, limit: int = 100_000) -> int:
    """The smallest N whose allreduce takes as long as a rank's compute per step (efficiency
    50% without overlap; with full overlap the step is communication-bound from there on).
    Per-rank batch fixed (weak scaling), or the global batch split N ways (strong scaling)."""
    for n in range(2, limit):
        compute = MEASURED_STEP_MS[kind] / (n if fixed_global_batch else 1)
        if ring_allreduce_ms(GRADIENT_BYTES[kind], n, gbit_s) >= compute:
            return n
    return limit


def scaling_table() -> str:
    rows = ["| model | gradient | compute per step | link | allreduce N=2 | N=8 | N=64 | efficiency N=8 | "
            "comm = compute at N (batch per rank fixed) | (global batch fixed) |",
            "|---|---|---|---|---|---|---|---|---|---|"]
    for kind in ("mlp", "cnn"):
        compute = MEASURED_STEP_MS[kind]
        for gbit in (10, 100):
            t = {n: ring_allreduce_ms(GRADIENT_BYTES[kind], n, gbit) for n in (2, 8, 64)}
            rows.append(f"| {kind} | {GRADIENT_BYTES[kind] / 1e6:.2f} MB | {compute:.2f} ms | {gbit} Gbit/s | "
                        f"{t[2]:.3f} ms | {t[8]:.3f} ms | {t[64]:.3f} ms | {compute / (compute + t[8]):.0%} | "
                        f"{stop_scaling_n(kind, gbit)} | {stop_scaling_n(kind, gbit, fixed_global_batch=True)} |")
    return "\n".join(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--worker", action="store_true", help="measure one layout (run under mpiexec)")
    parser.add_argument("--steps", type=int, default=30, help="timed steps per block and mode")
    parser.add_argument("--blocks", type=int, default=3, help="alternating blocks per mode")
    parser.add_argument("--bucket-mb", type=float, default=0.25, help="gradient bucket size")
    parser.add_argument("--scaling-model", action="store_true", help="print the ring-allreduce model only")
    args = parser.parse_args()
    if args.scaling_model:
        print(scaling_table())
        return
    if args.worker:
        worker(args.steps, args.blocks, args.bucket_mb)
        return
    print(f"load before: {os.getloadavg()}")
    rows = []
    for name, ranks, threads in LAYOUTS:
        result = _run_layout(ranks, threads, args)
        for kind, entry in result.items():
            for mode, t in entry["modes"].items():
                rate = GLOBAL_BATCH[kind] / (t["step_ms"] / 1e3)
                share = f"{t['wait_ms']:.2f} ms ({t['wait_ms'] / t['step_ms']:.0%})" if ranks > 1 else "-"
                done = f"{t['hidden']:.0%}" if ranks > 1 else "-"
                lone = f"{entry['allreduce_ms']:.2f} ms" if ranks > 1 else "-"
                rows.append(f"| {kind} | {name} | {mode} | {entry['batch_per_rank']} | {t['step_ms']:.2f} | "
                            f"{rate:,.0f} | {share} | {done} | {lone} |")
    print(f"load after: {os.getloadavg()}")
    print("| model | layout | gradient averaging | batch per rank | step ms | samples/s | wait in step | "
          "reduced during backward | lone allreduce |")
    print("|---|---|---|---|---|---|---|---|---|")
    print("\n".join(rows))


if __name__ == "__main__":
    main()
