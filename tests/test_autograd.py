"""Tensor and the tape: every op's gradient against central differences, graph reuse, no_grad."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pytest

import deepkern as dk
from deepkern.autograd import Tensor

from .conftest import assert_close, gpu_available, randn


def numeric_grad(f: Callable[[], float], x: np.ndarray, eps: float = 1e-6) -> np.ndarray:
    """Central differences of the scalar f() with respect to x (perturbed in place, restored)."""
    grad = np.zeros(x.shape, dtype=np.float64)
    flat = x.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        hi = f()
        flat[i] = old - eps
        lo = f()
        flat[i] = old
        grad.reshape(-1)[i] = (hi - lo) / (2 * eps)
    return grad


def check_grads(fn: Callable[..., Tensor], arrays: Sequence[np.ndarray], rtol: float = 1e-6,
                atol: float = 1e-8) -> None:
    """fn(*tensors) -> Tensor of any shape; compares d sum(out * r)/d inputs with central differences.

    Runs in float64 (the Tensor algebra keeps float64 when given it), so tolerances are tight.
    """
    arrays = [np.array(a, dtype=np.float64) for a in arrays]
    tensors = [Tensor(a, requires_grad=True, dtype=np.float64) for a in arrays]
    out = fn(*tensors)
    weights = np.random.default_rng(7).standard_normal(out.shape)
    (out * Tensor(weights, dtype=np.float64)).sum().backward()

    def value() -> float:
        return float((fn(*[Tensor(a, dtype=np.float64) for a in arrays]).data * weights).sum())

    for i, (a, t) in enumerate(zip(arrays, tensors)):
        expected = numeric_grad(value, a)
        assert t.grad is not None, f"input {i} got no gradient"
        assert_close(t.grad, expected, rtol=rtol, atol=atol, what=f"grad of input {i}")


# ---------------------------------------------------------------------------- elementwise
@pytest.mark.parametrize("shapes", [((3, 5), (3, 5)), ((3, 5), (5,)), ((4, 1, 3), (2, 1)), ((1,), (2, 3))])
def test_binary_ops_with_broadcasting(rng, shapes):
    a, b = rng.standard_normal(shapes[0]), rng.standard_normal(shapes[1])
    b_pos = np.abs(b) + 0.5  # keep division away from 0
    check_grads(lambda x, y: x + y, [a, b])
    check_grads(lambda x, y: x - y, [a, b])
    check_grads(lambda x, y: x * y, [a, b])
    check_grads(lambda x, y: x / y, [a, b_pos])


def test_scalar_and_reflected_ops(rng):
    a = rng.standard_normal((2, 3))
    check_grads(lambda x: 2.5 + x, [a])
    check_grads(lambda x: 1.5 - x, [a])
    check_grads(lambda x: 3 * x - x * 0.5, [a])
    check_grads(lambda x: 1.0 / (x * x + 1), [a])
    check_grads(lambda x: -x, [a])
    check_grads(lambda x: x ** 3, [a])
    check_grads(lambda x: x ** 2, [a])
    check_grads(lambda x: (x * x + 1) ** 0.5, [a])


def test_reflected_ops_with_ndarray_on_the_left(rng):
    a = rng.standard_normal((2, 3)).astype(np.float32)
    t = Tensor(a, requires_grad=True)
    out = np.ones((2, 3), dtype=np.float32) * 2 - t
    assert isinstance(out, Tensor)
    out.sum().backward()
    assert_close(t.grad, np.full((2, 3), -1, dtype=np.float32))


def test_unary_ops(rng):
    a = rng.standard_normal((3, 4))
    pos = np.abs(a) + 0.3
    check_grads(lambda x: x.exp(), [a])
    check_grads(lambda x: x.log(), [pos])
    check_grads(lambda x: x.sqrt(), [pos])
    check_grads(lambda x: abs(x), [a])


def test_pow_rejects_tensor_exponent():
    t = Tensor([1.0, 2.0], requires_grad=True)
    with pytest.raises(TypeError, match="exponent"):
        t ** t


# ---------------------------------------------------------------------------- reductions and shapes
@pytest.mark.parametrize("axis,keepdims", [(None, False), (0, False), (1, True), ((0, 2), False), (-1, True)])
def test_sum_and_mean(rng, axis, keepdims):
    a = rng.standard_normal((3, 4, 5))
    check_grads(lambda x: x.sum(axis=axis, keepdims=keepdims), [a])
    check_grads(lambda x: x.mean(axis=axis, keepdims=keepdims), [a])


def test_mean_value(rng):
    a = randn(rng, 3, 7)
    assert_close(Tensor(a).mean(axis=1).numpy(), a.mean(axis=1), rtol=1e-5)


def test_reshape_transpose_flatten(rng):
    a = rng.standard_normal((2, 3, 4))
    check_grads(lambda x: x.reshape(6, 4), [a])
    check_grads(lambda x: x.reshape((4, -1)), [a])
    check_grads(lambda x: x.transpose(), [a])
    check_grads(lambda x: x.transpose(1, 0, 2), [a])
    check_grads(lambda x: x.transpose((2, 0, 1)) * x.transpose((2, 0, 1)), [a])
    check_grads(lambda x: x.flatten(), [a])
    check_grads(lambda x: x.reshape(6, 4).T, [a])
    with pytest.raises(ValueError, match="permutation"):
        Tensor(a).transpose(0, 0, 1)


def test_getitem_basic_and_fancy(rng):
    a = rng.standard_normal((5, 4))
    check_grads(lambda x: x[1:4, ::2], [a])
    check_grads(lambda x: x[2], [a])
    check_grads(lambda x: x[..., 1], [a])
    # repeated indices: the picked row receives both gradients
    check_grads(lambda x: x[np.array([0, 3, 0, 0])], [a])
    check_grads(lambda x: x[np.array([0, 1, 4]), np.array([3, 3, 0])], [a])
    check_grads(lambda x: x[Tensor(np.array([2, 2]))], [a])


# ---------------------------------------------------------------------------- matmul
@pytest.mark.parametrize("m,k,n", [(1, 1, 1), (3, 7, 5), (13, 2, 11)])
def test_matmul_2d_uses_kernels(rng, cpu_backend, m, k, n):
    a, b, g = randn(rng, m, k), randn(rng, k, n), randn(rng, m, n)
    ta, tb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    out = ta @ tb
    assert out.dtype == np.float32
    assert_close(out.numpy(), (a.astype(np.float64) @ b).astype(np.float32), rtol=1e-4, atol=1e-5)
    out.backward(g)
    g64 = g.astype(np.float64)
    assert_close(ta.grad, (g64 @ b.T).astype(np.float32), rtol=1e-4, atol=1e-5)
    assert_close(tb.grad, (a.T.astype(np.float64) @ g64).astype(np.float32), rtol=1e-4, atol=1e-5)


def test_matmul_on_transposed_views(rng, cpu_backend):
    # a non-contiguous operand (a transpose view) must be made contiguous before ops sees it
    a, b = randn(rng, 4, 3), randn(rng, 4, 5)
    ta, tb = Tensor(a, requires_grad=True), Tensor(b, requires_grad=True)
    (ta.T @ tb).sum().backward()
    assert_close(ta.grad, (np.ones((3, 5)) @ b.T.astype(np.float64)).T.astype(np.float32), rtol=1e-4)


def test_matmul_vectors_and_batches(rng):
    check_grads(lambda x, y: x @ y, [rng.standard_normal(4), rng.standard_normal(4)])
    check_grads(lambda x, y: x @ y, [rng.standard_normal(4), rng.standard_normal((4, 3))])
    check_grads(lambda x, y: x @ y, [rng.standard_normal((2, 4)), rng.standard_normal(4)])
    check_grads(lambda x, y: x @ y, [rng.standard_normal((2, 3, 4)), rng.standard_normal((4, 5))])
    check_grads(lambda x, y: x @ y, [rng.standard_normal((3, 4)), rng.standard_normal((2, 4, 2))])


# ---------------------------------------------------------------------------- the tape
def test_tensor_used_twice_accumulates(rng):
    a = rng.standard_normal((3, 3))
    check_grads(lambda x: x * x + x, [a])
    check_grads(lambda x: (x * 2) * (x * 2) + x.exp() * x, [a])
    x = Tensor(a, requires_grad=True, dtype=np.float64)
    y = x * 3
    z = y * y + y      # y is used three times
    z.sum().backward()
    assert_close(x.grad, 3 * (2 * 3 * a + 1), rtol=1e-12)


def test_deep_chain_has_no_recursion_limit():
    x = Tensor([1.0], requires_grad=True)
    y = x
    for _ in range(5000):
        y = y + 0.0
    y.sum().backward()
    assert x.grad[0] == 1.0


def test_leaf_gradients_accumulate_across_backward_calls(rng):
    a = randn(rng, 4)
    x = Tensor(a, requires_grad=True)
    (x * 2).sum().backward()
    first = x.grad
    (x * 3).sum().backward()
    assert_close(x.grad, np.full(4, 5, dtype=np.float32))
    assert_close(first, np.full(4, 2, dtype=np.float32), what="the earlier grad array was changed in place")


def test_incoming_gradient_is_never_modified(rng):
    a = randn(rng, 3, 4)
    g = randn(rng, 3, 4)
    g_copy = g.copy()
    x = Tensor(a, requires_grad=True)
    y = x + x          # both branches receive the same incoming array
    y.backward(g)
    assert np.array_equal(g, g_copy)
    assert_close(x.grad, 2 * g)


def test_non_scalar_backward_needs_grad():
    x = Tensor(np.ones((2, 2)), requires_grad=True)
    with pytest.raises(RuntimeError, match="single-element"):
        (x * 2).backward()
    with pytest.raises(ValueError, match="grad: expected shape"):
        (x * 2).backward(np.ones(3, dtype=np.float32))


def test_backward_twice_needs_retain_graph():
    x = Tensor([2.0], requires_grad=True)
    y = (x * x).sum()
    y.backward(retain_graph=True)
    y.backward()
    assert_close(x.grad, np.array([8.0], dtype=np.float32))
    with pytest.raises(RuntimeError, match="retain_graph"):
        y.backward()


def test_intermediate_grads_are_released_unless_retained():
    x = Tensor([1.0, 2.0], requires_grad=True)
    h = x * 3
    k = (x * 2).retain_grad()
    (h * k).sum().backward()
    assert h.grad is None
    assert_close(k.grad, np.array([3.0, 6.0], dtype=np.float32))
    assert h.requires_grad and not h.is_leaf and x.is_leaf


def test_backward_without_grad_raises():
    with pytest.raises(RuntimeError, match="does not require grad"):
        Tensor([1.0]).sum().backward()


# ---------------------------------------------------------------------------- no_grad
def test_no_grad_records_nothing():
    x = Tensor([1.0, 2.0], requires_grad=True)
    with dk.no_grad():
        assert not dk.is_grad_enabled()
        y = (x * 2).sum()
        with dk.enable_grad():
            z = (x * 2).sum()
    assert dk.is_grad_enabled()
    assert not y.requires_grad and y.is_leaf
    assert z.requires_grad
    with pytest.raises(RuntimeError):
        y.backward()


def test_no_grad_as_decorator_restores_on_error():
    @dk.no_grad()
    def broken(t: Tensor) -> Tensor:
        raise KeyError("boom")

    with pytest.raises(KeyError):
        broken(Tensor([1.0]))
    assert dk.is_grad_enabled()


def test_detach_cuts_the_graph():
    x = Tensor([3.0], requires_grad=True)
    y = x.detach() * x
    y.sum().backward()
    assert_close(x.grad, np.array([3.0], dtype=np.float32))


# ---------------------------------------------------------------------------- construction and conversion
def test_friendly_input_conversion():
    assert Tensor([[0, 1], [1, 1]]).dtype == np.float32
    assert Tensor(np.arange(4, dtype=np.float64)).dtype == np.float32
    assert Tensor(3).shape == ()
    labels = Tensor(np.array([1, 2, 0]))
    assert labels.dtype == np.int64
    transposed = Tensor(np.ones((3, 2), dtype=np.float32).T)
    assert transposed.data.flags.c_contiguous
    with pytest.raises(TypeError, match="requires_grad"):
        Tensor(np.array([1, 2]), requires_grad=True)
    with pytest.raises(TypeError, match="data"):
        Tensor("abc")


def test_scalars_keep_precision_and_integer_tensors_promote():
    assert (Tensor([1.0, 2.0]) * 0.1).dtype == np.float32
    assert (Tensor([1.0]) + np.float64(2)).dtype == np.float32
    halves = Tensor(np.array([1, 3])) * 0.5
    assert halves.numpy().tolist() == [0.5, 1.5]


def test_accessors():
    t = Tensor([[1.5, 2.0]], requires_grad=True)
    assert t.shape == (1, 2) and t.ndim == 2 and t.size == 2 and len(t) == 1
    assert t.device == "cpu"
    assert isinstance(t.numpy(), np.ndarray)
    assert Tensor([4.25]).item() == 4.25
    with pytest.raises(ValueError, match="single-element"):
        t.item()
    assert np.asarray(t).shape == (1, 2)
    assert "requires_grad=True" in repr(t)
    assert t.argmax(axis=1).tolist() == [1]


def test_to_device():
    t = Tensor([1.0, 2.0])
    assert t.to("cpu") is t
    with pytest.raises(ValueError, match="device"):
        t.to("tpu")
    if not gpu_available():
        with pytest.raises(RuntimeError, match="cuda"):
            t.to("cuda")
