"""The framework's own cost per training step (issue P12): the Python and NumPy work between the kernel calls.

Two measurements, each printed as one JSON line (microseconds):

* ``toy``: the seed MLP's structure (Linear, ReLU, Linear, ReLU, Linear; cross-entropy; Adam) at toy
  sizes (batch 4, 8 features), where the kernels are nearly free: the whole step is framework work.
  Mean of 5 rounds of 2000 steps, the 10th and 50th percentile of single steps, and the median of
  each part (zero_grad, forward, loss, backward, optimizer step, reading the loss).
* ``mlp``: the seed MLP (784-256-256-10, batch 100, Adam) as ``bench.deepkern_train_step`` builds it,
  with the C++ bindings timed from inside: per step the time in kernel calls and the rest, per part.

``--trees A B`` runs each measurement in fresh processes, alternating between the source trees A
and B (``python/`` directories) for ``--rounds`` rounds, and prints the medians and the median of
the per-round ratios B/A: on a shared machine, only such paired rounds compare two versions.

    PYTHONPATH=python python benchmarks/measure_step_overhead.py toy|mlp [--threads N]
    python benchmarks/measure_step_overhead.py toy --trees /tmp/before/python python --rounds 10
"""
from __future__ import annotations

import argparse
import itertools
import json
import os
import statistics
import subprocess
import sys
import time
import types
from typing import Callable, Dict, List

import numpy as np

PARTS = ("zero_grad", "forward", "loss", "backward", "opt_step", "item")


def _parts_step(model, loss_fn, opt, timer: Callable[[], float]) -> Callable:
    """step(x, y) -> [(perf_counter, timer())] at the start and after each of PARTS."""
    from deepkern.autograd import Tensor

    def step(x, y):
        marks = [(time.perf_counter(), timer())]
        opt.zero_grad()
        marks.append((time.perf_counter(), timer()))
        out = model(Tensor(x))
        marks.append((time.perf_counter(), timer()))
        loss = loss_fn(out, y)
        marks.append((time.perf_counter(), timer()))
        loss.backward()
        marks.append((time.perf_counter(), timer()))
        opt.step()
        marks.append((time.perf_counter(), timer()))
        float(np.asarray(loss.data))
        marks.append((time.perf_counter(), timer()))
        return marks
    return step


def toy() -> Dict[str, float]:
    from deepkern import nn, optim
    rng = np.random.default_rng(0)
    x, y = rng.standard_normal((4, 8), dtype=np.float32), rng.integers(0, 2, 4)
    model = nn.Sequential(nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 8), nn.ReLU(), nn.Linear(8, 2))
    step = _parts_step(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), lambda: 0.0)
    for _ in range(500):
        step(x, y)
    means = []
    for _ in range(5):
        t0 = time.perf_counter()
        for _ in range(2000):
            step(x, y)
        means.append((time.perf_counter() - t0) / 2000)
    marks = [step(x, y) for _ in range(3000)]
    whole = np.array([m[-1][0] - m[0][0] for m in marks]) * 1e6
    parts = np.median(np.array([[b[0] - a[0] for a, b in zip(m, m[1:])] for m in marks]), axis=0) * 1e6
    out = {"step": statistics.median(means) * 1e6, "p10": float(np.percentile(whole, 10)),
           "p50": float(np.percentile(whole, 50))}
    out.update(zip(PARTS, parts.tolist()))
    return out


def mlp() -> Dict[str, float]:
    from deepkern import backends, nn, optim
    from deepkern._bench.training import _seed_layers, train_data
    kern = backends.load("cpu")
    spent = [0.0]

    def timed(fn):
        def call(*args, **kwargs):
            t = time.perf_counter()
            try:
                return fn(*args, **kwargs)
            finally:
                spent[0] += time.perf_counter() - t
        return call

    # the backend's Python wrappers stay framework work: the bindings below them are timed
    binding = kern._cpu
    kern._cpu = types.SimpleNamespace(**{n: getattr(binding, n) for n in dir(binding) if not n.startswith("__")})
    for name in ("matmul", "matmul_backward", "relu_backward", "cross_entropy", "cross_entropy_backward"):
        setattr(kern._cpu, name, timed(getattr(binding, name)))
    kern.adam_update_many = timed(binding.adam_update_many)
    model = nn.Sequential(*_seed_layers(nn, "mlp"))
    step = _parts_step(model, nn.CrossEntropyLoss(), optim.Adam(model.parameters(), lr=1e-3), lambda: spent[0])
    data = itertools.cycle(train_data("mlp", 100))
    for _ in range(30):
        step(*next(data))
    rows = []
    for _ in range(600):
        m = step(*next(data))
        rest = [(b[0] - a[0]) - (b[1] - a[1]) for a, b in zip(m, m[1:])]
        rows.append([m[-1][0] - m[0][0], m[-1][1] - m[0][1], sum(rest)] + rest)
    med = np.median(np.array(rows), axis=0) * 1e6
    out = {"step": med[0], "kernels": med[1], "rest": med[2]}
    out.update({f"rest_{p}": v for p, v in zip(PARTS, med[3:])})
    return {k: float(v) for k, v in out.items()}


def _paired(what: str, trees: List[str], rounds: int, threads: int) -> None:
    """Alternating fresh processes per tree; medians and the median per-round ratio trees[1] / trees[0]."""
    runs: Dict[str, List[Dict[str, float]]] = {t: [] for t in trees}
    for r in range(rounds):
        for tree in trees if r % 2 == 0 else trees[::-1]:
            env = dict(os.environ, PYTHONPATH=tree, DEEPKERN_NUM_THREADS=str(threads))
            line = subprocess.run([sys.executable, __file__, what], env=env, capture_output=True, text=True,
                                  check=True).stdout.strip().splitlines()[-1]
            runs[tree].append(json.loads(line))
    with open("/proc/loadavg") as f:
        load = f.read().split()[0]
    a, b = (runs[t] for t in trees)
    print(f"{what}, {threads} thread(s), {rounds} paired rounds, load {load} at the end")
    for key in a[0]:
        ratio = statistics.median(y[key] / x[key] for x, y in zip(a, b) if x[key])
        print(f"  {key:16s} {statistics.median(x[key] for x in a):9.1f} -> {statistics.median(y[key] for y in b):9.1f}"
              f"   ratio {ratio:.2f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("what", choices=("toy", "mlp"))
    parser.add_argument("--threads", type=int, default=None, help="default: 1 for toy, 2 for mlp")
    parser.add_argument("--trees", nargs=2, metavar=("BEFORE", "AFTER"), help="python/ trees to compare")
    parser.add_argument("--rounds", type=int, default=10)
    args = parser.parse_args()
    threads = args.threads or (1 if args.what == "toy" else 2)
    if args.trees:
        _paired(args.what, args.trees, args.rounds, threads)
        return
    if args.threads:
        import deepkern as dk
        dk.set_num_threads(threads)
    print(json.dumps({k: round(v, 2) for k, v in (toy() if args.what == "toy" else mlp()).items()}))


if __name__ == "__main__":
    main()
