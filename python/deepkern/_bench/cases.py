"""The kernel table's rows: each op on its shapes, as deepkern, NumPy and PyTorch calls."""
from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict, List

import numpy as np

from .. import backends, ops
from .._validate import window_shape
from . import numpy_peer as npk

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
    oh, ow = window_shape(h, w, (k, k), (1, 1), (0, 0))
    return 2.0 * n * oc * oh * ow * c * k * k


def conv_case(n: int, c: int, h: int, w: int, oc: int, k: int, backward: bool) -> Case:
    """x (N, C, H, W) * w (OC, C, K, K) + b, stride 1, padding 0; backward gives gx, gw, gb."""
    oh, ow = window_shape(h, w, (k, k), (1, 1), (0, 0))

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
            npk.adam_update(nps["p"], nps["g"], nps["m"], nps["v"], nps["t"], lr, b1, b2, eps)
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


