"""bf16 compute (``dk.set_precision("bf16")``) against fp32, PyTorch's CPU autocast(bfloat16) beside it.

    PYTHONPATH=python python benchmarks/measure_bf16.py matmul          # GEMM squares 512-2048
    PYTHONPATH=python python benchmarks/measure_bf16.py conv            # seed CNN conv layers, fwd / bwd
    PYTHONPATH=python python benchmarks/measure_bf16.py train           # seed MLP/CNN samples/s
    PYTHONPATH=python python benchmarks/measure_bf16.py accuracy        # seed CNN on mnist5k, hold-out
    PYTHONPATH=python python benchmarks/measure_bf16.py accuracy --torch --epochs 5 --seeds 5

Timed calls alternate between the variants of one library (one round = one call of each), so a
change in the machine's load hits them alike; the table gives medians and best samples over the
rounds. Each library runs in its own block after a pause (a finished library's thread pool keeps
spinning for ~0.1 s and would steal a core from the next one). ``--threads`` sets deepkern's and
PyTorch's threads (default 2). ``--cpu-time`` times the calling thread's CPU time (use with
``--threads 1``): steadier than wall time on a machine shared with other work. Prints Markdown
rows and the load average.
"""
from __future__ import annotations

import argparse
import contextlib
import os
import statistics
import time
from typing import Callable, Dict

import numpy as np

import deepkern as dk
from deepkern import _cpu
from deepkern._bench.training import _seed_layers, deepkern_train_step, torch_train_step, train_data


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


PRECS = ("fp32", "bf16")


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


def conv(args: argparse.Namespace, clock: Callable[[], float]) -> None:
    """conv2d forward and backward (input and weight gradients) of the seed CNN's layers, batch 128."""
    rng = np.random.default_rng(0)
    print("| layer | fp32 fwd ms | bf16 fwd ms | fwd bf16 / fp32 | fp32 bwd ms | bf16 bwd ms | bwd bf16 / fp32 |")
    print("|---|---|---|---|---|---|---|")
    for name, xs, ws, want_input in (("conv1 1->32 on 28x28", (128, 1, 28, 28), (32, 1, 3, 3), False),
                                     ("conv2 32->64 on 13x13", (128, 32, 13, 13), (64, 32, 3, 3), True)):
        x, w = rng.standard_normal(xs, dtype=np.float32), rng.standard_normal(ws, dtype=np.float32)
        b = rng.standard_normal(ws[0], dtype=np.float32)
        g = rng.standard_normal(_cpu.conv2d(x, w, b, (1, 1), (0, 0)).shape, dtype=np.float32)
        row = []
        for what in ("fwd", "bwd"):
            if what == "fwd":
                fns = {p: (lambda p=p: _cpu.conv2d(x, w, b, (1, 1), (0, 0), bf16=p == "bf16")) for p in PRECS}
            else:
                fns = {p: (lambda p=p: _cpu.conv2d_backward(g, x, w, (1, 1), (0, 0), True, want_input,
                                                            bf16=p == "bf16")) for p in PRECS}
            med = {k: statistics.median(v) * 1e3 for k, v in rounds(fns, args.rounds, clock).items()}
            row += [f"{med['fp32']:.2f}", f"{med['bf16']:.2f}", f"{med['fp32'] / med['bf16']:.2f}x"]
        print(f"| {name} | " + " | ".join(row) + " |", flush=True)


def _cycle(step: Callable, data: list) -> Callable[[], None]:
    """One training step per call over the fixed batches in turn."""
    counter = iter(range(1 << 62))

    def one() -> None:
        step(*data[next(counter) % len(data)])
    return one


def train(args: argparse.Namespace, clock: Callable[[], float]) -> None:
    import torch
    torch.set_num_threads(args.threads)
    print("| model | batch | deepkern fp32 | deepkern bf16 | bf16 / fp32 | torch fp32 | torch autocast bf16 | "
          "torch bf16 / fp32 | deepkern bf16 / torch autocast |")
    print("|---|---|---|---|---|---|---|---|---|")
    for kind, batch in (("mlp", 100), ("cnn", 128)):
        data = train_data(kind, batch, 4)
        dk32, dk16 = _cycle(deepkern_train_step(kind), data), _cycle(deepkern_train_step(kind), data)
        t32, t16 = _cycle(torch_train_step(torch, kind), data), _cycle(torch_train_step(torch, kind), data)

        def with_bf16() -> None:
            with dk.precision("bf16"):
                dk16()

        def torch_autocast() -> None:
            with torch.autocast(device_type="cpu", dtype=torch.bfloat16):
                t16()
        time.sleep(1.0)
        t = rounds({"dk32": dk32, "dk16": with_bf16}, args.rounds, clock)   # deepkern's block
        time.sleep(1.0)   # deepkern's pool idle before PyTorch's block (and the reverse next model)
        t.update(rounds({"t32": t32, "t16": torch_autocast}, args.rounds, clock))
        sps = {k: batch / statistics.median(v) for k, v in t.items()}
        print(f"| {kind} | {batch} | {sps['dk32']:,.0f} | {sps['dk16']:,.0f} | {sps['dk16'] / sps['dk32']:.2f}x | "
              f"{sps['t32']:,.0f} | {sps['t16']:,.0f} | {sps['t16'] / sps['t32']:.2f}x | "
              f"{sps['dk16'] / sps['t16']:.2f}x |", flush=True)


def torch_accuracy(torch, seed: int, epochs: int, autocast: bool, data: tuple) -> float:
    """The seed CNN in PyTorch (Adam lr 1e-3, batch 128, shuffled per epoch), fp32 or autocast(bfloat16):
    hold-out accuracy."""
    x_train, y_train, x_test, y_test = (torch.from_numpy(a) for a in data)
    torch.manual_seed(seed)
    model = torch.nn.Sequential(*_seed_layers(torch.nn, "cnn"))
    opt, loss_fn = torch.optim.Adam(model.parameters(), lr=1e-3), torch.nn.CrossEntropyLoss()
    mode = (lambda: torch.autocast("cpu", dtype=torch.bfloat16)) if autocast else contextlib.nullcontext
    rng = np.random.default_rng(seed)
    for _ in range(epochs):
        order = torch.from_numpy(rng.permutation(len(x_train)))
        for i in range(0, len(order), 128):
            idx = order[i:i + 128]
            opt.zero_grad()
            with mode():
                loss = loss_fn(model(x_train[idx]), y_train[idx])
            loss.backward()
            opt.step()
    with torch.no_grad(), mode():
        return float((model(x_test).argmax(1) == y_test).float().mean())


def accuracy(args: argparse.Namespace) -> None:
    """Seed CNN, mnist5k (4,000 train / 1,000 test), Adam, batch 128: hold-out accuracy per seed,
    deepkern fp32 / bf16 and (with --torch) PyTorch fp32 / autocast(bfloat16)."""
    data = dk.data.load_mnist5k(seed=0)
    x_train, y_train, x_test, y_test = data
    torch = None
    if args.torch:
        import torch
        torch.set_num_threads(args.threads)
    print("| seed | epochs | fp32 hold-out | bf16 hold-out | bf16 - fp32 (points) | fp32 train s | bf16 train s |"
          + (" torch fp32 | torch autocast bf16 |" if torch else ""))
    print("|---|---|---|---|---|---|---|" + ("---|---|" if torch else ""))
    diffs = []
    for seed in range(args.seeds):
        acc, wall = {}, {}
        for prec in PRECS:
            dk.manual_seed(seed)
            model = dk.models.CNN()
            t0 = time.perf_counter()
            dk.train.fit(model, x_train, y_train, epochs=args.epochs, batch_size=128, progress=False,
                         precision=prec, seed=seed)
            wall[prec] = time.perf_counter() - t0
            with dk.precision(prec):
                acc[prec] = dk.train.evaluate(model, x_test, y_test)[1]
        diffs.append(100 * (acc["bf16"] - acc["fp32"]))
        row = (f"| {seed} | {args.epochs} | {acc['fp32']:.4f} | {acc['bf16']:.4f} | {diffs[-1]:+.1f} | "
               f"{wall['fp32']:.0f} | {wall['bf16']:.0f} |")
        if torch:
            time.sleep(1.0)   # deepkern's pool idle before PyTorch's block
            row += "".join(f" {torch_accuracy(torch, seed, args.epochs, ac, data):.4f} |" for ac in (False, True))
        print(row, flush=True)
    print(f"mean bf16 - fp32 over {len(diffs)} seeds: {statistics.mean(diffs):+.2f} points")


def main() -> None:
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("what", choices=("matmul", "conv", "train", "accuracy"))
    p.add_argument("--rounds", type=int, default=9)
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--seeds", type=int, default=3, help="accuracy: training runs (weight/shuffle seeds) per precision")
    p.add_argument("--threads", type=int, default=2, help="deepkern's and PyTorch's threads")
    p.add_argument("--torch", action="store_true", help="accuracy: PyTorch fp32 and autocast(bfloat16) beside it")
    p.add_argument("--cpu-time", action="store_true", help="thread CPU time instead of wall time")
    args = p.parse_args()
    if not _cpu.bf16_available():
        raise SystemExit("this CPU has no AVX512-BF16")
    clock = time.thread_time if args.cpu_time else time.perf_counter
    dk.set_num_threads(args.threads)
    print(f"load average before: {os.getloadavg()}, deepkern threads {_cpu.num_threads()}, "
          f"{'thread CPU time' if args.cpu_time else 'wall time'}")
    if args.what == "matmul":
        matmul(args, clock)
    elif args.what == "conv":
        conv(args, clock)
    elif args.what == "train":
        train(args, clock)
    else:
        accuracy(args)
    print(f"load average after: {os.getloadavg()}")


if __name__ == "__main__":
    main()
