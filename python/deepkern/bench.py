"""``deepkern bench``: the kernel table and the training benchmark.

For every op and shape the table gives deepkern's time per call and rate (GFLOP/s for
compute-bound ops, GB/s of the fewest bytes the op must read and write for memory-bound
ones), vectorised NumPy's time (``deepkern._bench_numpy``) and PyTorch CPU's (when
installed), with ratios peer time / deepkern time (> 1: deepkern is faster). Results are
compared before anything is timed; a disagreement stops the run. Times are medians of the
samples, or with ``--stat min`` the best sample (steadier when other work shares the cores).

    deepkern bench                 # full table, about 1 minute on 2 cores
    deepkern bench --quick         # fewer shapes and repeats, about 20 s
    deepkern bench --train         # also samples/s of the seed MLP and CNN (Adam)
    deepkern bench --repeat 3 --threads 1 --out-dir results/

It writes kernels.md (and kernels-min.md or kernels-median.md, the other statistic) and a
kernels.png bar chart of the ratios into --out-dir.

The same cases feed the pytest-benchmark suites in ``benchmarks/``.
"""
from __future__ import annotations

import argparse
import concurrent.futures
import contextlib
import datetime
import os
import platform
import statistics
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple

import numpy as np

from . import _bench_numpy as npk
from . import backends, ops

PROFILES = ("full", "quick", "smoke")
IMPLS = ("deepkern", "numpy", "torch")


class BenchError(RuntimeError):
    """The benchmark cannot run as asked (no GPU backend, missing module)."""


class MismatchError(AssertionError):
    """A peer's result disagrees with deepkern's: the timings would compare different work."""


# ---------------------------------------------------------------------------- the device
@dataclass
class Device:
    """Where the arrays live: ``cpu`` (NumPy) or ``cuda`` (CuPy), and how to wait for work."""
    name: str = "cpu"

    @property
    def is_gpu(self) -> bool:
        return self.name == "cuda"

    def array(self, a: np.ndarray) -> Any:
        if self.is_gpu:
            import cupy
            return cupy.asarray(a)
        return a

    def sync(self) -> None:
        if self.is_gpu:
            import cupy
            cupy.cuda.Device().synchronize()

    def torch_tensor(self, torch: Any, a: Any) -> Any:
        return torch.as_tensor(a, device="cuda") if self.is_gpu else torch.from_numpy(a)

    def torch_sync(self, torch: Any) -> None:
        if self.is_gpu:
            torch.cuda.synchronize()


def resolve_device(name: str) -> Device:
    """A usable Device or a BenchError saying why not."""
    if name == "cpu":
        if not backends.available("cpu"):
            raise BenchError("the C++ CPU backend is not built: "
                             f"{backends.reason_unavailable('cpu')}")
        return Device("cpu")
    if name in ("cuda", "gpu"):
        reasons = {b: backends.reason_unavailable(b) for b in backends.GPU_BACKENDS}
        if all(r is not None for r in reasons.values()):
            detail = "; ".join(f"{b}: {r}" for b, r in reasons.items())
            raise BenchError(f"--device cuda: no usable GPU backend ({detail})")
        return Device("cuda")
    raise BenchError(f"--device: expected 'cpu' or 'cuda', got {name!r}")


def _to_host(r: Any) -> np.ndarray:
    if hasattr(r, "detach"):          # torch
        return r.detach().cpu().numpy()
    if hasattr(r, "get") and not isinstance(r, np.ndarray):   # cupy
        return r.get()
    return np.asarray(r)


# ---------------------------------------------------------------------------- cases
@dataclass
class Case:
    """One row of the table: an op on one shape and its implementations.

    ``build(device, torch)`` makes the inputs and returns ``{impl: fn}``; each fn runs the op
    once and returns its result(s) (for in-place updates, the updated parameter)."""
    op: str
    shape: str
    unit: str                       # "GFLOP/s" or "GB/s"
    work: float                     # FLOPs or bytes per call
    build: Callable[[Device, Any], Dict[str, Callable[[], Any]]]
    numpy_note: str = ""            # how the NumPy peer does it, when not obvious
    torch_note: str = ""
    rtol: float = 2e-3
    atol_scale: float = 1e-5        # atol = atol_scale * max|deepkern result|

    @property
    def key(self) -> str:
        return f"{self.op} {self.shape}"


def _rand(rng: np.random.Generator, *shape: int) -> np.ndarray:
    return rng.standard_normal(shape).astype(np.float32)


def _gemm_flops(m: int, k: int, n: int) -> float:
    return 2.0 * m * k * n


def matmul_case(m: int, k: int, n: int, label: str = "matmul") -> Case:
    """c (M, N) = a (M, K) @ b (K, N)."""
    def build(dev: Device, torch: Any) -> Dict[str, Callable[[], Any]]:
        rng = np.random.default_rng(m * 7 + k * 3 + n)
        a, b = dev.array(_rand(rng, m, k)), dev.array(_rand(rng, k, n))
        impls = {"deepkern": lambda: ops.matmul(a, b), "numpy": lambda: npk.matmul(a, b)}
        if torch is not None:
            ta, tb = dev.torch_tensor(torch, a), dev.torch_tensor(torch, b)
            impls["torch"] = lambda: torch.mm(ta, tb)
        return impls
    return Case(label, f"{m}x{k}x{n}", "GFLOP/s", _gemm_flops(m, k, n), build)


def linear_case(m: int, k: int, n: int) -> Case:
    """The seed layers: y (M, N) = x (M, K) @ w.T + b with w (N, K)."""
    def build(dev: Device, torch: Any) -> Dict[str, Callable[[], Any]]:
        rng = np.random.default_rng(m + k + n)
        x, w, b = (dev.array(_rand(rng, m, k)), dev.array(_rand(rng, n, k)), dev.array(_rand(rng, n)))
        impls = {"deepkern": lambda: ops.matmul(x, w, b, trans_b=True),
                 "numpy": lambda: x @ w.T + b}
        if torch is not None:
            F = torch.nn.functional
            tx, tw, tb = (dev.torch_tensor(torch, v) for v in (x, w, b))
            impls["torch"] = lambda: F.linear(tx, tw, tb)
        return impls
    return Case("linear fwd", f"{m}x{k}x{n}", "GFLOP/s", _gemm_flops(m, k, n), build,
                numpy_note="x @ w.T + b", torch_note="F.linear")


def linear_backward_case(m: int, k: int, n: int) -> Case:
    """Gradients of the linear layer: gx (M, K) = g @ w, gw (N, K) = g.T @ x, gb = sum(g)."""
    def build(dev: Device, torch: Any) -> Dict[str, Callable[[], Any]]:
        rng = np.random.default_rng(m + k + n + 1)
        x, w, g = dev.array(_rand(rng, m, k)), dev.array(_rand(rng, n, k)), dev.array(_rand(rng, m, n))
        impls = {"deepkern": lambda: ops.matmul_backward(g, x, w, trans_b=True, bias=True),
                 "numpy": lambda: (g @ w, g.T @ x, g.sum(axis=0))}
        if torch is not None:
            tx, tw, tg = (dev.torch_tensor(torch, v) for v in (x, w, g))
            impls["torch"] = lambda: (tg.mm(tw), tg.t().mm(tx), tg.sum(0))
        return impls
    return Case("linear bwd", f"{m}x{k}x{n}", "GFLOP/s", 2 * _gemm_flops(m, k, n), build,
                numpy_note="g @ w, g.T @ x", torch_note="mm (as autograd)")


def _conv_flops(n: int, c: int, h: int, w: int, oc: int, k: int) -> float:
    oh, ow = h - k + 1, w - k + 1
    return 2.0 * n * oc * oh * ow * c * k * k


def conv_case(n: int, c: int, h: int, w: int, oc: int, k: int, backward: bool) -> Case:
    """x (N, C, H, W) * w (OC, C, K, K) + b, stride 1, padding 0; backward gives gx, gw, gb."""
    oh, ow = h - k + 1, w - k + 1

    def build(dev: Device, torch: Any) -> Dict[str, Callable[[], Any]]:
        rng = np.random.default_rng(n + c + h + oc)
        x, wt, b = (dev.array(_rand(rng, n, c, h, w)), dev.array(_rand(rng, oc, c, k, k)),
                    dev.array(_rand(rng, oc)))
        g = dev.array(_rand(rng, n, oc, oh, ow))
        if backward:
            impls = {"deepkern": lambda: ops.conv2d_backward(g, x, wt, bias=True),
                     "numpy": lambda: npk.conv2d_backward(g, x, wt)}
        else:
            impls = {"deepkern": lambda: ops.conv2d(x, wt, b), "numpy": lambda: npk.conv2d(x, wt, b)}
        if torch is not None:
            tx, tw, tb, tg = (dev.torch_tensor(torch, v) for v in (x, wt, b, g))
            if backward:
                impls["torch"] = lambda: torch.ops.aten.convolution_backward(
                    tg, tx, tw, [oc], [1, 1], [0, 0], [1, 1], False, [0, 0], 1, [True, True, True])
            else:
                impls["torch"] = lambda: torch.nn.functional.conv2d(tx, tw, tb)
        return impls
    flops = _conv_flops(n, c, h, w, oc, k) * (2 if backward else 1)
    return Case(f"conv2d {'bwd' if backward else 'fwd'}", f"{n}x{c}x{h}x{w} -> {oc} {k}x{k}", "GFLOP/s",
                flops, build, numpy_note="im2col (stride tricks) + BLAS")


def pool_case(kind: str, n: int, c: int, h: int, w: int, backward: bool) -> Case:
    """2x2 stride-2 pooling of x (N, C, H, W); bytes: x (and grad/gx for backward) once."""
    oh, ow = h // 2, w // 2
    size_x, size_y = n * c * h * w, n * c * oh * ow
    if backward:
        nbytes = 4 * (size_y + size_x + (size_x if kind == "max" else 0))  # gy, gx (+ x for max)
    else:
        nbytes = 4 * (size_x + size_y)

    def build(dev: Device, torch: Any) -> Dict[str, Callable[[], Any]]:
        rng = np.random.default_rng(n + c + h)
        x, g = dev.array(_rand(rng, n, c, h, w)), dev.array(_rand(rng, n, c, oh, ow))
        fwd = {"max": (ops.max_pool2d, npk.max_pool2d), "avg": (ops.avg_pool2d, npk.avg_pool2d)}[kind]
        bwd = {"max": (ops.max_pool2d_backward, npk.max_pool2d_backward),
               "avg": (ops.avg_pool2d_backward, npk.avg_pool2d_backward)}[kind]
        if backward:
            impls = {"deepkern": lambda: bwd[0](g, x, 2), "numpy": lambda: bwd[1](g, x, 2)}
        else:
            impls = {"deepkern": lambda: fwd[0](x, 2), "numpy": lambda: fwd[1](x, 2)}
        if torch is not None:
            tx, tg = dev.torch_tensor(torch, x), dev.torch_tensor(torch, g)
            aten = torch.ops.aten
            if not backward:
                f = torch.nn.functional.max_pool2d if kind == "max" else torch.nn.functional.avg_pool2d
                impls["torch"] = lambda: f(tx, 2)
            elif kind == "max":
                _, idx = aten.max_pool2d_with_indices(tx, [2, 2], [2, 2])
                impls["torch"] = lambda: aten.max_pool2d_with_indices_backward(
                    tg, tx, [2, 2], [2, 2], [0, 0], [1, 1], False, idx)
            else:
                impls["torch"] = lambda: aten.avg_pool2d_backward(tg, tx, [2, 2], [2, 2], [0, 0], False, True, None)
        return impls
    note = "indices saved by forward" if backward and kind == "max" else ""
    return Case(f"{kind}_pool2d {'bwd' if backward else 'fwd'}", f"{n}x{c}x{h}x{w} k2 s2", "GB/s", nbytes,
                build, numpy_note="ufuncs over the 4 strided window taps",
                torch_note=note)


def eltwise_case(op: str, rows: int, cols: int, backward: bool) -> Case:
    """relu, softmax or log_softmax (last axis) of x (rows, cols): bytes = in + out (+ grad)."""
    n = rows * cols
    nbytes = 4 * n * (3 if backward else 2)

    def build(dev: Device, torch: Any) -> Dict[str, Callable[[], Any]]:
        rng = np.random.default_rng(rows + cols + len(op))
        x, g = dev.array(_rand(rng, rows, cols)), dev.array(_rand(rng, rows, cols))
        if op == "relu":
            y = ops.relu(x)
            fwd = {"deepkern": lambda: ops.relu(x), "numpy": lambda: npk.relu(x)}
            bwd = {"deepkern": lambda: ops.relu_backward(g, y), "numpy": lambda: npk.relu_backward(g, y)}
        elif op == "softmax":
            y = ops.softmax(x)
            fwd = {"deepkern": lambda: ops.softmax(x), "numpy": lambda: npk.softmax(x)}
            bwd = {"deepkern": lambda: ops.softmax_backward(g, y), "numpy": lambda: npk.softmax_backward(g, y)}
        else:
            y = ops.log_softmax(x)
            xp = npk.xp_of(x)
            fwd = {"deepkern": lambda: ops.log_softmax(x), "numpy": lambda: npk.log_softmax(x)}
            bwd = {"deepkern": lambda: ops.log_softmax_backward(g, y),
                   "numpy": lambda: g - xp.exp(y) * g.sum(axis=-1, keepdims=True)}
        impls = bwd if backward else fwd
        if torch is not None:
            tx, ty, tg = (dev.torch_tensor(torch, v) for v in (x, y, g))
            aten = torch.ops.aten
            if op == "relu":
                impls["torch"] = ((lambda: aten.threshold_backward(tg, ty, 0)) if backward
                                  else (lambda: torch.relu(tx)))
            elif op == "softmax":
                impls["torch"] = ((lambda: aten._softmax_backward_data(tg, ty, 1, torch.float32)) if backward
                                  else (lambda: torch.softmax(tx, 1)))
            else:
                impls["torch"] = ((lambda: aten._log_softmax_backward_data(tg, ty, 1, torch.float32))
                                  if backward else (lambda: torch.log_softmax(tx, 1)))
        return impls
    return Case(f"{op} {'bwd' if backward else 'fwd'}", f"{rows}x{cols}", "GB/s", nbytes, build)


def cross_entropy_case(n: int, c: int, backward: bool) -> Case:
    """Mean cross-entropy of logits (N, C) with int64 labels (N,)."""
    nbytes = 4 * n * c + 8 * n + (4 * n * c if backward else 4)

    def build(dev: Device, torch: Any) -> Dict[str, Callable[[], Any]]:
        rng = np.random.default_rng(n + c)
        logits = dev.array(_rand(rng, n, c))
        labels = dev.array(rng.integers(0, c, n).astype(np.int64))
        if backward:
            impls = {"deepkern": lambda: ops.cross_entropy_backward(logits, labels),
                     "numpy": lambda: npk.cross_entropy_backward(logits, labels)}
        else:
            impls = {"deepkern": lambda: ops.cross_entropy(logits, labels),
                     "numpy": lambda: npk.cross_entropy(logits, labels)}
        if torch is not None:
            tl, tt = dev.torch_tensor(torch, logits), dev.torch_tensor(torch, labels)
            aten = torch.ops.aten
            if backward:
                # what autograd runs: NLL backward then log_softmax backward, from the saved log-probs
                lsm = torch.log_softmax(tl, 1)
                _, total = aten.nll_loss_forward(lsm, tt, None, 1, -100)
                one = torch.ones((), device=tl.device)
                impls["torch"] = lambda: aten._log_softmax_backward_data(
                    aten.nll_loss_backward(one, lsm, tt, None, 1, -100, total), lsm, 1, torch.float32)
            else:
                impls["torch"] = lambda: torch.nn.functional.cross_entropy(tl, tt)
        return impls
    return Case(f"cross_entropy {'bwd' if backward else 'fwd'}", f"{n}x{c}", "GB/s", nbytes, build,
                torch_note="from saved log-probs" if backward else "")


def adam_case(n: int) -> Case:
    """One fused Adam step over a flat parameter of n floats: reads p, g, m, v; writes p, m, v."""
    def build(dev: Device, torch: Any) -> Dict[str, Callable[[], Any]]:
        rng = np.random.default_rng(n)
        p0, g0 = _rand(rng, n), _rand(rng, n)
        lr, b1, b2, eps = 1e-3, 0.9, 0.999, 1e-8
        state: Dict[str, Dict[str, Any]] = {}

        def fresh(name: str) -> Dict[str, Any]:
            st = {"p": dev.array(p0.copy()), "g": dev.array(g0), "m": dev.array(np.zeros(n, np.float32)),
                  "v": dev.array(np.zeros(n, np.float32)), "t": 0}
            state[name] = st
            return st

        dk, nps = fresh("deepkern"), fresh("numpy")

        def run_dk() -> Any:
            dk["t"] += 1
            ops.adam_update(dk["p"], dk["g"], dk["m"], dk["v"], dk["t"], lr, b1, b2, eps)
            return dk["p"]

        def run_np() -> Any:
            nps["t"] += 1
            npk.adam_update(nps["p"], nps["g"], nps["m"], nps["v"], lr, b1, b2, eps,
                            1 - b1 ** nps["t"], 1 - b2 ** nps["t"])
            return nps["p"]

        impls = {"deepkern": run_dk, "numpy": run_np}
        if torch is not None:
            param = torch.nn.Parameter(dev.torch_tensor(torch, p0.copy()))
            param.grad = dev.torch_tensor(torch, dev.array(g0.copy()))
            try:
                opt = torch.optim.Adam([param], lr=lr, betas=(b1, b2), eps=eps, fused=True)
            except (RuntimeError, TypeError):  # no fused kernel for this device/version
                opt = torch.optim.Adam([param], lr=lr, betas=(b1, b2), eps=eps)

            def run_torch() -> Any:
                opt.step()
                return param
            impls["torch"] = run_torch
        return impls
    return Case("adam_update", f"{n}", "GB/s", 4.0 * 7 * n, build, numpy_note="in-place ufuncs",
                torch_note="optim.Adam(fused)")


def kernel_cases(profile: str = "full") -> List[Case]:
    """The table's rows for a profile: "full" (the issue's shapes), "quick", or "smoke" (tiny)."""
    if profile not in PROFILES:
        raise ValueError(f"profile: expected one of {', '.join(PROFILES)}, got {profile!r}")
    if profile == "smoke":
        return [matmul_case(17, 5, 3), linear_case(3, 7, 5), linear_backward_case(3, 7, 5),
                conv_case(2, 3, 7, 6, 4, 3, False), conv_case(2, 3, 7, 6, 4, 3, True),
                pool_case("max", 2, 3, 6, 7, False), pool_case("max", 2, 3, 6, 7, True),
                pool_case("avg", 2, 3, 6, 7, False), pool_case("avg", 2, 3, 6, 7, True),
                eltwise_case("relu", 5, 9, False), eltwise_case("relu", 5, 9, True),
                eltwise_case("softmax", 5, 9, False), eltwise_case("softmax", 5, 9, True),
                eltwise_case("log_softmax", 5, 9, False), eltwise_case("log_softmax", 5, 9, True),
                cross_entropy_case(6, 4, False), cross_entropy_case(6, 4, True), adam_case(37)]
    seed_shapes = [(100, 784, 256), (100, 256, 256), (128, 1600, 64)]
    conv_layers = [(128, 1, 28, 28, 32, 3), (128, 32, 13, 13, 64, 3)]
    if profile == "quick":
        return ([matmul_case(s, s, s) for s in (256, 1024)]
                + [linear_case(*s) for s in seed_shapes] + [linear_backward_case(*seed_shapes[0])]
                + [matmul_case(15488, 288, 64, "matmul (im2col)")]
                + [conv_case(*conv_layers[1], backward=b) for b in (False, True)]
                + [pool_case("max", 128, 32, 26, 26, b) for b in (False, True)]
                + [eltwise_case("relu", 4096, 1024, False), eltwise_case("softmax", 4096, 1024, False)]
                + [cross_entropy_case(128, 10, b) for b in (False, True)] + [adam_case(269_322)])
    return ([matmul_case(s, s, s) for s in (256, 512, 1024, 2048)]
            + [linear_case(*s) for s in seed_shapes] + [linear_backward_case(*s) for s in seed_shapes]
            + [matmul_case(86528, 9, 32, "matmul (im2col)"), matmul_case(15488, 288, 64, "matmul (im2col)")]
            + [conv_case(*layer, backward=b) for layer in conv_layers for b in (False, True)]
            + [pool_case(kind, 128, 32, 26, 26, b) for kind in ("max", "avg") for b in (False, True)]
            + [eltwise_case(op, 4096, 1024, b) for op in ("relu", "softmax", "log_softmax") for b in (False, True)]
            + [cross_entropy_case(128, 10, b) for b in (False, True)]
            + [adam_case(269_322)])


# ---------------------------------------------------------------------------- checking and timing
def check_agree(case_key: str, impl: str, ours: Any, peer: Any, rtol: float = 2e-3,
                atol_scale: float = 1e-5) -> None:
    """Raise MismatchError unless every array of ``peer`` matches ``ours``:
    |peer - ours| <= atol_scale * max|ours| + rtol * |ours|, elementwise."""
    ours_t = ours if isinstance(ours, (tuple, list)) else (ours,)
    peer_t = peer if isinstance(peer, (tuple, list)) else (peer,)
    if len(ours_t) != len(peer_t):
        raise MismatchError(f"{case_key}: {impl} returned {len(peer_t)} arrays, deepkern {len(ours_t)}")
    for i, (a, b) in enumerate(zip(ours_t, peer_t)):
        a64, b64 = _to_host(a).astype(np.float64), _to_host(b).astype(np.float64)
        if a64.shape != b64.shape:
            raise MismatchError(f"{case_key}: {impl} result {i} has shape {b64.shape}, deepkern {a64.shape}")
        if not np.all(np.isfinite(a64)):
            raise MismatchError(f"{case_key}: deepkern result {i} is not finite")
        scale = float(np.max(np.abs(a64))) if a64.size else 0.0
        err = np.abs(a64 - b64)
        bound = atol_scale * max(scale, 1e-30) + rtol * np.abs(a64)
        if not np.all(err <= bound):
            worst = int(np.argmax(err - bound))
            raise MismatchError(f"{case_key}: {impl} result {i} disagrees with deepkern: "
                                f"{b64.flat[worst]!r} vs {a64.flat[worst]!r} (max |diff| {float(err.max()):.3g})")


@dataclass
class Timing:
    """Seconds per call over ``repeats`` samples of ``inner`` calls each: the median and the
    best sample. On a machine shared with other work the best is the steadier estimate of
    what the code can do: a descheduled thread stalls a parallel region for a whole time slice."""
    median_s: float
    best_s: float
    repeats: int
    inner: int

    def value(self, stat: str = "median") -> float:
        return self.best_s if stat == "min" else self.median_s


def time_call(fn: Callable[[], Any], sync: Callable[[], None], target_s: float, min_repeats: int,
              max_repeats: int, min_sample_s: float = 2e-3) -> Timing:
    """Warm up, pick the calls per sample so one sample lasts >= min_sample_s (tiny ops),
    then take as many samples as fit in target_s (at least min_repeats): the median per call."""
    fn()
    sync()
    t0 = time.perf_counter()
    fn()
    sync()
    single = max(time.perf_counter() - t0, 1e-7)
    inner = max(1, int(min_sample_s / single)) if min_sample_s > 0 else 1
    repeats = int(min(max_repeats, max(min_repeats, target_s / (single * inner))))
    samples = []
    for _ in range(repeats):
        t0 = time.perf_counter()
        for _ in range(inner):
            fn()
        sync()
        samples.append((time.perf_counter() - t0) / inner)
    return Timing(statistics.median(samples), min(samples), repeats, inner)


@dataclass
class Row:
    case: Case
    times: Dict[str, Timing] = field(default_factory=dict)
    stat: str = "median"            # which Timing value the table reports: "median" or "min"

    def seconds(self, impl: str) -> Optional[float]:
        t = self.times.get(impl)
        return t.value(self.stat) if t else None

    def rate(self, impl: str = "deepkern") -> Optional[float]:
        t = self.seconds(impl)
        return self.case.work / t / 1e9 if t else None

    def ratio(self, peer: str) -> Optional[float]:
        """peer time / deepkern time: > 1 means deepkern is faster."""
        ours, theirs = self.seconds("deepkern"), self.seconds(peer)
        return None if ours is None or theirs is None else theirs / ours


@dataclass
class Settings:
    profile: str = "full"
    target_s: float = 0.6           # timing budget per implementation and case
    min_repeats: int = 5
    max_repeats: int = 50
    stat: str = "median"

    @classmethod
    def for_profile(cls, profile: str) -> "Settings":
        if profile == "quick":
            return cls(profile, 0.12, 3, 15)
        if profile == "smoke":
            return cls(profile, 0.0, 1, 1)
        return cls(profile)


def run_kernel_table(cases: Sequence[Case], device: Device, torch: Any, settings: Settings,
                     progress: Optional[Callable[[str], None]] = None) -> List[Row]:
    """Check then time every case; raises MismatchError on the first disagreement."""
    rows = []
    for case in cases:
        impls = case.build(device, torch)
        results = {name: fn() for name, fn in impls.items()}   # first call: check (and warm-up)
        device.sync()
        for name, result in results.items():
            if name != "deepkern":
                check_agree(case.key, name, results["deepkern"], result, case.rtol, case.atol_scale)
        del results
        row = Row(case, stat=settings.stat)
        for name, fn in impls.items():
            sync = (lambda: device.torch_sync(torch)) if name == "torch" else device.sync
            row.times[name] = time_call(fn, sync, settings.target_s, settings.min_repeats, settings.max_repeats,
                                        min_sample_s=0.0 if settings.profile == "smoke" else 2e-3)
        rows.append(row)
        if progress:
            progress(format_row(row))
    return rows


def combine_runs(runs: Sequence[Sequence[Row]]) -> List[Row]:
    """Rows over repeated runs of the same table: the median of the runs' medians and the
    best of their best samples."""
    combined = []
    for rows in zip(*runs):
        row = Row(rows[0].case, stat=rows[0].stat)
        for impl in rows[0].times:
            ts = [r.times[impl] for r in rows if impl in r.times]
            row.times[impl] = Timing(statistics.median(t.median_s for t in ts), min(t.best_s for t in ts),
                                     sum(t.repeats for t in ts), ts[0].inner)
        combined.append(row)
    return combined


# ---------------------------------------------------------------------------- training
@dataclass
class TrainResult:
    model: str
    batch: int
    samples_per_s: Dict[str, float]


def _seed_layers(nn: Any, kind: str) -> List[Any]:
    """The seed network as a layer list, for any framework with PyTorch-style nn."""
    if kind == "mlp":
        return [nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)]
    return [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10)]


def train_data(kind: str, batch: int, n_batches: int = 4) -> List[Tuple[np.ndarray, np.ndarray]]:
    """A few fixed MNIST-shaped batches (uniform pixels, int64 labels) for "mlp" or "cnn"."""
    rng = np.random.default_rng(1)
    shape = (batch, 784) if kind == "mlp" else (batch, 1, 28, 28)
    return [(rng.random(shape, dtype=np.float32), rng.integers(0, 10, batch).astype(np.int64))
            for _ in range(n_batches)]


def deepkern_train_step(kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """step(x, labels) -> loss: one Adam step of the seed network on deepkern's nn/optim."""
    import deepkern as dk
    for name in ("nn", "optim", "Tensor"):
        if not hasattr(dk, name):
            raise BenchError(f"deepkern.{name} is not available yet: the training benchmark needs "
                             "dk.nn, dk.optim and dk.Tensor")
    model = dk.nn.Sequential(*_seed_layers(dk.nn, kind))
    loss_fn = dk.nn.CrossEntropyLoss()
    opt = dk.optim.Adam(model.parameters(), lr=1e-3)

    def step(x: np.ndarray, y: np.ndarray) -> float:
        opt.zero_grad()
        loss = loss_fn(model(dk.Tensor(x)), y)
        loss.backward()
        opt.step()
        return float(np.asarray(loss.data))
    return step


def torch_train_step(torch: Any, kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """step(x, labels) -> loss: the same network and optimizer in PyTorch (CPU)."""
    model = torch.nn.Sequential(*_seed_layers(torch.nn, kind))
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x: np.ndarray, y: np.ndarray) -> float:
        opt.zero_grad()
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        return loss.item()
    return step


def numpy_train_step(kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """step(x, labels) -> loss: the layered NumPy trainer in deepkern._bench_numpy."""
    net = npk.SEED_NETS[kind]()
    return net.train_step


def run_training(torch: Any, settings: Settings, progress: Optional[Callable[[str], None]] = None
                 ) -> List[TrainResult]:
    """Samples/s of one Adam training step for the seed MLP (batch 100) and CNN (batch 128)."""
    results = []
    budget = {"full": 3.0, "quick": 0.8, "smoke": 0.0}[settings.profile]
    for kind, batch in (("mlp", 100), ("cnn", 128)):
        if settings.profile == "smoke":
            batch = 8
        data = train_data(kind, batch)
        steps: Dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}
        try:
            steps["deepkern"] = deepkern_train_step(kind)
        except BenchError as exc:
            if progress:
                progress(f"  deepkern training skipped: {exc}")
        steps["numpy"] = numpy_train_step(kind)
        if torch is not None:
            steps["torch"] = torch_train_step(torch, kind)
        rates = {}
        for name, step in steps.items():
            counter = iter(range(1 << 62))

            def one() -> None:
                x, y = data[next(counter) % len(data)]
                loss = step(x, y)
                if not np.isfinite(loss):
                    raise MismatchError(f"training {kind}: {name} produced a non-finite loss")
            # Let the previous framework's spinning worker pool (OpenBLAS, PyTorch's OpenMP) go idle
            # first: on two cores its busy-waiting threads otherwise slow whoever runs next.
            time.sleep(0.0 if settings.profile == "smoke" else 0.5)
            t = time_call(one, lambda: None, budget, settings.min_repeats, 200, min_sample_s=0.0)
            rates[name] = batch / t.value(settings.stat)
        results.append(TrainResult(kind, batch, rates))
        if progress:
            progress("  " + ", ".join(f"{kind} {n}: {r:,.0f} samples/s" for n, r in rates.items()))
    return results


# ---------------------------------------------------------------------------- machine and memory floor
def stream_copy_gbs(mib: int = 64, threads: int = 1, repeats: int = 10) -> float:
    """STREAM-like copy bandwidth (GB/s of bytes read + written, best of ``repeats`` as STREAM
    reports it) with np.copyto over ``threads`` Python threads (NumPy releases the GIL for
    large copies)."""
    n = mib * (1 << 20) // 4
    src = np.ones(n, np.float32)
    dst = np.empty_like(src)
    bounds = np.linspace(0, n, threads + 1).astype(int)
    chunks = [(dst[a:b], src[a:b]) for a, b in zip(bounds[:-1], bounds[1:])]
    with concurrent.futures.ThreadPoolExecutor(threads) as pool:
        def once() -> None:
            list(pool.map(lambda c: np.copyto(*c), chunks))
        once()
        samples = []
        for _ in range(repeats):
            t0 = time.perf_counter()
            once()
            samples.append(time.perf_counter() - t0)
    return 2 * src.nbytes / min(samples) / 1e9


def machine_info(threads: int, torch: Any, device: Device) -> Dict[str, str]:
    """CPU model, cores, SIMD flags, library versions, threads: the header of every table."""
    model, flags = platform.processor() or platform.machine(), set()
    try:
        with open("/proc/cpuinfo", encoding="utf-8", errors="replace") as fh:
            for line in fh:
                if line.startswith("model name"):
                    model = line.split(":", 1)[1].strip()
                elif line.startswith("flags"):
                    flags = set(line.split(":", 1)[1].split())
                if model and flags:
                    break
    except OSError:
        pass
    simd = [f for f in ("avx512f", "avx512bw", "avx512vl", "avx2", "fma") if f in flags]
    info = {"date": datetime.date.today().isoformat(), "cpu": model, "cores": str(os.cpu_count()),
            "simd": " ".join(simd) or "none seen", "threads": str(threads), "numpy": np.__version__,
            "python": platform.python_version()}
    try:
        from threadpoolctl import threadpool_info
        blas = [f"{d['internal_api']} {d.get('version') or ''}".strip() for d in threadpool_info()
                if d.get("user_api") == "blas"]
        if blas:
            info["numpy BLAS"] = ", ".join(sorted(set(blas)))
    except ImportError:
        pass
    info["torch"] = torch.__version__ if torch is not None else "not installed"
    try:
        from . import _cpu  # type: ignore[attr-defined]
        info["deepkern gemm"] = _cpu.gemm_variant()
        if hasattr(_cpu, "simd_variant"):
            info["deepkern simd"] = _cpu.simd_variant()
        info["deepkern threads"] = str(_cpu.num_threads())
    except ImportError:
        pass
    info["device"] = device.name
    if hasattr(os, "getloadavg"):   # other work on the machine skews multi-threaded timings
        info["load average (1 min) at start"] = f"{os.getloadavg()[0]:.2f}"
    return info


# ---------------------------------------------------------------------------- output
def _ms(seconds: Optional[float]) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.3f}"


def _x(r: Optional[float]) -> str:
    return "—" if r is None else f"{r:.2f}x"


TABLE_HEAD = ("op", "shape", "deepkern ms", "rate", "NumPy ms", "vs NumPy", "torch ms", "vs torch", "notes")


def _cells(row: Row) -> Tuple[str, ...]:
    rate = row.rate()
    notes = "; ".join(n for n in (f"NumPy: {row.case.numpy_note}" if row.case.numpy_note else "",
                                  f"torch: {row.case.torch_note}" if row.case.torch_note else "") if n)
    return (row.case.op, row.case.shape, _ms(row.seconds("deepkern")),
            "—" if rate is None else f"{rate:.1f} {row.case.unit}", _ms(row.seconds("numpy")),
            _x(row.ratio("numpy")), _ms(row.seconds("torch")), _x(row.ratio("torch")), notes)


def format_row(row: Row) -> str:
    c = _cells(row)
    return f"{c[0]:<20} {c[1]:<24} {c[2]:>10} {c[3]:>15} {c[4]:>10} {c[5]:>8} {c[6]:>10} {c[7]:>8}"


def format_table(rows: Sequence[Row]) -> str:
    head = (f"{'op':<20} {'shape':<24} {'deepkern ms':>10} {'rate':>15} {'NumPy ms':>10} {'vs NumPy':>8} "
            f"{'torch ms':>10} {'vs torch':>8}")
    return "\n".join([head, "-" * len(head)] + [format_row(r) for r in rows])


def markdown(rows: Sequence[Row], info: Dict[str, str], training: Sequence[TrainResult] = ()) -> str:
    """The kernel table (and training table) as Markdown, with the machine header."""
    out = ["# deepkern bench", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in info.items()]
    out += ["", "Ratios are peer time / deepkern time (> 1: deepkern faster). Rates count the "
            "FLOPs (GFLOP/s) or the fewest bytes read + written (GB/s). Times per call after a warm-up "
            f"({info.get('statistic', 'median of samples')}).", ""]
    if rows:
        out += ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
        out += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    if training:
        out += ["", "## Training (samples/s, one Adam step per batch)", "",
                "| model | batch | deepkern | NumPy | torch | deepkern / NumPy | deepkern / torch |",
                "|---|---|---|---|---|---|---|"]
        for t in training:
            r = t.samples_per_s

            def fmt(name: str) -> str:
                return f"{r[name]:,.0f}" if name in r else "—"

            def rel(name: str) -> str:
                return f"{r['deepkern'] / r[name]:.2f}x" if "deepkern" in r and name in r else "—"
            out.append(f"| {t.model} | {t.batch} | {fmt('deepkern')} | {fmt('numpy')} | {fmt('torch')} | "
                       f"{rel('numpy')} | {rel('torch')} |")
    return "\n".join(out) + "\n"


def plot(rows: Sequence[Row], path: Path, title: str) -> None:
    """Horizontal bars of deepkern's speed-up over each peer, one group per row, log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.case.key for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.5))
    ypos = np.arange(len(rows))
    for offset, peer, color in ((-0.2, "numpy", "tab:blue"), (0.2, "torch", "tab:orange")):
        vals = [r.ratio(peer) or 0.0 for r in rows]
        if any(vals):
            ax.barh(ypos + offset, vals, height=0.4, color=color, label=f"vs {peer}")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of deepkern (peer time / deepkern time)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


# ---------------------------------------------------------------------------- entry point
def _import_torch(use: bool) -> Any:
    if not use:
        return None
    try:
        import torch
    except ImportError:
        return None
    return torch


@contextlib.contextmanager
def thread_limit(threads: int, torch: Any) -> Iterator[None]:
    """Run deepkern's OpenMP, NumPy's BLAS and PyTorch with the same number of threads."""
    if torch is not None:
        old = torch.get_num_threads()
        torch.set_num_threads(threads)
    try:
        from threadpoolctl import threadpool_limits
        limiter: Any = threadpool_limits(limits=threads)
    except ImportError:  # without it only torch is limited: say so in the header via deepkern threads
        limiter = contextlib.nullcontext()
    try:
        with limiter:
            yield
    finally:
        if torch is not None:
            torch.set_num_threads(old)


def run(args: argparse.Namespace) -> int:
    """Run the benchmark as the CLI asked; returns the exit status."""
    profile = "smoke" if args.smoke else "quick" if args.quick else "full"
    settings = Settings.for_profile(profile)
    settings.stat = args.stat
    device = resolve_device(args.device)
    threads = args.threads if args.threads is not None else (os.cpu_count() or 1)
    if threads < 1:
        raise BenchError(f"--threads: expected a positive count, got {threads}")
    if args.repeat < 1:
        raise BenchError(f"--repeat: expected a positive count, got {args.repeat}")
    torch = _import_torch(not args.no_torch)
    if torch is not None and device.is_gpu and not torch.cuda.is_available():
        torch = None
    backends.load("cpu")   # load libgomp before limiting threads, so the limit reaches it
    out_dir = Path(args.out_dir)
    out_dir.mkdir(parents=True, exist_ok=True)
    cases = kernel_cases(profile)
    if args.only:
        cases = [c for c in cases if args.only in c.op]

    def say(line: str) -> None:
        print(line, flush=True)

    with thread_limit(threads, torch):
        info = machine_info(threads, torch, device)
        info["runs"] = str(args.repeat)
        info["statistic"] = "best sample" if args.stat == "min" else "median of samples"
        if profile != "smoke" and not device.is_gpu:
            copy = f"{stream_copy_gbs(64, 1):.1f} GB/s (1 thread)"
            if threads > 1:
                copy += f", {stream_copy_gbs(64, threads):.1f} GB/s ({threads} threads)"
            info["NumPy copy (64 MiB, best of 10)"] = copy
        say(" | ".join(f"{k}: {v}" for k, v in info.items()))
        say(format_table([]))
        runs = []
        for i in range(args.repeat):
            if args.repeat > 1:
                say(f"run {i + 1} of {args.repeat}:")
            runs.append(run_kernel_table(cases, device, torch, settings, progress=say))
        rows = combine_runs(runs)
        if args.repeat > 1:
            say(f"medians over {args.repeat} runs:")
            say(format_table(rows))
        training: List[TrainResult] = []
        if args.train:
            say("training (samples/s" + (", on the CPU" if device.is_gpu else "") + "):")
            training = run_training(torch, settings, progress=say)
    md_path, png_path = out_dir / "kernels.md", out_dir / "kernels.png"
    md_path.write_text(markdown(rows, info, training), encoding="utf-8")
    # the same runs under the other statistic, kernel rows only (training kept one statistic)
    other = "median" if args.stat == "min" else "min"
    other_rows = [Row(r.case, dict(r.times), other) for r in rows]
    other_info = dict(info, statistic="best sample" if other == "min" else "median of samples")
    (out_dir / f"kernels-{other}.md").write_text(markdown(other_rows, other_info), encoding="utf-8")
    if rows:
        plot(rows, png_path, f"deepkern vs NumPy / PyTorch — {info['cpu']}, {threads} threads")
    say(f"wrote {md_path}" + (f" and {png_path}" if rows else ""))
    return 0


def main(argv: Optional[Sequence[str]] = None) -> int:
    """``python -m deepkern.bench`` (same options as ``deepkern bench``)."""
    from .cli import build_parser
    return cli_entry(build_parser().parse_args(["bench", *(argv if argv is not None else sys.argv[1:])]))


def cli_entry(args: argparse.Namespace) -> int:
    """Run, turning BenchError/MismatchError into a message and exit status 2/1."""
    try:
        return run(args)
    except BenchError as exc:
        print(f"deepkern bench: error: {exc}", file=sys.stderr)
        return 2
    except MismatchError as exc:
        print(f"deepkern bench: results disagree: {exc}", file=sys.stderr)
        return 1


if __name__ == "__main__":
    sys.exit(main())
