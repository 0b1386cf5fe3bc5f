"""Hypothesis strategies for the arguments of every ``deepkern._cpu`` function.

``FUNCTIONS[name]`` is a strategy of ``Case``: the positional arguments, whether they are well
formed enough to compare with the NumPy reference, and which arrays an in-place update writes.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any, Callable, Dict, List, Tuple

import numpy as np
from hypothesis import assume
from hypothesis import strategies as st

f32 = np.float32
HUGE_INTS = [2**31 - 1, 2**31, 2**32 + 3, 2**62, 2**63 - 1]
HUGE_DIMS = [2**31 - 1, 2**31, 2**40]
SPECIALS = [np.nan, np.inf, -np.inf, -0.0, 1e30, -1e30]
# modes of a generated array argument: mostly well formed, sometimes each kind of bad
BAD_MODES = ["f64", "i32", "f16", "noncontig", "fortran", "misaligned", "readonly", "list", "none", "scalar"]


@dataclass
class Case:
    args: List[Any]
    comparable: bool = True          # all arrays well formed: compare with the reference
    inplace: Tuple[int, ...] = ()    # indices of arrays the function updates in place
    notes: List[str] = field(default_factory=list)

    def describe(self) -> str:
        def one(a: Any) -> str:
            if isinstance(a, np.ndarray):
                flags = "" if a.flags.c_contiguous else " noncontig"
                flags += "" if a.flags.aligned else " misaligned"
                flags += "" if a.flags.writeable else " readonly"
                nans = int(np.isnan(a).sum()) if a.dtype.kind == "f" and a.size else 0
                return f"array{a.shape} {a.dtype}{flags}{' nan=' + str(nans) if nans else ''}"
            return repr(a)
        return "(" + ", ".join(one(a) for a in self.args) + ")" + (" " + " ".join(self.notes) if self.notes else "")


# ---------------------------------------------------------------------------- building blocks
@st.composite
def dims(draw, rank: int, small: int = 9) -> Tuple[int, ...]:
    """A shape: small sizes (zeros included); sometimes one huge dimension beside a zero."""
    shape = [draw(st.one_of(st.integers(0, small), st.sampled_from([1, 2, 3, 17, 33]))) for _ in range(rank)]
    if rank >= 2 and draw(st.integers(0, 15)) == 0:
        i = draw(st.integers(0, rank - 1))
        shape[i] = draw(st.sampled_from(HUGE_DIMS))
        shape[(i + 1) % rank] = 0
    return tuple(shape)


@st.composite
def contents(draw, shape: Tuple[int, ...], specials: bool = True) -> np.ndarray:
    n = 1
    for d in shape:
        n *= int(d)                 # exact (Python ints): a huge dimension must come with a zero one
    assume(n <= 1 << 22)
    seed = draw(st.integers(0, 2**32 - 1))
    rng = np.random.default_rng(seed)
    scale = draw(st.sampled_from([1.0, 1.0, 1e-3, 1e3]))
    x = (rng.standard_normal(n) * scale).astype(f32)
    if specials and n and draw(st.integers(0, 3)) == 0:
        k = draw(st.integers(1, min(n, 5)))
        x[rng.choice(n, k, replace=False)] = rng.choice(SPECIALS, k)
    return x.reshape(shape)


def _misaligned(x: np.ndarray) -> np.ndarray:
    buf = np.empty(x.nbytes + 1, np.uint8)
    out = np.frombuffer(buf.data, dtype=x.dtype, count=x.size, offset=1).reshape(x.shape)
    out[...] = x
    return out


@st.composite
def array(draw, shape: Tuple[int, ...], specials: bool = True, modes: Tuple[str, ...] = ()) -> Tuple[Any, bool]:
    """(argument, well formed) for a float32 array of `shape`, or a bad variant of it."""
    x = draw(contents(shape, specials))
    mode = "ok" if draw(st.integers(0, 5)) else draw(st.sampled_from(BAD_MODES + list(modes)))
    if mode == "ok":
        return x, True
    if mode in ("f64", "i32", "f16"):
        return x.astype({"f64": np.float64, "i32": np.int32, "f16": np.float16}[mode]), False
    if mode == "noncontig":
        wide = np.repeat(x, 2, axis=-1) if x.ndim else x
        return (wide[..., ::2] if x.ndim else x), not x.ndim
    if mode == "fortran":
        return np.asfortranarray(x), x.flags.f_contiguous and x.flags.c_contiguous
    if mode == "misaligned":
        return _misaligned(x), x.size == 0
    if mode == "readonly":
        x.flags.writeable = False
        return x, True
    if mode == "list":
        return x.tolist(), False
    if mode == "none":
        return None, False
    return 1.0, False


def ints(lo: int = -2, hi: int = 9):
    return st.one_of(st.integers(lo, hi), st.integers(lo, hi), st.sampled_from(HUGE_INTS + [-(2**31), -(2**63)]))


def pair(lo: int = -1, hi: int = 5):
    return st.tuples(ints(lo, hi), ints(lo, hi))


def real():
    return st.one_of(st.floats(0, 1, allow_nan=False), st.floats(allow_nan=True, allow_infinity=True),
                     st.sampled_from([0.1, 0.9, 0.99, 1e-8]), st.just("0.1"), st.none())


# ---------------------------------------------------------------------------- per function
@st.composite
def matmul_case(draw, backward: bool = False) -> Case:
    m, k, n = (draw(st.one_of(st.integers(0, 40), st.sampled_from([1, 47, 65]))) for _ in range(3))
    ta, tb = draw(st.booleans()), draw(st.booleans())
    if draw(st.integers(0, 15)) == 0:  # a huge dimension beside a zero one
        big = draw(st.sampled_from(HUGE_DIMS))
        m, k, n = draw(st.sampled_from([(big, 0, n), (m, 0, big), (0, big, n), (m, big, 0)]))
    a, ok_a = draw(array((k, m) if ta else (m, k)))
    b, ok_b = draw(array((n, k) if tb else (k, n)))
    if draw(st.booleans()) and isinstance(b, np.ndarray) and b.ndim == 2 and draw(st.integers(0, 7)) == 0:
        b = b[:, : max(0, b.shape[1] - 1)]  # inner dimensions differ
        ok_b = False
    if backward:
        g, ok_g = draw(array((m, n)))
        out, ok_o = draw(array((m, n))) if draw(st.booleans()) else (None, True)
        return Case([g, a, b, out, ta, tb, draw(st.booleans())], ok_a and ok_b and ok_g and ok_o)
    bias, ok_bias = draw(array((n,))) if draw(st.booleans()) else (None, True)
    return Case([a, b, bias, draw(st.booleans()), ta, tb], ok_a and ok_b and ok_bias)


@st.composite
def conv_case(draw, backward: bool = False) -> Case:
    n, c, h, w = draw(dims(4, small=7))
    oc, kh, kw = draw(st.integers(0, 4)), draw(st.integers(0, 4)), draw(st.integers(0, 4))
    stride, padding = draw(pair(-1, 3)), draw(pair(-1, 2))
    x, ok_x = draw(array((n, c, h, w)))
    wt, ok_w = draw(array((oc, c if draw(st.integers(0, 9)) else c + 1, kh, kw), specials=False))
    if not backward:
        bias, ok_b = draw(array((oc,))) if draw(st.booleans()) else (None, True)
        return Case([x, wt, bias, stride, padding], ok_x and ok_w and ok_b)
    oh = _out(h, kh, stride[0], padding[0])
    ow = _out(w, kw, stride[1], padding[1])
    gshape = (n, oc, oh, ow) if oh > 0 and ow > 0 and oh * ow < 10**6 else (n, oc, 1, 1)
    g, ok_g = draw(array(gshape))
    return Case([g, x, wt, stride, padding, draw(st.booleans()), draw(st.booleans())], ok_x and ok_w and ok_g)


@st.composite
def conv_relu_case(draw, backward: bool = False) -> Case:
    """conv2d_relu(x, w, bias, stride, padding, pool) and its backward(g, x, w, out, route, ...): the
    forward is not compared (a route may differ from the float64 reference's where rounding decides
    a tie or a sign); the backward is, with the same (random, out-of-range included) routes."""
    case = draw(conv_case(backward=False))
    x, wt, bias, stride, padding = case.args
    pool = draw(st.booleans())
    if not backward:
        return Case([x, wt, bias, stride, padding, pool], False)
    shapes = [getattr(a, "shape", ()) for a in (x, wt)]
    n, oc = (shapes[0][0] if len(shapes[0]) == 4 else 1), (shapes[1][0] if len(shapes[1]) == 4 else 1)
    oh = _out(shapes[0][2], shapes[1][2], stride[0], padding[0]) if len(shapes[0]) == 4 == len(shapes[1]) else 1
    ow = _out(shapes[0][3], shapes[1][3], stride[1], padding[1]) if len(shapes[0]) == 4 == len(shapes[1]) else 1
    gshape = (n, oc, oh // 2, ow // 2) if pool else (n, oc, oh, ow)
    assume(all(0 <= d < 2**20 for d in gshape) and np.prod(gshape, dtype=object) < 10**6)
    g, ok_g = draw(array(gshape))
    out, ok_o = draw(array(gshape)) if not pool or draw(st.integers(0, 5)) == 0 else (None, True)
    route = None
    if pool:
        seed_value = draw(st.integers(0, 2**32 - 1))
        route = np.random.default_rng(seed_value).integers(0, 6, gshape).astype(np.uint8)
        if draw(st.integers(0, 7)) == 0:  # a wrong dtype or shape
            route = draw(st.sampled_from([route.astype(np.int64), route[..., :-1] if route.ndim else route]))
    ok = case.comparable and ok_g and ok_o and (route is None or route.dtype == np.uint8)
    return Case([g, x, wt, out, route, stride, padding, draw(st.booleans()), draw(st.booleans())], ok)


def _out(size: int, k: int, s: int, p: int) -> int:
    if s < 1 or p < 0 or size + 2 * p < k:
        return 0
    return (size + 2 * p - k) // s + 1


@st.composite
def pool_case(draw, backward: bool = False) -> Case:
    n, c, h, w = draw(dims(4, small=9))
    kernel, stride, padding = draw(pair(0, 4)), draw(pair(0, 3)), draw(pair(-1, 2))
    x, ok_x = draw(array((n, c, h, w)))
    if not backward:
        return Case([x, kernel, stride, padding], ok_x)
    oh, ow = _out(h, kernel[0], stride[0], padding[0]), _out(w, kernel[1], stride[1], padding[1])
    gshape = (n, c, oh, ow) if 0 < oh * ow < 10**6 else (n, c, 1, 1)
    g, ok_g = draw(array(gshape))
    return Case([g, x, kernel, stride, padding], ok_x and ok_g)


@st.composite
def relu_case(draw, backward: bool = False) -> Case:
    shape = draw(dims(draw(st.integers(0, 4))))
    x, ok = draw(array(shape))
    if not backward:
        return Case([x], ok)
    g, ok_g = draw(array(shape if draw(st.integers(0, 9)) else shape + (1,)))
    return Case([g, x], ok and ok_g)


@st.composite
def softmax_case(draw, backward: bool = False) -> Case:
    rank = draw(st.integers(0, 4))
    shape = draw(dims(rank))
    axis = draw(st.one_of(st.integers(-1, max(rank, 1)), st.sampled_from([-5, 2**31, 2**63 - 1])))
    x, ok = draw(array(shape))
    if not backward:
        return Case([x, axis], ok)
    g, ok_g = draw(array(shape))
    # y as the forward would give it (|y| <= 1 for softmax, y <= 0 for log_softmax) is compared;
    # others are only checked not to crash (exp(y) overflows differently in float32 and float64)
    plausible = isinstance(x, np.ndarray) and x.dtype == f32 and not (np.abs(x[np.isfinite(x)]) > 1).any()
    return Case([g, x, axis], ok and ok_g and plausible)


@st.composite
def ce_case(draw, backward: bool = False) -> Case:
    n, c = draw(dims(2, small=12))
    logits, ok = draw(array((n, c)))
    labels_n = n if draw(st.integers(0, 9)) else n + 1
    hi = max(c, 1)
    lab = np.asarray(draw(st.lists(st.integers(-1, hi), min_size=min(labels_n, 64), max_size=min(labels_n, 64))))
    assume(labels_n <= 1 << 20)
    labels = np.resize(lab, labels_n).astype(np.int64)
    if draw(st.integers(0, 9)) == 0:
        labels = labels.astype(draw(st.sampled_from([np.int32, np.float32, np.uint64])))
        ok = False
    in_range = labels.size == 0 or (labels.min() >= 0 and labels.max() < c)
    valid = labels.dtype == np.int64 and labels.size == n and in_range
    args = [logits, labels] + ([draw(real())] if backward else [])
    return Case(args, ok and valid and (not backward or isinstance(args[2], float)))


@st.composite
def optim_case(draw, which: str) -> Case:
    shape = draw(dims(draw(st.integers(0, 3))))
    n_state = {"sgd": 1, "adam": 2, "rmsprop": 1}[which]
    arrays, ok = [], True
    for _ in range(2 + n_state):
        a, good = draw(array(shape))
        arrays.append(a)
        ok = ok and good
    notes: List[str] = []
    overlap = draw(st.integers(0, 7)) == 0
    if overlap and all(isinstance(a, np.ndarray) and a.ndim >= 1 and a.dtype == f32 for a in arrays):
        i, j = draw(st.sampled_from([(0, 1), (0, 2), (1, 2)] + ([(2, 3)] if n_state == 2 else [])))
        arrays[j] = arrays[i]  # the same buffer twice
        notes.append(f"overlap {i}={j}")
    if which == "sgd":
        vel = arrays[2] if draw(st.booleans()) else None
        args = [arrays[0], arrays[1], vel, draw(real()), draw(real()), draw(real()), draw(st.booleans())]
    elif which == "adam":
        step = draw(st.one_of(st.integers(-1, 5), st.sampled_from([2**31, 2**63 - 1, 2**63])))
        args = [arrays[0], arrays[1], arrays[2], arrays[3], step] + [draw(real()) for _ in range(5)]
    else:
        args = [arrays[0], arrays[1], arrays[2]] + [draw(real()) for _ in range(4)]
    # compared with the reference only for sane hyperparameters: lr, decay and eps far from
    # float32's range limits (eps = 0 or wd = 1e38 make float32 and float64 legitimately differ)
    scalars = [v for v in args if not isinstance(v, (np.ndarray, bool, int, type(None)))]
    scalars_ok = all(isinstance(v, float) and (v == 0.0 or 1e-12 <= abs(v) <= 10) for v in scalars)
    eps_at = {"sgd": None, "adam": 8, "rmsprop": 5}[which]
    if eps_at is not None:  # a tiny eps divides by sqrt(v) ~ |g|, where float32 rounding shows
        scalars_ok = scalars_ok and isinstance(args[eps_at], float) and args[eps_at] >= 1e-6
    return Case(args, ok and scalars_ok and not notes, inplace=tuple(range(2 + n_state)), notes=notes)


@st.composite
def optim_many_case(draw, which: str) -> Case:
    """Lists for ``<which>_update_many``: each parameter's arrays drawn as optim_case draws them;
    sometimes a list one short, a tuple, or one buffer in two parameters (updated one after the
    other). Not compared (the reference has no lists): a call must return or fail cleanly."""
    n_state = {"sgd": 1, "adam": 2, "rmsprop": 1}[which]
    lists: List[Any] = [[] for _ in range(2 + n_state)]
    notes: List[str] = []
    for _ in range(draw(st.integers(0, 3))):
        shape = draw(dims(draw(st.integers(0, 3))))
        for values in lists:
            values.append(draw(array(shape))[0])
    if len(lists[0]) >= 2 and draw(st.integers(0, 3)) == 0:
        k = draw(st.integers(0, len(lists) - 1))
        lists[k][1] = lists[k][0]
        notes.append(f"list {k}: element 1 is element 0")
    if lists[0] and draw(st.integers(0, 7)) == 0:
        lists[1] = lists[1][:-1]
        notes.append("grads one short")
    if draw(st.integers(0, 7)) == 0:
        lists[0] = tuple(lists[0])
    if which == "sgd":
        velocities = lists[2] if draw(st.booleans()) else None
        args = [lists[0], lists[1], velocities, draw(real()), draw(real()), draw(real()), draw(st.booleans())]
    elif which == "adam":
        step = draw(st.one_of(st.integers(-1, 5), st.sampled_from([2**31, 2**63 - 1, 2**63])))
        args = lists + [step] + [draw(real()) for _ in range(5)]
    else:
        args = lists + [draw(real()) for _ in range(4)]
    return Case(args, False, notes=notes)


@st.composite
def admin_case(draw, name: str) -> Case:
    if name == "set_host_cache_limit":
        return Case([draw(st.one_of(st.integers(-5, 2**40), st.sampled_from([2**64 - 1, 2**64, -1])))], False)
    if name in ("set_simd_variant", "set_gemm_variant"):
        names = ["auto", "generic", "avx2", "avx512", "scalar", "", "AVX2", "sse", "auto\x00"]
        return Case([draw(st.sampled_from(names))], False)
    return Case([], False)


FUNCTIONS: Dict[str, Callable[[], Any]] = {
    "matmul": lambda: matmul_case(),
    "matmul_backward": lambda: matmul_case(backward=True),
    "conv2d": lambda: conv_case(),
    "conv2d_backward": lambda: conv_case(backward=True),
    "conv2d_relu": lambda: conv_relu_case(),
    "conv2d_relu_backward": lambda: conv_relu_case(backward=True),
    "max_pool2d": lambda: pool_case(),
    "max_pool2d_backward": lambda: pool_case(backward=True),
    "avg_pool2d": lambda: pool_case(),
    "avg_pool2d_backward": lambda: pool_case(backward=True),
    "relu": lambda: relu_case(),
    "relu_backward": lambda: relu_case(backward=True),
    "softmax": lambda: softmax_case(),
    "softmax_backward": lambda: softmax_case(backward=True),
    "log_softmax": lambda: softmax_case(),
    "log_softmax_backward": lambda: softmax_case(backward=True),
    "cross_entropy": lambda: ce_case(),
    "cross_entropy_backward": lambda: ce_case(backward=True),
    "sgd_update": lambda: optim_case("sgd"),
    "adam_update": lambda: optim_case("adam"),
    "rmsprop_update": lambda: optim_case("rmsprop"),
    "sgd_update_many": lambda: optim_many_case("sgd"),
    "adam_update_many": lambda: optim_many_case("adam"),
    "rmsprop_update_many": lambda: optim_many_case("rmsprop"),
    "set_host_cache_limit": lambda: admin_case("set_host_cache_limit"),
    "empty_host_cache": lambda: admin_case("empty_host_cache"),
    "host_cache_info": lambda: admin_case("host_cache_info"),
    "set_simd_variant": lambda: admin_case("set_simd_variant"),
    "set_gemm_variant": lambda: admin_case("set_gemm_variant"),
    "simd_variant": lambda: admin_case("simd_variant"),
    "gemm_variant": lambda: admin_case("gemm_variant"),
    "cpu_features": lambda: admin_case("cpu_features"),
    "num_threads": lambda: admin_case("num_threads"),
}
