"""GPU kernel timings against cuBLAS (CuPy), cuDNN and softmax (PyTorch, when installed), and
seed-CNN training on the GPU against PyTorch. Writes a Markdown report.

    python benchmarks/gpu_bench.py [--out FILE] [--quick]

Every timing is the median of CUDA-event measurements after warm-up runs, taken side by side
in one process. Needs a CUDA GPU, CuPy and the CUDA module (deepkern._cuda); PyTorch is optional.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import time
from typing import Callable, List, Optional, Tuple

import numpy as np

import deepkern as dk
from deepkern import backends, ops

try:
    import cupy
except ImportError:  # checked in main()
    cupy = None

try:
    import torch
except ImportError:
    torch = None


def time_gpu(fn: Callable[[], object], warmup: int = 3, repeat: int = 20) -> float:
    """Median milliseconds of fn() on the current CuPy stream (CUDA events around each call)."""
    for _ in range(warmup):
        fn()
    cupy.cuda.get_current_stream().synchronize()
    if torch is not None:
        torch.cuda.synchronize()
    times: List[float] = []
    for _ in range(repeat):
        start, stop = cupy.cuda.Event(), cupy.cuda.Event()
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(cupy.cuda.get_elapsed_time(start, stop))
    return statistics.median(times)


def time_torch(fn: Callable[[], object], warmup: int = 3, repeat: int = 20) -> float:
    """Median milliseconds of fn() on PyTorch's current stream."""
    for _ in range(warmup):
        fn()
    torch.cuda.synchronize()
    times: List[float] = []
    for _ in range(repeat):
        start, stop = torch.cuda.Event(enable_timing=True), torch.cuda.Event(enable_timing=True)
        start.record()
        fn()
        stop.record()
        stop.synchronize()
        times.append(start.elapsed_time(stop))
    return statistics.median(times)


Row = Tuple[str, str, float, Optional[float], str, str]


def fmt_row(name: str, shape: str, ours_ms: float, ref_ms: Optional[float], ref_name: str, work: str) -> str:
    ratio = f"{ref_ms / ours_ms:.2f}" if ref_ms else "n/a"
    ref = f"{ref_ms:.3f}" if ref_ms else "n/a"
    return f"| {name} | {shape} | {ours_ms:.3f} | {ref} ({ref_name}) | {ratio} | {work} |"


def rand(*shape: int) -> "cupy.ndarray":
    return cupy.random.standard_normal(shape, dtype=cupy.float32)


def bench_matmul(lines: List[str], sizes) -> None:
    from deepkern.backends import cuda as cuda_backend
    for n in sizes:
        a, b = rand(n, n), rand(n, n)
        flops = 2.0 * n ** 3
        # cuBLAS through CuPy, FP32 math (CuPy uses TF32 only with CUPY_TF32=1)
        cublas = time_gpu(lambda: cupy.matmul(a, b))
        for variant in ("fp32", "tf32"):
            cuda_backend.set_matmul_variant(variant)
            ours = time_gpu(lambda: ops.matmul(a, b))
            ref = cublas
            ref_name = "cuBLAS fp32 via CuPy"
            if variant == "tf32" and torch is not None:
                ta, tb = torch.as_tensor(a, device="cuda"), torch.as_tensor(b, device="cuda")
                torch.backends.cuda.matmul.allow_tf32 = True
                ref = time_torch(lambda: ta @ tb)
                torch.backends.cuda.matmul.allow_tf32 = False
                ref_name = "cuBLAS tf32 via PyTorch"
            lines.append(fmt_row(f"matmul {variant}", f"{n}x{n}x{n}", ours, ref, ref_name,
                                 f"{flops / ours / 1e9:.1f} TFLOP/s"))
        cuda_backend.set_matmul_variant("fp32")
        a_t, b_t, bias = rand(n, 1024), rand(1024, n), rand(n)  # inputs made outside the timed calls
        ours = time_gpu(lambda: ops.matmul(a_t, b_t, bias=bias, activation="relu"))
        lines.append(fmt_row("matmul+bias+relu fp32", f"{n}x1024x{n}", ours, None, "-",
                             f"{2.0 * n * n * 1024 / ours / 1e9:.1f} TFLOP/s"))


def bench_softmax(lines: List[str], rows: int, cols: int) -> None:
    x = rand(rows, cols)
    y = cupy.empty_like(x)
    nbytes = 2.0 * x.nbytes  # read once, write once: the floor
    copy = time_gpu(lambda: cupy.copyto(y, x))
    ours = time_gpu(lambda: ops.softmax(x, axis=-1))
    lines.append(fmt_row("softmax (vs copy)", f"{rows}x{cols}", ours, copy, "cupy copy",
                         f"{nbytes / ours / 1e6:.0f} GB/s = {copy / ours * 100:.0f}% of copy"))
    if torch is not None:
        tx = torch.as_tensor(x, device="cuda")
        ref = time_torch(lambda: torch.softmax(tx, dim=-1))
        lines.append(fmt_row("softmax", f"{rows}x{cols}", ours, ref, "torch.softmax", ""))
    ours = time_gpu(lambda: ops.log_softmax(x, axis=-1))
    lines.append(fmt_row("log_softmax (vs copy)", f"{rows}x{cols}", ours, copy, "cupy copy",
                         f"{nbytes / ours / 1e6:.0f} GB/s"))


def bench_conv(lines: List[str]) -> None:
    shapes = [((64, 1, 28, 28), (32, 1, 3, 3), 1, 0), ((64, 32, 13, 13), (64, 32, 3, 3), 1, 0),
              ((32, 64, 56, 56), (64, 64, 3, 3), 1, 1)]
    for xs, ws, stride, padding in shapes:
        x, w, bias = rand(*xs), rand(*ws), rand(ws[0])
        y = ops.conv2d(x, w, bias, stride, padding)
        g = rand(*y.shape)
        n, c, h, wd = xs
        flops = 2.0 * y.size * c * ws[2] * ws[3]
        fwd = time_gpu(lambda: ops.conv2d(x, w, bias, stride, padding))
        bwd = time_gpu(lambda: ops.conv2d_backward(g, x, w, stride, padding, bias=True))
        ref_f = ref_b = None
        if torch is not None:
            tx = torch.as_tensor(x, device="cuda").requires_grad_(True)
            tw = torch.as_tensor(w, device="cuda").requires_grad_(True)
            tb = torch.as_tensor(bias, device="cuda").requires_grad_(True)
            tg = torch.as_tensor(g, device="cuda")
            torch.backends.cudnn.allow_tf32 = False
            conv = torch.nn.functional.conv2d
            ref_f = time_torch(lambda: conv(tx, tw, tb, stride, padding))
            out = conv(tx, tw, tb, stride, padding)
            ref_b = time_torch(lambda: torch.autograd.grad(out, (tx, tw, tb), tg, retain_graph=True))
        shape = f"x{xs} w{ws} s{stride} p{padding}"
        lines.append(fmt_row("conv2d forward", shape, fwd, ref_f, "cuDNN fp32", f"{flops / fwd / 1e9:.1f} TFLOP/s"))
        lines.append(fmt_row("conv2d backward", shape, bwd, ref_b, "cuDNN fp32",
                             f"{2 * flops / bwd / 1e9:.1f} TFLOP/s"))


def bench_small_ops(lines: List[str]) -> None:
    x = rand(64, 32, 26, 26)
    y = ops.max_pool2d(x, 2)
    g = rand(*y.shape)
    tx = torch.as_tensor(x, device="cuda") if torch is not None else None
    cases = [
        ("max_pool2d 2x2", lambda: ops.max_pool2d(x, 2),
         (lambda: torch.nn.functional.max_pool2d(tx, 2)) if torch else None),
        ("max_pool2d backward", lambda: ops.max_pool2d_backward(g, x, 2), None),
        ("avg_pool2d 2x2", lambda: ops.avg_pool2d(x, 2),
         (lambda: torch.nn.functional.avg_pool2d(tx, 2)) if torch else None),
        ("relu", lambda: ops.relu(x), (lambda: torch.relu(tx)) if torch else None),
    ]
    logits = rand(4096, 1000)
    labels = cupy.random.randint(0, 1000, 4096).astype(cupy.int64)
    if torch is not None:
        tl, tlab = torch.as_tensor(logits, device="cuda"), torch.as_tensor(labels, device="cuda")
    cases.append(("cross_entropy", lambda: ops.cross_entropy(logits, labels),
                  (lambda: torch.nn.functional.cross_entropy(tl, tlab)) if torch else None))
    p, gr, m, v = rand(1 << 22), rand(1 << 22), rand(1 << 22), cupy.abs(rand(1 << 22))
    cases.append(("adam_update 4M", lambda: ops.adam_update(p, gr, m, v, 3), None))
    for name, ours_fn, ref_fn in cases:
        ours = time_gpu(ours_fn)
        ref = time_torch(ref_fn) if ref_fn is not None else None
        lines.append(fmt_row(name, "", ours, ref, "PyTorch" if ref else "-", ""))


def bench_training(lines: List[str], samples: int, epochs: int) -> None:
    """Seed CNN on random MNIST-sized data; relies on dk.models.CNN / dk.train.fit(device='cuda')."""
    rng = np.random.default_rng(0)
    X = rng.standard_normal((samples, 1, 28, 28)).astype(np.float32)
    y = rng.integers(0, 10, samples).astype(np.int64)
    try:
        model = dk.models.CNN()
        start = time.perf_counter()
        dk.train.fit(model, X, y, epochs=epochs, batch_size=64, optimizer="adam", lr=1e-3, progress=False,
                     device="cuda")
        cupy.cuda.Device().synchronize()
        ours = (time.perf_counter() - start) / epochs
    except Exception as exc:  # the training stack is other modules' work: report, do not crash the check
        lines.append(f"| train CNN | {samples} samples | failed: {type(exc).__name__}: {exc} | | | |")
        return
    ref = None
    if torch is not None:
        nn = torch.nn
        tmodel = nn.Sequential(nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(),
                               nn.MaxPool2d(2), nn.Flatten(), nn.Linear(64 * 5 * 5, 64), nn.ReLU(),
                               nn.Linear(64, 10)).cuda()
        opt = torch.optim.Adam(tmodel.parameters(), lr=1e-3)
        tX, ty = torch.as_tensor(X, device="cuda"), torch.as_tensor(y, device="cuda")
        torch.cuda.synchronize()
        start = time.perf_counter()
        for _ in range(epochs):
            perm = torch.randperm(samples, device="cuda")
            for i in range(0, samples, 64):
                idx = perm[i:i + 64]
                opt.zero_grad()
                loss = torch.nn.functional.cross_entropy(tmodel(tX[idx]), ty[idx])
                loss.backward()
                opt.step()
        torch.cuda.synchronize()
        ref = (time.perf_counter() - start) / epochs
    ratio = f"{ref / ours:.2f}" if ref else "n/a"
    ref_s = f"{ref * 1e3:.0f}" if ref else "n/a"
    lines.append(f"| train CNN (1 epoch, batch 64) | {samples} samples | {ours * 1e3:.0f} | {ref_s} (PyTorch CUDA) "
                 f"| {ratio} | wall ms per epoch, host data |")


def main(argv: Optional[List[str]] = None) -> int:
    global torch
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", help="also write the Markdown report to this file")
    parser.add_argument("--quick", action="store_true", help="smaller sizes (a smoke run)")
    args = parser.parse_args(argv)
    if cupy is None or not backends.available("cuda"):
        print(f"deepkern's cuda backend is not usable: {backends.reason_unavailable('cuda')}", file=sys.stderr)
        return 2
    backends.set_backend("cuda")
    if torch is not None and not torch.cuda.is_available():
        torch = None  # a CPU-only torch wheel: compare with CuPy only
    info = dk.info()["gpu"]
    gpu = info["devices"][0]["name"] if info.get("devices") else "?"
    lines = [f"# deepkern GPU check on {gpu} (CUDA runtime {info.get('runtime_version')}, "
             f"driver {info.get('driver_version')})", "",
             "Median of CUDA-event timings after warm-up; ratio = reference time / ours (>1: ours faster).", "",
             "| op | shape | ours ms | reference ms | ratio | throughput |",
             "| --- | --- | --- | --- | --- | --- |"]
    sections = [
        ("matmul", lambda: bench_matmul(lines, [1024] if args.quick else [1024, 4096])),
        ("softmax", lambda: bench_softmax(lines, *((1024, 1024) if args.quick else (8192, 8192)))),
        ("conv2d", lambda: bench_conv(lines)),
        ("small ops", lambda: bench_small_ops(lines)),
        ("training", lambda: bench_training(lines, 2048 if args.quick else 12800, 1)),
    ]
    for name, run in sections:
        try:
            run()
        except Exception as exc:  # keep the other sections' numbers
            lines.append(f"| {name} | | failed: {type(exc).__name__}: {exc} | | | |")
        print(f"[gpu_bench] {name} done", file=sys.stderr)
    report = "\n".join(lines) + "\n"
    print(report)
    if args.out:
        with open(args.out, "w", encoding="utf-8") as fh:
            fh.write(report)
    return 0


if __name__ == "__main__":
    sys.exit(main())
