"""The per-step fast paths of the framework (benchmarks/RESULTS.md, "per-step framework overhead"):
each usual case skips work, and every other case still meets the full rule it stands in for --
the same error naming the argument, the same values and gradients."""
from __future__ import annotations

from typing import Iterator, List, Tuple

import numpy as np
import pytest

import deepkern as dk
from deepkern import nn, optim
from deepkern._device import move
from deepkern._precision import bf16_supported
from deepkern._validate import INDEX_LIMIT, check_array, check_labels, same_device
from deepkern.autograd import Tensor
from deepkern.nn import functional as F

from .conftest import randn


def _misaligned(shape: Tuple[int, ...]) -> np.ndarray:
    """A C-contiguous float32 array starting one byte into its buffer."""
    n = int(np.prod(shape))
    raw = np.zeros(n * 4 + 1, np.uint8)
    x = np.frombuffer(raw.data, dtype=np.float32, count=n, offset=1).reshape(shape)
    assert x.flags.c_contiguous and not x.flags.aligned
    return x


class _Sub(np.ndarray):
    pass


# (array, check_array's ndim, dtype) -> None (accepted) or (error type, words of the message)
ARRAYS = {
    "plain": (np.ones((2, 3), np.float32), 2, np.float32, None),
    "any rank": (np.ones((2, 3, 4), np.float32), None, np.float32, None),
    "0-d": (np.ones((), np.float32), None, np.float32, None),
    "rank tuple": (np.ones(3, np.float32), (1, 2), np.float32, None),
    "subclass": (np.ones((2, 3), np.float32).view(_Sub), 2, np.float32, None),
    "equal dtype object": (np.ones(3, np.dtype(np.float32, metadata={"k": 1})), 1, np.float32, None),
    "other dtype asked": (np.ones(3, np.int64), 1, np.int64, None),
    "float64": (np.ones((2, 3)), 2, np.float32, (TypeError, "x: expected dtype float32, got float64")),
    "big-endian": (np.ones((2, 3), ">f4"), 2, np.float32, (TypeError, "x: expected dtype float32")),
    "float32 not asked": (np.ones(3, np.float32), 1, np.int64, (TypeError, "x: expected dtype int64")),
    "rank": (np.ones(3, np.float32), 2, np.float32, (ValueError, "x: expected a 2-D array, got shape (3,)")),
    "empty": (np.ones((0, 3), np.float32), 2, np.float32, (ValueError, "x: expected a non-empty array")),
    "transposed": (np.ones((3, 2), np.float32).T, 2, np.float32, (ValueError, "x: expected a C-contiguous")),
    "misaligned": (_misaligned((2, 3)), 2, np.float32, (ValueError, "x: expected a buffer aligned")),
    "huge": (np.lib.stride_tricks.as_strided(np.ones(1, np.float32), (INDEX_LIMIT + 1,), (0,)), 1, np.float32,
             (ValueError, "exceeds the kernels' 32-bit index limit")),
    "list": ([1.0, 2.0], None, np.float32, (TypeError, "x: expected a numpy.ndarray or cupy.ndarray, got list")),
}


@pytest.mark.parametrize("case", list(ARRAYS))
def test_check_array_accepts_and_refuses_as_its_rules_say(case):
    x, ndim, dtype, outcome = ARRAYS[case]
    if outcome is None:
        check_array(x, "x", ndim, dtype)
        return
    kind, words = outcome
    with pytest.raises(kind) as info:
        check_array(x, "x", ndim, dtype)
    assert words in str(info.value)


def test_same_device_still_refuses_a_gpu_array_beside_a_cpu_one():
    class FakeGpuArray:   # the CUDA array interface is what marks a GPU array
        __cuda_array_interface__ = {"shape": (3,), "typestr": "<f4", "data": (0, False), "version": 3}

    same_device("a", np.ones(3, np.float32), "b", np.ones(3, np.float32))
    with pytest.raises(ValueError, match="b is on the GPU but a is on the CPU"):
        same_device("a", np.ones(3, np.float32), "b", FakeGpuArray())


@pytest.mark.parametrize("dtype", [np.int64, np.int32])
@pytest.mark.parametrize("labels,bad", [([0, 3, 1], None), ([0, 4, 1], 4), ([0, -1, 2], -1), ([-7, 9, 2], -7),
                                        ([2**31 - 1, 0, 0], 2**31 - 1), ([-2**31, 0, 0], -2**31)])
def test_check_labels_finds_every_label_out_of_range(dtype, labels, bad):
    """One pass over the labels read as unsigned numbers; the message names the smallest label
    when one is negative, else the largest, as the two-pass check did."""
    arr = np.array(labels, dtype=dtype)
    if bad is None:
        check_labels(arr, "labels", 3, 4)
        return
    with pytest.raises(ValueError, match=rf"labels: label {bad} is out of range for 4 classes"):
        check_labels(arr, "labels", 3, 4)


def test_labels_out_of_range_in_a_later_step_are_refused(rng):
    model, opt = nn.Linear(5, 3), None
    opt = optim.Adam(model.parameters(), lr=0.1)
    x = Tensor(randn(rng, 4, 5))
    for labels in ([0, 1, 2, 1], [0, 2, 2, 1]):
        opt.zero_grad()
        F.cross_entropy(model(x), np.array(labels)).backward()
        opt.step()
    before = model.weight.numpy().copy()
    with pytest.raises(ValueError, match="labels: label 3 is out of range for 3 classes"):
        F.cross_entropy(model(x), np.array([0, 3, 2, 1]))
    with pytest.raises(ValueError, match="labels: label -1 is out of range"):
        F.cross_entropy(model(x), np.array([0, 1, -1, 1], np.int32))
    assert np.array_equal(model.weight.numpy(), before)


def test_cross_entropy_takes_labels_of_any_layout_and_kind(rng):
    """int64/int32 C-contiguous labels go to ops as they are; a strided view (refused by ops)
    is made contiguous first, as are float labels holding whole numbers and label Tensors."""
    logits = randn(rng, 6, 4)
    labels = np.array([3, 0, 2, 2, 1, 0])
    expected = F.cross_entropy(Tensor(logits), labels).item()
    strided = np.repeat(labels, 2)[::2]
    assert not strided.flags.c_contiguous
    for given in (strided, labels.astype(np.int32), labels.astype(np.float32), Tensor(labels)):
        x = Tensor(logits, requires_grad=True)
        loss = F.cross_entropy(x, given)
        loss.backward()
        assert loss.item() == expected
        want = Tensor(logits, requires_grad=True)
        F.cross_entropy(want, labels).backward()
        assert np.array_equal(x.grad, want.grad)


def test_move_makes_a_strided_host_array_contiguous():
    a = np.arange(12, dtype=np.float32).reshape(3, 4).T
    moved = move(a, "cpu")
    assert moved.flags.c_contiguous and np.array_equal(moved, a)
    b = np.ones(3, np.float32)
    assert move(b, "cpu") is b


@pytest.mark.parametrize("shape", [(), (1,), (1, 1)])
def test_backward_of_any_single_element_tensor(rng, shape):
    w = Tensor(randn(rng, 3), requires_grad=True)
    (w * w).sum().reshape(shape).backward()
    assert np.array_equal(w.grad, 2 * w.numpy())


def _old_topological_order(root: Tensor) -> List[Tensor]:
    """The iterative DFS as it was, every node pushed and popped (the order the hooks saw)."""
    order: List[Tensor] = []
    seen = {id(root)}
    stack: List[Tuple[Tensor, Iterator[Tensor]]] = [(root, iter(root._parents))]
    while stack:
        node, parents = stack[-1]
        for p in parents:
            if id(p) not in seen:
                seen.add(id(p))
                stack.append((p, iter(p._parents)))
                break
        else:
            stack.pop()
            order.append(node)
    return order


def test_topological_order_keeps_the_order_of_the_plain_dfs(rng):
    """Leaves are placed at once instead of pushed and popped: the same order, on a chain, a
    diamond, shared and repeated leaves and a deep graph."""
    a, b, c = (Tensor(randn(rng, 4), requires_grad=True) for _ in range(3))
    h = a * b + c
    diamond = (h * a).sum() + (h * h * b).sum() + (a + a).sum()
    chain = a
    for _ in range(3000):   # deeper than the recursion limit
        chain = chain * 1.0001 + b
    for root in (diamond, chain.sum(), (a * 2).sum()):
        assert [id(n) for n in root._topological_order()] == [id(n) for n in _old_topological_order(root)]


def test_linear_on_inputs_of_any_rank_matches_the_2d_form(rng):
    lin = nn.Linear(5, 3)
    x3 = randn(rng, 2, 4, 5)
    for x in (x3, x3[0, 0]):
        t = Tensor(x, requires_grad=True)
        out = lin(t)
        flat = Tensor(x.reshape(-1, 5), requires_grad=True)
        ref = lin(flat)
        assert out.shape == x.shape[:-1] + (3,) and np.array_equal(out.numpy().reshape(-1, 3), ref.numpy())
        g = randn(rng, *out.shape)
        out.backward(g)
        ref.backward(g.reshape(-1, 3))
        assert t.grad.shape == x.shape and np.array_equal(t.grad.reshape(-1, 5), flat.grad)


def test_a_backward_runs_in_its_forwards_precision_either_way(rng):
    """A fp32 forward's backward stays fp32 inside a bf16 block, a bf16 forward's is bf16 outside."""
    if not bf16_supported():
        pytest.skip("no AVX512-BF16 on this CPU")
    x, w, ones = randn(rng, 9, 40), randn(rng, 7, 40), np.ones((9, 7), np.float32)

    def weight_grad(forward: str, backward: str) -> np.ndarray:
        wt = Tensor(w, requires_grad=True)
        with dk.precision(forward):
            y = F.linear(Tensor(x), wt)
        with dk.precision(backward):
            y.backward(ones)
        return wt.grad

    fp32, bf16 = weight_grad("fp32", "fp32"), weight_grad("bf16", "bf16")
    assert not np.array_equal(fp32, bf16)
    assert np.array_equal(weight_grad("fp32", "bf16"), fp32)
    assert np.array_equal(weight_grad("bf16", "fp32"), bf16)


def test_tensor_wraps_a_plain_float32_array_and_converts_the_rest():
    a = np.ones((2, 3), np.float32)
    assert Tensor(a).data is a
    for other in (a.T, a.astype(np.float64), a.astype(">f4"), [[1.0, 2.0]]):
        data = Tensor(other).data
        assert data.dtype == np.float32 and data.dtype.isnative and data.flags.c_contiguous
        assert np.array_equal(data, np.asarray(other, np.float32))
    assert Tensor(a, dtype=np.float64).data.dtype == np.float64


@pytest.mark.parametrize("backend", ["cpu", "numpy"])
@pytest.mark.parametrize("dtype", [np.int64, np.int32])
def test_labels_out_of_range_are_refused_in_ops_words_on_every_backend(rng, backend, dtype):
    """The C++ backend reads the labels itself (ops then skips its own pass); the error is ops' all
    the same: the smallest label when one is negative, else the largest, for the loss and its
    backward alike."""
    if not dk.backends.available(backend):
        pytest.skip(f"{backend} backend not built")
    logits = randn(rng, 4, 3)
    dk.set_backend(backend)
    try:
        for labels, bad in (([0, 5, 2, 3], 5), ([0, 5, -2, -1], -2)):
            labels = np.array(labels, dtype=dtype)
            message = rf"^labels: label {bad} is out of range for 3 classes \(expected 0 <= label < 3\)$"
            with pytest.raises(ValueError, match=message):
                dk.ops.cross_entropy(logits, labels)
            with pytest.raises(ValueError, match=message):
                dk.ops.cross_entropy_backward(logits, labels, 1.0)
        good = np.array([0, 2, 2, 1], dtype=dtype)
        assert np.isfinite(dk.ops.cross_entropy(logits, good))
    finally:
        dk.set_backend(None)


def test_the_cpu_backend_is_left_the_label_range(rng, monkeypatch):
    if not dk.backends.available("cpu"):
        pytest.skip("cpu backend not built")
    from deepkern import ops
    asked = []
    check = ops.check_labels
    monkeypatch.setattr(ops, "check_labels", lambda *a, **k: asked.append(k.get("check_range", True)) or check(*a, **k))
    dk.set_backend("cpu")
    try:
        ops.cross_entropy(randn(rng, 4, 3), np.array([0, 1, 2, 1]))
    finally:
        dk.set_backend(None)
    assert asked == [False]
