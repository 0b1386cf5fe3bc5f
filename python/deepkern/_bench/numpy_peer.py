"""Vectorised NumPy peers for ``deepkern bench`` and ``benchmarks/``.

These are what a competent NumPy user would write (float32 throughout, BLAS matmul,
im2col through stride tricks), not the float64 reference backend: the benchmark asks
"how much faster than sensible NumPy", so the peer must be sensible. Every function
takes the array module from its input, so the same code runs on CuPy arrays.

Also here: a small layered NumPy MLP/CNN trainer (forward, backward, Adam) with the seed
networks' architecture, the NumPy column of ``deepkern bench --train``.
"""
from __future__ import annotations

import sys
from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

Array = Any  # numpy.ndarray or cupy.ndarray


def xp_of(a: Array):
    """numpy or cupy, whichever owns ``a``."""
    cupy = sys.modules.get("cupy")
    return cupy.get_array_module(a) if cupy is not None else np


# ---------------------------------------------------------------------------- matmul
def matmul(a: Array, b: Array) -> Array:
    return a @ b


def matmul_backward(grad: Array, a: Array, b: Array) -> Tuple[Array, Array]:
    """(grad @ b.T, a.T @ grad) for c = a @ b."""
    return grad @ b.T, a.T @ grad


# ---------------------------------------------------------------------------- conv2d
def _windows(x: Array, kh: int, kw: int, stride: int) -> Array:
    """View (N, C, OH, OW, KH, KW) of x (N, C, H, W) without copying."""
    xp = xp_of(x)
    n, c, h, w = x.shape
    oh, ow = (h - kh) // stride + 1, (w - kw) // stride + 1
    sn, sc, sh, sw = x.strides
    return xp.lib.stride_tricks.as_strided(
        x, (n, c, oh, ow, kh, kw), (sn, sc, sh * stride, sw * stride, sh, sw))


def im2col(x: Array, kh: int, kw: int, stride: int = 1) -> Array:
    """Columns (N*OH*OW, C*KH*KW) of x (N, C, H, W), one row per output pixel."""
    win = _windows(x, kh, kw, stride)
    n, c, oh, ow = win.shape[:4]
    return win.transpose(0, 2, 3, 1, 4, 5).reshape(n * oh * ow, c * kh * kw)


def conv2d(x: Array, w: Array, b: Optional[Array] = None, stride: int = 1) -> Array:
    """y (N, OC, OH, OW) = im2col(x) @ w.T (+ b), padding 0."""
    xp = xp_of(x)
    n = x.shape[0]
    oc, _, kh, kw = w.shape
    cols = im2col(x, kh, kw, stride)
    y = cols @ w.reshape(oc, -1).T
    if b is not None:
        y += b
    oh = (x.shape[2] - kh) // stride + 1
    ow = (x.shape[3] - kw) // stride + 1
    return xp.ascontiguousarray(y.reshape(n, oh, ow, oc).transpose(0, 3, 1, 2))


def conv2d_backward(grad: Array, x: Array, w: Array, stride: int = 1) -> Tuple[Array, Array, Array]:
    """(gx, gw, gb) of conv2d: gw from the columns, gx by adding each kernel tap's slice back."""
    xp = xp_of(x)
    n, c, h, wd = x.shape
    oc, _, kh, kw = w.shape
    oh, ow = grad.shape[2], grad.shape[3]
    g2 = grad.transpose(0, 2, 3, 1).reshape(n * oh * ow, oc)          # (N*OH*OW, OC)
    gw = (g2.T @ im2col(x, kh, kw, stride)).reshape(w.shape)
    gb = grad.sum(axis=(0, 2, 3))
    gcols = (g2 @ w.reshape(oc, -1)).reshape(n, oh, ow, c, kh, kw)   # column gradients
    gx = xp.zeros_like(x)
    for i in range(kh):       # KH*KW vectorised slice-adds (col2im)
        for j in range(kw):
            gx[:, :, i:i + stride * oh:stride, j:j + stride * ow:stride] += \
                gcols[:, :, :, :, i, j].transpose(0, 3, 1, 2)
    return gx, gw, gb


# ---------------------------------------------------------------------------- pooling (k x k, stride k, no padding)
# Each window tap (i, j) is a strided view x[..., i::k, j::k]; elementwise ufuncs over the
# k*k views are far faster in NumPy than a reduction over a reshaped 6-D view.
def _taps(x: Array, k: int, oh: int, ow: int) -> List[Tuple[int, int, Array]]:
    """The k*k strided views (OH, OW) of the window taps, in row-major tap order."""
    return [(i, j, x[:, :, i:i + k * oh:k, j:j + k * ow:k]) for i in range(k) for j in range(k)]


def max_pool2d(x: Array, k: int = 2) -> Array:
    xp = xp_of(x)
    taps = _taps(x, k, x.shape[2] // k, x.shape[3] // k)
    out = taps[0][2].copy()
    for _, _, t in taps[1:]:
        xp.maximum(out, t, out=out)
    return out


def max_pool2d_backward(grad: Array, x: Array, k: int = 2) -> Array:
    """Each output gradient goes to its window's first maximum (row-major tap order)."""
    xp = xp_of(x)
    oh, ow = grad.shape[2], grad.shape[3]
    m = max_pool2d(x, k)
    gx = xp.zeros_like(x)
    taken = xp.zeros(m.shape, dtype=bool)
    for i, j, t in _taps(x, k, oh, ow):
        hit = (t == m) & ~taken
        gx[:, :, i:i + k * oh:k, j:j + k * ow:k] = grad * hit
        taken |= hit
    return gx


def avg_pool2d(x: Array, k: int = 2) -> Array:
    taps = _taps(x, k, x.shape[2] // k, x.shape[3] // k)
    out = taps[0][2].copy()
    for _, _, t in taps[1:]:
        out += t
    out *= x.dtype.type(1.0 / (k * k))
    return out


def avg_pool2d_backward(grad: Array, x: Array, k: int = 2) -> Array:
    xp = xp_of(x)
    oh, ow = grad.shape[2], grad.shape[3]
    gx = xp.zeros_like(x)
    share = grad * x.dtype.type(1.0 / (k * k))
    for i in range(k):
        for j in range(k):
            gx[:, :, i:i + k * oh:k, j:j + k * ow:k] = share
    return gx


# ---------------------------------------------------------------------------- activations
def relu(x: Array) -> Array:
    return xp_of(x).maximum(x, 0)


def relu_backward(grad: Array, x: Array) -> Array:
    return grad * (x > 0)   # a bool mask multiplies as 0/1 and keeps float32


def softmax(x: Array) -> Array:
    """Along the last axis."""
    xp = xp_of(x)
    e = xp.exp(x - x.max(axis=-1, keepdims=True))
    e /= e.sum(axis=-1, keepdims=True)
    return e


def softmax_backward(grad: Array, y: Array) -> Array:
    return y * (grad - (grad * y).sum(axis=-1, keepdims=True))


def log_softmax(x: Array) -> Array:
    xp = xp_of(x)
    shifted = x - x.max(axis=-1, keepdims=True)
    return shifted - xp.log(xp.exp(shifted).sum(axis=-1, keepdims=True))


# ---------------------------------------------------------------------------- loss
def cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean negative log-likelihood of log_softmax(logits)."""
    xp = xp_of(logits)
    lsm = log_softmax(logits)
    return -lsm[xp.arange(logits.shape[0]), labels].mean()


def cross_entropy_backward(logits: Array, labels: Array) -> Array:
    xp = xp_of(logits)
    g = softmax(logits)
    g[xp.arange(logits.shape[0]), labels] -= 1.0
    g /= logits.shape[0]
    return g


# ---------------------------------------------------------------------------- optimizer
class Adam:
    """In-place NumPy Adam over a list of parameter arrays (PyTorch's update rule)."""

    def __init__(self, params: Sequence[Array], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = [xp_of(p).zeros_like(p) for p in self.params]
        self.v = [xp_of(p).zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, grads: Sequence[Array]) -> None:
        self.t += 1
        c1 = 1.0 - self.beta1 ** self.t
        c2 = 1.0 - self.beta2 ** self.t
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            adam_update(p, g, m, v, self.lr, self.beta1, self.beta2, self.eps, c1, c2)


def adam_update(p: Array, g: Array, m: Array, v: Array, lr: float, beta1: float, beta2: float,
                eps: float, c1: float, c2: float) -> None:
    """One in-place Adam step with bias corrections c1 = 1 - beta1^t, c2 = 1 - beta2^t."""
    xp = xp_of(p)
    m *= beta1
    m += (1.0 - beta1) * g
    v *= beta2
    v += (1.0 - beta2) * (g * g)
    denom = xp.sqrt(v / c2)
    denom += eps
    p -= (lr / c1) * m / denom


# ---------------------------------------------------------------------------- layered trainers
class _Layer:
    params: List[Array] = []

    def forward(self, x: Array) -> Array:  # pragma: no cover - interface
        raise NotImplementedError

    def backward(self, g: Array) -> Array:  # pragma: no cover - interface
        raise NotImplementedError

    def grads(self) -> List[Array]:
        return []


class _Linear(_Layer):
    def __init__(self, rng: np.random.Generator, n_in: int, n_out: int) -> None:
        bound = 1.0 / np.sqrt(n_in)
        self.w = rng.uniform(-bound, bound, (n_out, n_in)).astype(np.float32)   # (out, in)
        self.b = rng.uniform(-bound, bound, n_out).astype(np.float32)
        self.params = [self.w, self.b]

    def forward(self, x: Array) -> Array:
        self.x = x
        return x @ self.w.T + self.b

    def backward(self, g: Array) -> Array:
        self.gw = g.T @ self.x
        self.gb = g.sum(axis=0)
        return g @ self.w

    def grads(self) -> List[Array]:
        return [self.gw, self.gb]


class _Conv(_Layer):
    def __init__(self, rng: np.random.Generator, c_in: int, c_out: int, k: int) -> None:
        bound = 1.0 / np.sqrt(c_in * k * k)
        self.w = rng.uniform(-bound, bound, (c_out, c_in, k, k)).astype(np.float32)
        self.b = rng.uniform(-bound, bound, c_out).astype(np.float32)
        self.params = [self.w, self.b]

    def forward(self, x: Array) -> Array:
        self.x = x
        return conv2d(x, self.w, self.b)

    def backward(self, g: Array) -> Array:
        gx, self.gw, self.gb = conv2d_backward(g, self.x, self.w)
        return gx

    def grads(self) -> List[Array]:
        return [self.gw, self.gb]


class _ReLU(_Layer):
    def forward(self, x: Array) -> Array:
        self.y = relu(x)
        return self.y

    def backward(self, g: Array) -> Array:
        return relu_backward(g, self.y)


class _MaxPool(_Layer):
    def forward(self, x: Array) -> Array:
        self.x = x
        return max_pool2d(x, 2)

    def backward(self, g: Array) -> Array:
        return max_pool2d_backward(g, self.x, 2)


class _Flatten(_Layer):
    def forward(self, x: Array) -> Array:
        self.shape = x.shape
        return x.reshape(x.shape[0], -1)

    def backward(self, g: Array) -> Array:
        return g.reshape(self.shape)


class NumpyNet:
    """A stack of layers with softmax cross-entropy and Adam: ``train_step(x, y)`` returns the loss."""

    def __init__(self, layers: Sequence[_Layer], lr: float = 1e-3) -> None:
        self.layers = list(layers)
        self.opt = Adam([p for layer in self.layers for p in layer.params], lr=lr)

    def forward(self, x: Array) -> Array:
        for layer in self.layers:
            x = layer.forward(x)
        return x

    def train_step(self, x: Array, labels: Array) -> float:
        logits = self.forward(x)
        loss = float(cross_entropy(logits, labels))
        g = cross_entropy_backward(logits, labels)
        for layer in reversed(self.layers):
            g = layer.backward(g)
        self.opt.step([gr for layer in self.layers for gr in layer.grads()])
        return loss


def seed_mlp(seed: int = 0) -> NumpyNet:
    """784-256-256-10 ReLU MLP (the TensorFlow seed's network)."""
    rng = np.random.default_rng(seed)
    return NumpyNet([_Linear(rng, 784, 256), _ReLU(), _Linear(rng, 256, 256), _ReLU(),
                     _Linear(rng, 256, 10)])


def seed_cnn(seed: int = 0) -> NumpyNet:
    """conv 1->32 3x3, pool, conv 32->64 3x3, pool, dense 1600->64, dense 64->10 (the Keras seed)."""
    rng = np.random.default_rng(seed)
    return NumpyNet([_Conv(rng, 1, 32, 3), _ReLU(), _MaxPool(), _Conv(rng, 32, 64, 3), _ReLU(), _MaxPool(),
                     _Flatten(), _Linear(rng, 1600, 64), _ReLU(), _Linear(rng, 64, 10)])


SEED_NETS: Dict[str, Any] = {"mlp": seed_mlp, "cnn": seed_cnn}
