"""The NumPy peer of ``deepkern bench`` and ``benchmarks/``: sensible float32 NumPy.

The ops are the array-API backend's (``deepkern.backends.cupy``, written against the API NumPy
and CuPy share, so it runs on NumPy arrays too): BLAS matmul, im2col through stride tricks,
float32 throughout; not the float64 reference backend, because the benchmark asks "how much
faster than sensible NumPy". Only 2x2 pooling is written here, as k*k strided-view ufuncs:
the NumPy idiom a user would pick, 30-70x faster than the backend's general window reduction.

Also here: a small layered NumPy MLP/CNN trainer (forward, backward, Adam) with the seed
networks' architecture, the NumPy column of ``deepkern bench --train``.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .._device import xp_of
from ..backends import cupy as _arr

Array = Any  # numpy.ndarray or cupy.ndarray

__all__ = ["xp_of", "matmul", "conv2d", "conv2d_backward", "max_pool2d", "max_pool2d_backward", "avg_pool2d",
           "avg_pool2d_backward", "relu", "relu_backward", "softmax", "softmax_backward", "log_softmax",
           "cross_entropy", "cross_entropy_backward", "adam_update", "Adam", "NumpyNet", "SEED_NETS"]


# ---------------------------------------------------------------------------- the backend's ops, peer signatures
def matmul(a: Array, b: Array) -> Array:
    return a @ b


def conv2d(x: Array, w: Array, b: Optional[Array] = None, stride: int = 1) -> Array:
    """y (N, OC, OH, OW), padding 0."""
    return _arr.conv2d(x, w, b, (stride, stride), (0, 0))


def conv2d_backward(grad: Array, x: Array, w: Array, stride: int = 1) -> Tuple[Array, Array, Array]:
    """(gx, gw, gb) of conv2d."""
    return _arr.conv2d_backward(grad, x, w, (stride, stride), (0, 0), True)


def relu(x: Array) -> Array:
    return _arr.relu(x)


def relu_backward(grad: Array, x: Array) -> Array:
    return _arr.relu_backward(grad, x)


def softmax(x: Array) -> Array:
    """Along the last axis."""
    return _arr.softmax(x, -1)


def softmax_backward(grad: Array, y: Array) -> Array:
    return _arr.softmax_backward(grad, y, -1)


def log_softmax(x: Array) -> Array:
    return _arr.log_softmax(x, -1)


def cross_entropy(logits: Array, labels: Array) -> Array:
    """Mean negative log-likelihood of log_softmax(logits)."""
    return _arr.cross_entropy(logits, labels)


def cross_entropy_backward(logits: Array, labels: Array) -> Array:
    return _arr.cross_entropy_backward(logits, labels, 1.0)


def adam_update(p: Array, g: Array, m: Array, v: Array, step: int, lr: float, beta1: float, beta2: float,
                eps: float) -> None:
    """One in-place Adam step (PyTorch's rule, no weight decay)."""
    _arr.adam_update(p, g, m, v, step, lr, beta1, beta2, eps, 0.0)


class Adam:
    """In-place NumPy Adam over a list of parameter arrays."""

    def __init__(self, params: Sequence[Array], lr: float = 1e-3, beta1: float = 0.9,
                 beta2: float = 0.999, eps: float = 1e-8) -> None:
        self.params = list(params)
        self.lr, self.beta1, self.beta2, self.eps = lr, beta1, beta2, eps
        self.m = [xp_of(p).zeros_like(p) for p in self.params]
        self.v = [xp_of(p).zeros_like(p) for p in self.params]
        self.t = 0

    def step(self, grads: Sequence[Array]) -> None:
        self.t += 1
        for p, g, m, v in zip(self.params, grads, self.m, self.v):
            adam_update(p, g, m, v, self.t, self.lr, self.beta1, self.beta2, self.eps)


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
