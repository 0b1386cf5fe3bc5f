"""conv2d_backward's paths: the input_grad flag on every backend, and the C++ kernel's
grouped, multi-threaded and SIMD variants against the float64 reference.

``input_grad=False`` must leave the weight and bias gradients exactly as the full backward
computes them (only the input gradient's work is skipped). The C++ backward runs several
images per GEMM (their columns side by side), hands chunks of groups to the threads and adds
the partial weight gradients in chunk order; the shapes below give partial last groups,
batches below and above the thread count, 1x1 layers, padding, rows wider than one 16-float
vector and strides above 1 (the generic im2col/col2im), under each SIMD variant.
"""
from __future__ import annotations

from typing import Callable, List, Tuple

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends
from deepkern.backends import numpy as ref

from .conftest import CPU_BACKENDS_UNDER_TEST, assert_close, gpu_available, randn, simd_variant

# (x shape, w shape, stride, padding): awkward sizes, a 1x1 layer, the seed CNN's second layer
GEOMETRIES = [
    ((3, 2, 7, 9), (5, 2, 3, 2), (1, 2), (1, 0)),
    ((2, 3, 5, 5), (7, 3, 1, 1), (1, 1), (0, 0)),
    ((5, 32, 13, 13), (64, 32, 3, 3), (1, 1), (0, 0)),
    ((1, 1, 4, 3), (2, 1, 2, 3), (1, 1), (2, 1)),
]


def _backend_params() -> List[str]:
    names = ["numpy"] + list(CPU_BACKENDS_UNDER_TEST)
    if gpu_available():
        names += [name for name in ("cuda", "cupy") if backends.available(name)]
    return names


def _device_converters(name: str) -> Tuple[Callable, Callable]:
    if name in ("cuda", "cupy"):
        import cupy
        return cupy.asarray, cupy.asnumpy
    return (lambda a: a), (lambda a: a)


@pytest.mark.parametrize("backend", _backend_params())
@pytest.mark.parametrize("geometry", GEOMETRIES, ids=lambda g: "x{}w{}s{}p{}".format(*g))
@pytest.mark.parametrize("with_bias", [False, True])
def test_input_grad_false_skips_only_the_input_gradient(backend, geometry, with_bias, rng):
    xs, ws, stride, padding = geometry
    to_dev, to_host = _device_converters(backend)
    backends.set_backend(backend)
    x, w = to_dev(randn(rng, *xs)), to_dev(randn(rng, *ws))
    g = to_dev(randn(rng, *dk.ops.conv2d(x, w, stride=stride, padding=padding).shape))
    full = dk.ops.conv2d_backward(g, x, w, stride, padding, bias=with_bias)
    part = dk.ops.conv2d_backward(g, x, w, stride, padding, bias=with_bias, input_grad=False)
    assert full[0] is not None and part[0] is None
    np.testing.assert_array_equal(to_host(part[1]), to_host(full[1]))
    if with_bias:
        np.testing.assert_array_equal(to_host(part[2]), to_host(full[2]))
    else:
        assert part[2] is None and full[2] is None


def test_first_layer_backward_asks_for_no_input_gradient(monkeypatch, rng):
    """nn.functional.conv2d passes input_grad=x.requires_grad; the gradients are unchanged."""
    seen = []
    real = dk.ops.conv2d_backward

    def spy(*args, **kwargs):
        seen.append(kwargs.get("input_grad", True))
        return real(*args, **kwargs)

    monkeypatch.setattr(dk.ops, "conv2d_backward", spy)
    xd, wd, bd = randn(rng, 3, 2, 6, 5), randn(rng, 4, 2, 3, 3), randn(rng, 4)
    for needs_grad in (False, True):
        x = dk.Tensor(xd, requires_grad=needs_grad)
        w, b = dk.Tensor(wd, requires_grad=True), dk.Tensor(bd, requires_grad=True)
        out = dk.nn.functional.conv2d(x, w, b, padding=1)
        g = randn(rng, *out.data.shape)
        (out * dk.Tensor(g)).sum().backward()
        want = ref.conv2d_backward(g, xd, wd, (1, 1), (1, 1), True)
        assert seen[-1] is needs_grad
        if needs_grad:
            assert_close(x.grad, want[0], atol=1e-4, what="grad x")
        else:
            assert x.grad is None
        assert_close(w.grad, want[1], atol=1e-4, what="grad w")
        assert_close(b.grad, want[2], atol=1e-4, what="grad bias")


# ---------------------------------------------------------------------------- C++ kernel paths
_cpu = None
if backends.available("cpu"):
    from deepkern import _cpu

needs_cpu = pytest.mark.skipif(_cpu is None, reason="the C++ CPU backend is not built")


# batches 1..37 of the seed layer cover partial groups and more chunks than threads; the rest
# cover padding, tiny outputs (OW 1-2), rows wider than 16 floats, stride 2 and a 1x1 layer
PATH_SHAPES = [
    ((1, 32, 13, 13), (64, 32, 3, 3), (1, 1), (0, 0)),
    ((13, 32, 13, 13), (64, 32, 3, 3), (1, 1), (0, 0)),
    ((37, 8, 13, 13), (17, 8, 3, 3), (1, 1), (1, 1)),
    ((9, 3, 3, 2), (5, 3, 3, 2), (1, 1), (0, 0)),
    ((6, 2, 3, 4), (3, 2, 2, 3), (1, 1), (2, 2)),
    ((7, 3, 19, 23), (5, 3, 3, 5), (1, 1), (1, 2)),
    ((7, 3, 11, 17), (5, 3, 3, 3), (2, 3), (1, 1)),
    ((11, 5, 6, 7), (9, 5, 1, 1), (1, 1), (0, 0)),
    ((10, 1, 28, 28), (32, 1, 3, 3), (1, 1), (0, 0)),
]


@needs_cpu
@pytest.mark.parametrize("variant", ["avx512", "generic"])
@pytest.mark.parametrize("geometry", PATH_SHAPES, ids=lambda g: "x{}w{}s{}p{}".format(*g))
def test_cpu_backward_paths_match_reference(variant, geometry, rng):
    xs, ws, stride, padding = geometry
    backends.set_backend("cpu")
    x, w = randn(rng, *xs), randn(rng, *ws)
    g = randn(rng, *ref.conv2d(x, w, None, stride, padding).shape)
    want = ref.conv2d_backward(g, x, w, stride, padding, True)
    n_terms = xs[0] * g.shape[2] * g.shape[3]
    with simd_variant(variant):
        got = dk.ops.conv2d_backward(g, x, w, stride, padding, bias=True)
        again = dk.ops.conv2d_backward(g, x, w, stride, padding, bias=True)
        y = dk.ops.conv2d(x, w, None, stride, padding)
    assert_close(got[0], want[0], atol=1e-5 * max(1.0, np.sqrt(ws[0] * ws[2] * ws[3])), what="grad x")
    assert_close(got[1], want[1], atol=1e-5 * np.sqrt(n_terms), what="grad w")
    assert_close(got[2], want[2], atol=1e-5 * np.sqrt(n_terms), what="grad bias")
    assert_close(y, ref.conv2d(x, w, None, stride, padding), atol=1e-5 * np.sqrt(np.prod(ws[1:])), what="conv2d")
    for a, b in zip(got, again):  # the partial sums are added in a fixed order: same bits every run
        np.testing.assert_array_equal(a, b)


@needs_cpu
def test_cpu_backward_variants_agree_bitwise(rng):
    """The AVX-512 im2col/col2im add the same terms in the same order as the generic loops."""
    backends.set_backend("cpu")
    x, w = randn(rng, 6, 4, 9, 10), randn(rng, 5, 4, 3, 3)
    g = randn(rng, *ref.conv2d(x, w, None, (1, 1), (1, 1)).shape)
    results = []
    for variant in ("avx512", "generic"):
        with simd_variant(variant):
            results.append(dk.ops.conv2d_backward(g, x, w, 1, 1, bias=True))
    for a, b in zip(*results):
        np.testing.assert_array_equal(a, b)
