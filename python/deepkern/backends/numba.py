"""The Numba backend: ``@njit(parallel=True, cache=True)`` kernels for every op.

Used for CPU arrays when the C++ module is not built, or when forced with
``DEEPKERN_BACKEND=numba``. Same semantics as the NumPy reference: GEMM-like products
accumulate in float32 with fused multiply-adds (like any BLAS), reductions over an axis
(softmax, losses, pooling sums, bias gradients) accumulate in float64. Every kernel sees
only float32 C-contiguous arrays, int64 labels and Python scalars, so each compiles once;
compiled code is cached on disk.
"""
from __future__ import annotations

from typing import Optional, Tuple

import numpy as np

try:
    import numba
    from numba import njit, prange
except ImportError:  # reported by unavailable_reason(); the module stays importable
    numba = None

from .._validate import window_shape
from . import _fused

Pair = Tuple[int, int]


def unavailable_reason() -> Optional[str]:
    """Why this backend cannot run here, or None when it can."""
    if numba is None:
        return "numba is not installed (pip install 'deepkern[numba]')"
    return None


if numba is not None:
    _parallel = njit(parallel=True, cache=True)
    _serial = njit(cache=True)

    # ------------------------------------------------------------------------ GEMM helpers
    @_serial
    def _gemm_into(A, B, C):
        """C (M, N) += A (M, K) @ B (K, N), row by row (the inner loop vectorises)."""
        M, K = A.shape
        N = B.shape[1]
        for i in range(M):
            for k in range(K):
                a = A[i, k]
                for j in range(N):
                    C[i, j] += a * B[k, j]

    @_parallel
    def _matmul_kernel(A, B, bias, has_bias, relu, C):
        # A is (M, K), B is (K, N), bias (N,) when has_bias, C (M, N) overwritten
        M, K = A.shape
        N = B.shape[1]
        for i in prange(M):
            for j in range(N):
                C[i, j] = 0.0
            for k in range(K):
                a = A[i, k]
                for j in range(N):
                    C[i, j] += a * B[k, j]
            if has_bias:
                for j in range(N):
                    C[i, j] += bias[j]
            if relu:
                for j in range(N):
                    if C[i, j] < 0.0:  # NaN passes through, as in the reference
                        C[i, j] = 0.0

    @_parallel
    def _relu_mask_kernel(G, out, R):
        # G, out, R are (n,): R = G where out > 0
        for i in prange(G.shape[0]):
            R[i] = G[i] if out[i] > 0.0 else 0.0

    @_parallel
    def _column_sum_kernel(G, out):
        # G is (M, N), out (N,): float64 sums down the columns
        M, N = G.shape
        for j in prange(N):
            acc = 0.0
            for i in range(M):
                acc += G[i, j]
            out[j] = acc

    # ------------------------------------------------------------------------ conv2d helpers
    @_serial
    def _im2col(xn, KH, KW, SH, SW, PH, PW, OH, OW, cols):
        """cols (C*KH*KW, OH*OW) of one image xn (C, H, W); zero where the window is in the padding."""
        C, H, W = xn.shape
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    row = (c * KH + i) * KW + j
                    for oh in range(OH):
                        h = oh * SH - PH + i
                        for ow in range(OW):
                            w = ow * SW - PW + j
                            if 0 <= h < H and 0 <= w < W:
                                cols[row, oh * OW + ow] = xn[c, h, w]
                            else:
                                cols[row, oh * OW + ow] = 0.0

    @_serial
    def _col2im_add(cols, KH, KW, SH, SW, PH, PW, OH, OW, gxn):
        """gxn (C, H, W) += the columns (C*KH*KW, OH*OW) scattered back over their windows."""
        C, H, W = gxn.shape
        for c in range(C):
            for i in range(KH):
                for j in range(KW):
                    row = (c * KH + i) * KW + j
                    for oh in range(OH):
                        h = oh * SH - PH + i
                        if h < 0 or h >= H:
                            continue
                        for ow in range(OW):
                            w = ow * SW - PW + j
                            if 0 <= w < W:
                                gxn[c, h, w] += cols[row, oh * OW + ow]

    @_parallel
    def _conv2d_kernel(x, w2, bias, has_bias, KH, KW, SH, SW, PH, PW, OH, OW, y):
        # x is (N, C, H, W), w2 is (OC, C*KH*KW), bias (OC,), y is (N, OC, OH*OW)
        N = x.shape[0]
        OC, CK = w2.shape
        for n in prange(N):
            cols = np.empty((CK, OH * OW), dtype=np.float32)
            _im2col(x[n], KH, KW, SH, SW, PH, PW, OH, OW, cols)
            yn = y[n]
            yn[:, :] = 0.0
            _gemm_into(w2, cols, yn)
            if has_bias:
                for o in range(OC):
                    yn[o, :] += bias[o]

    @_parallel
    def _conv2d_dgrad_kernel(gy, w2t, KH, KW, SH, SW, PH, PW, OH, OW, gx):
        # gy is (N, OC, OH*OW), w2t is (C*KH*KW, OC), gx is (N, C, H, W) zeroed
        N = gy.shape[0]
        CK = w2t.shape[0]
        for n in prange(N):
            dcols = np.zeros((CK, OH * OW), dtype=np.float32)
            _gemm_into(w2t, gy[n], dcols)
            _col2im_add(dcols, KH, KW, SH, SW, PH, PW, OH, OW, gx[n])

    @_parallel
    def _conv2d_wgrad_kernel(gy, x, KH, KW, SH, SW, PH, PW, OH, OW, chunks, partial):
        # gy is (N, OC, OH*OW), x is (N, C, H, W); partial (chunks, OC, C*KH*KW) zeroed:
        # each chunk of images sums into its own slice, the caller adds the slices.
        N = x.shape[0]
        CK = partial.shape[2]
        per = (N + chunks - 1) // chunks
        for ch in prange(chunks):
            cols = np.empty((CK, OH * OW), dtype=np.float32)
            for n in range(ch * per, min(N, (ch + 1) * per)):
                _im2col(x[n], KH, KW, SH, SW, PH, PW, OH, OW, cols)
                colst = np.ascontiguousarray(cols.T)          # (OH*OW, CK)
                _gemm_into(gy[n], colst, partial[ch])

    @_parallel
    def _channel_sum_kernel(gy, out):
        # gy is (N, OC, P), out (OC,): float64 sums over images and positions
        N, OC, P = gy.shape
        for o in prange(OC):
            acc = 0.0
            for n in range(N):
                for p in range(P):
                    acc += gy[n, o, p]
            out[o] = acc

    # ------------------------------------------------------------------------ pooling
    @njit(cache=True, inline="always")
    def _beats(v, best):
        # v replaces the window maximum so far: larger, or the first NaN (NaN propagates)
        return v > best or (v != v and best == best)

    @_parallel
    def _max_pool_kernel(x, KH, KW, SH, SW, PH, PW, y):
        # x is (P, H, W) planes, y is (P, OH, OW); padding is -inf, ties keep the first maximum,
        # a NaN is the maximum (the first NaN of the window wins), as in the reference
        planes, H, W = x.shape
        OH, OW = y.shape[1], y.shape[2]
        for q in prange(planes):
            for oh in range(OH):
                for ow in range(OW):
                    best = -np.inf
                    found = False
                    for i in range(KH):
                        h = oh * SH - PH + i
                        if h < 0 or h >= H:
                            continue
                        for j in range(KW):
                            w = ow * SW - PW + j
                            if 0 <= w < W and (not found or _beats(x[q, h, w], best)):
                                best = x[q, h, w]
                                found = True
                    y[q, oh, ow] = best

    @_parallel
    def _max_pool_backward_kernel(gy, x, KH, KW, SH, SW, PH, PW, gx):
        # gy is (P, OH, OW), x and gx (P, H, W), gx zeroed; each gradient goes to its window's first maximum
        planes, H, W = x.shape
        OH, OW = gy.shape[1], gy.shape[2]
        for q in prange(planes):
            for oh in range(OH):
                for ow in range(OW):
                    best = -np.inf
                    bh = -1
                    bw = -1
                    for i in range(KH):
                        h = oh * SH - PH + i
                        if h < 0 or h >= H:
                            continue
                        for j in range(KW):
                            w = ow * SW - PW + j
                            if 0 <= w < W and (bh < 0 or _beats(x[q, h, w], best)):
                                best = x[q, h, w]
                                bh = h
                                bw = w
                    if bh >= 0:  # a window entirely in padding (empty plane) credits nothing
                        gx[q, bh, bw] += gy[q, oh, ow]

    @_parallel
    def _avg_pool_kernel(x, KH, KW, SH, SW, PH, PW, y):
        # x is (P, H, W), y is (P, OH, OW); padded zeros count in the divisor
        planes, H, W = x.shape
        OH, OW = y.shape[1], y.shape[2]
        inv = 1.0 / (KH * KW)
        for q in prange(planes):
            for oh in range(OH):
                for ow in range(OW):
                    acc = 0.0
                    for i in range(KH):
                        h = oh * SH - PH + i
                        if h < 0 or h >= H:
                            continue
                        for j in range(KW):
                            w = ow * SW - PW + j
                            if 0 <= w < W:
                                acc += x[q, h, w]
                    y[q, oh, ow] = acc * inv

    @_parallel
    def _avg_pool_backward_kernel(gy, KH, KW, SH, SW, PH, PW, gx):
        # gy is (P, OH, OW), gx (P, H, W) zeroed
        planes, H, W = gx.shape
        OH, OW = gy.shape[1], gy.shape[2]
        inv = 1.0 / (KH * KW)
        for q in prange(planes):
            for oh in range(OH):
                for ow in range(OW):
                    share = gy[q, oh, ow] * inv
                    for i in range(KH):
                        h = oh * SH - PH + i
                        if h < 0 or h >= H:
                            continue
                        for j in range(KW):
                            w = ow * SW - PW + j
                            if 0 <= w < W:
                                gx[q, h, w] += share

    # ------------------------------------------------------------------------ activations
    @_parallel
    def _relu_kernel(x, y):
        # x, y are (n,)
        for i in prange(x.shape[0]):
            y[i] = 0.0 if x[i] < 0.0 else x[i]  # NaN passes through, as in the reference

    @_parallel
    def _softmax_kernel(x, log, y):
        # x, y are (outer, dim, inner); softmax (or log_softmax) along dim, float64 sums
        outer, dim, inner = x.shape
        for o in prange(outer):
            for i in range(inner):
                m = -np.inf
                for d in range(dim):
                    m = max(m, np.float64(x[o, d, i]))
                s = 0.0
                for d in range(dim):
                    s += np.exp(x[o, d, i] - m)
                if log:
                    shift = m + np.log(s)
                    for d in range(dim):
                        y[o, d, i] = x[o, d, i] - shift
                else:
                    for d in range(dim):
                        y[o, d, i] = np.exp(x[o, d, i] - m) / s

    @_parallel
    def _softmax_backward_kernel(g, y, log, gx):
        # g, y, gx are (outer, dim, inner)
        outer, dim, inner = y.shape
        for o in prange(outer):
            for i in range(inner):
                total = 0.0
                for d in range(dim):
                    total += g[o, d, i] if log else np.float64(g[o, d, i]) * y[o, d, i]
                for d in range(dim):
                    if log:
                        gx[o, d, i] = g[o, d, i] - np.exp(np.float64(y[o, d, i])) * total
                    else:
                        gx[o, d, i] = y[o, d, i] * (g[o, d, i] - total)

    # ------------------------------------------------------------------------ loss
    @_parallel
    def _cross_entropy_rows(logits, labels, grad_scale, want_grad, row_loss, glogits):
        # logits (N, C), labels (N,) int64; row_loss (N,) float64; glogits (N, C) when want_grad
        N, C = logits.shape
        for r in prange(N):
            m = -np.inf
            for c in range(C):
                m = max(m, np.float64(logits[r, c]))
            s = 0.0
            for c in range(C):
                s += np.exp(logits[r, c] - m)
            label = labels[r]
            # (m - logit) + log(s): m + log(s) first rounds log(s) away for large logits
            row_loss[r] = (m - logits[r, label]) + np.log(s)
            if want_grad:
                for c in range(C):
                    p = np.exp(logits[r, c] - m) / s
                    if c == label:
                        p -= 1.0
                    glogits[r, c] = p * grad_scale

    # ------------------------------------------------------------------------ optimizers
    @_parallel
    def _sgd_kernel(p, g, v, lr, momentum, wd, nesterov, use_velocity):
        # p, g, v are (n,); v is unused (may be empty) unless use_velocity
        for i in prange(p.shape[0]):
            gi = np.float64(g[i]) + wd * p[i]
            step = gi
            if use_velocity:
                vi = momentum * v[i] + gi
                v[i] = vi
                step = gi + momentum * vi if nesterov else vi
            p[i] = p[i] - lr * step

    @_parallel
    def _adam_kernel(p, g, m, v, lr, beta1, beta2, eps, wd, c1, c2):
        # p, g, m, v are (n,); c1, c2 are the bias corrections 1 - beta^step
        for i in prange(p.shape[0]):
            gi = np.float64(g[i]) + wd * p[i]
            mi = beta1 * m[i] + (1.0 - beta1) * gi
            vi = beta2 * v[i] + (1.0 - beta2) * gi * gi
            m[i] = mi
            v[i] = vi
            p[i] = p[i] - lr * (mi / c1) / (np.sqrt(vi / c2) + eps)

    @_parallel
    def _rmsprop_kernel(p, g, s, lr, alpha, eps, wd):
        # p, g, s are (n,)
        for i in prange(p.shape[0]):
            gi = np.float64(g[i]) + wd * p[i]
            si = alpha * s[i] + (1.0 - alpha) * gi * gi
            s[i] = si
            p[i] = p[i] - lr * gi / (np.sqrt(si) + eps)


_EMPTY = np.zeros(0, dtype=np.float32)


def _c(x: np.ndarray) -> np.ndarray:
    """A C-contiguous float32 copy of a transposed view (kernels see one layout only)."""
    return np.ascontiguousarray(x, dtype=np.float32)


def _gemm(a: np.ndarray, b: np.ndarray, bias=None, relu: bool = False) -> np.ndarray:
    out = np.empty((a.shape[0], b.shape[1]), dtype=np.float32)
    _matmul_kernel(_c(a), _c(b), _EMPTY if bias is None else bias, bias is not None, bool(relu), out)
    return out


# ---------------------------------------------------------------------------- matmul
def matmul(a, b, bias, relu: bool, trans_a: bool, trans_b: bool):
    return _gemm(a.T if trans_a else a, b.T if trans_b else b, bias, relu)


def matmul_backward(grad_out, a, b, out, trans_a: bool, trans_b: bool, want_bias: bool, want_a: bool = True):
    g = grad_out
    if out is not None:  # fused relu: the gradient flows where the output was positive
        g = np.empty_like(grad_out)
        _relu_mask_kernel(grad_out.reshape(-1), out.reshape(-1), g.reshape(-1))
    op_a = a.T if trans_a else a
    op_b = b.T if trans_b else b
    grad_a = None if not want_a else _gemm(op_b, g.T) if trans_a else _gemm(g, op_b.T)
    grad_b = _gemm(g.T, op_a) if trans_b else _gemm(op_a.T, g)
    grad_bias = None
    if want_bias:
        grad_bias = np.empty(g.shape[1], dtype=np.float32)
        _column_sum_kernel(g, grad_bias)
    return grad_a, grad_b, grad_bias


# ---------------------------------------------------------------------------- conv2d
def _out_size(h: int, w: int, kh: int, kw: int, stride: Pair, padding: Pair) -> Pair:
    return window_shape(h, w, (kh, kw), stride, padding)


def conv2d(x, w, bias, stride: Pair, padding: Pair):
    n = x.shape[0]
    oc, _, kh, kw = w.shape
    oh, ow = _out_size(x.shape[2], x.shape[3], kh, kw, stride, padding)
    y = np.empty((n, oc, oh * ow), dtype=np.float32)
    _conv2d_kernel(x, w.reshape(oc, -1), _EMPTY if bias is None else bias, bias is not None,
                   kh, kw, stride[0], stride[1], padding[0], padding[1], oh, ow, y)
    return y.reshape(n, oc, oh, ow)


def conv2d_backward(grad_out, x, w, stride: Pair, padding: Pair, want_bias: bool, want_input: bool = True):
    n = x.shape[0]
    oc, _, kh, kw = w.shape
    oh, ow = grad_out.shape[2], grad_out.shape[3]
    geometry = (kh, kw, stride[0], stride[1], padding[0], padding[1], oh, ow)
    gy = grad_out.reshape(n, oc, oh * ow)
    grad_x = None
    if want_input:
        grad_x = np.zeros(x.shape, dtype=np.float32)
        _conv2d_dgrad_kernel(gy, _c(w.reshape(oc, -1).T), *geometry, grad_x)
    chunks = max(1, min(n, numba.get_num_threads()))
    partial = np.zeros((chunks, oc, w[0].size), dtype=np.float32)
    _conv2d_wgrad_kernel(gy, x, *geometry, chunks, partial)
    grad_w = partial.sum(axis=0, dtype=np.float64).astype(np.float32).reshape(w.shape)
    grad_b = None
    if want_bias:
        grad_b = np.empty(oc, dtype=np.float32)
        _channel_sum_kernel(gy, grad_b)
    return grad_x, grad_w, grad_b


# ---------------------------------------------------------------------------- pooling
# relu(conv2d) [2x2 max-pooled, with the routes] and its gradients from this backend's ops
conv2d_relu, conv2d_relu_backward = _fused.backend_ops(globals(), lambda x: np)


def _planes(x: np.ndarray) -> np.ndarray:
    return x.reshape(-1, x.shape[2], x.shape[3])


def max_pool2d(x, kernel: Pair, stride: Pair, padding: Pair):
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, kernel[0], kernel[1], stride, padding)
    y = np.empty((n, c, oh, ow), dtype=np.float32)
    _max_pool_kernel(_planes(x), kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], _planes(y))
    return y


def max_pool2d_backward(grad_out, x, kernel: Pair, stride: Pair, padding: Pair):
    grad_x = np.zeros(x.shape, dtype=np.float32)
    _max_pool_backward_kernel(_planes(grad_out), _planes(x), kernel[0], kernel[1], stride[0], stride[1],
                              padding[0], padding[1], _planes(grad_x))
    return grad_x


def avg_pool2d(x, kernel: Pair, stride: Pair, padding: Pair):
    n, c, h, w = x.shape
    oh, ow = _out_size(h, w, kernel[0], kernel[1], stride, padding)
    y = np.empty((n, c, oh, ow), dtype=np.float32)
    _avg_pool_kernel(_planes(x), kernel[0], kernel[1], stride[0], stride[1], padding[0], padding[1], _planes(y))
    return y


def avg_pool2d_backward(grad_out, x, kernel: Pair, stride: Pair, padding: Pair):
    grad_x = np.zeros(x.shape, dtype=np.float32)
    _avg_pool_backward_kernel(_planes(grad_out), kernel[0], kernel[1], stride[0], stride[1],
                              padding[0], padding[1], _planes(grad_x))
    return grad_x


# ---------------------------------------------------------------------------- activations
def relu(x):
    y = np.empty_like(x)
    _relu_kernel(x.reshape(-1), y.reshape(-1))
    return y


def relu_backward(grad_out, x):
    grad_x = np.empty_like(x)
    _relu_mask_kernel(grad_out.reshape(-1), x.reshape(-1), grad_x.reshape(-1))
    return grad_x


def _split(x: np.ndarray, axis: int) -> np.ndarray:
    """(outer, dim, inner) view of x around axis."""
    outer = int(np.prod(x.shape[:axis], dtype=np.int64))
    return x.reshape(outer, x.shape[axis], -1)


def softmax(x, axis: int):
    y = np.empty_like(x)
    _softmax_kernel(_split(x, axis), False, _split(y, axis))
    return y


def log_softmax(x, axis: int):
    y = np.empty_like(x)
    _softmax_kernel(_split(x, axis), True, _split(y, axis))
    return y


def softmax_backward(grad_out, y, axis: int):
    grad_x = np.empty_like(y)
    _softmax_backward_kernel(_split(grad_out, axis), _split(y, axis), False, _split(grad_x, axis))
    return grad_x


def log_softmax_backward(grad_out, y, axis: int):
    grad_x = np.empty_like(y)
    _softmax_backward_kernel(_split(grad_out, axis), _split(y, axis), True, _split(grad_x, axis))
    return grad_x


# ---------------------------------------------------------------------------- loss
_EMPTY2 = np.zeros((0, 0), dtype=np.float32)


def cross_entropy(logits, labels):
    row_loss = np.empty(logits.shape[0], dtype=np.float64)
    _cross_entropy_rows(logits, labels.astype(np.int64, copy=False), 0.0, False, row_loss, _EMPTY2)
    return np.asarray(row_loss.mean(), dtype=np.float32)


def cross_entropy_backward(logits, labels, grad: float):
    n = logits.shape[0]
    row_loss = np.empty(n, dtype=np.float64)
    grad_logits = np.empty_like(logits)
    _cross_entropy_rows(logits, labels.astype(np.int64, copy=False), float(grad) / n, True, row_loss, grad_logits)
    return grad_logits


# ---------------------------------------------------------------------------- optimizer updates
def sgd_update(param, grad, velocity, lr, momentum, weight_decay, nesterov):
    use_velocity = momentum > 0
    v = velocity.reshape(-1) if use_velocity else _EMPTY
    _sgd_kernel(param.reshape(-1), grad.reshape(-1), v, float(lr), float(momentum), float(weight_decay),
                bool(nesterov), use_velocity)


def adam_update(param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay):
    c1 = 1.0 - float(beta1) ** int(step)
    c2 = 1.0 - float(beta2) ** int(step)
    _adam_kernel(param.reshape(-1), grad.reshape(-1), m.reshape(-1), v.reshape(-1), float(lr), float(beta1),
                 float(beta2), float(eps), float(weight_decay), c1, c2)


def rmsprop_update(param, grad, square_avg, lr, alpha, eps, weight_decay):
    _rmsprop_kernel(param.reshape(-1), grad.reshape(-1), square_avg.reshape(-1), float(lr), float(alpha),
                    float(eps), float(weight_decay))
