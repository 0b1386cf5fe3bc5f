"""Peak resident memory while training the seed CNN (28x28x1, batch 128) and seed 000's 150x150x3
network (4 convolutions, batch 32), deepkern vs PyTorch CPU, each in its own process.

    PYTHONPATH=python python benchmarks/measure_rss.py [--steps 5]

Each child builds the model, takes one warm-up Adam step and ``--steps`` more on fixed random
batches, and reports ``resource.getrusage(RUSAGE_SELF).ru_maxrss`` (the peak) after the imports
and model, and at the end: their difference is what training added. Prints Markdown rows.
"""
from __future__ import annotations

import argparse
import json
import os
import resource
import subprocess
import sys
from typing import Any, List

# The networks of deepkern._bench.training.SEED_NETS ("cnn", "cnn150"), written out here so that the
# PyTorch child never imports deepkern (its peak would include deepkern's modules).
NETS = {"seed CNN": ((1, 28, 28), 128, 10), "150x150 CNN": ((3, 150, 150), 32, 2)}


def _layers(nn: Any, net: str) -> List[Any]:
    if net == "seed CNN":
        return [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10)]
    out: List[Any] = []
    for c_in, c_out in ((3, 32), (32, 64), (64, 64), (64, 64)):   # 150 -> 74 -> 36 -> 17 -> 7
        out += [nn.Conv2d(c_in, c_out, 3), nn.ReLU(), nn.MaxPool2d(2)]
    return out + [nn.Flatten(), nn.Linear(64 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 2)]


def _peak_mib() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024.0   # KiB on Linux


def child(framework: str, net: str, steps: int) -> None:
    import numpy as np
    shape, batch, classes = NETS[net]
    rng = np.random.default_rng(0)
    x = rng.random((batch,) + shape, dtype=np.float32)
    y = rng.integers(0, classes, batch).astype(np.int64)
    if framework == "torch":
        import torch
        model = torch.nn.Sequential(*_layers(torch.nn, net))
        opt, loss_fn = torch.optim.Adam(model.parameters()), torch.nn.CrossEntropyLoss()
        xt, yt = torch.from_numpy(x), torch.from_numpy(y)

        def step() -> None:
            opt.zero_grad()
            loss_fn(model(xt), yt).backward()
            opt.step()
    else:
        import deepkern as dk
        model = dk.nn.Sequential(*_layers(dk.nn, net))
        opt, loss_fn = dk.optim.Adam(model.parameters()), dk.nn.CrossEntropyLoss()

        def step() -> None:
            opt.zero_grad()
            loss_fn(model(dk.Tensor(x)), y).backward()
            opt.step()
    before = _peak_mib()
    for _ in range(steps + 1):
        step()
    print(json.dumps({"before": before, "peak": _peak_mib()}))


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("--steps", type=int, default=5)
    p.add_argument("--child", nargs=2, metavar=("FRAMEWORK", "NET"), help=argparse.SUPPRESS)
    args = p.parse_args()
    if args.child:
        child(args.child[0], args.child[1], args.steps)
        return
    print(f"load average: {os.getloadavg()}")
    print("| network | batch | framework | peak RSS MiB | after imports + model MiB | training added MiB |")
    print("|---|---|---|---|---|---|")
    for net, (_, batch, _) in NETS.items():
        for framework in ("deepkern", "torch"):
            out = subprocess.run([sys.executable, __file__, "--steps", str(args.steps), "--child", framework, net],
                                 check=True, capture_output=True, text=True).stdout
            r = json.loads(out.strip().splitlines()[-1])
            print(f"| {net} | {batch} | {framework} | {r['peak']:.0f} | {r['before']:.0f} | "
                  f"{r['peak'] - r['before']:.0f} |", flush=True)


if __name__ == "__main__":
    main()
