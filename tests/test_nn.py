"""nn.functional gradients against float64 central differences of the NumPy reference; Module,
Sequential (with the Linear+ReLU fusion), layers, init and state_dict."""
from __future__ import annotations

from typing import Callable, Sequence

import numpy as np
import pytest

import deepkern as dk
from deepkern import nn
from deepkern.autograd import Tensor
from deepkern._validate import pair
from deepkern.backends import numpy as ref
from deepkern.nn import functional as F

from .conftest import assert_close, randn
from .test_autograd import numeric_grad


def check_against_reference(fn: Callable[..., Tensor], ref_fn: Callable[..., np.ndarray],
                            arrays: Sequence[np.ndarray], rtol: float = 2e-3, atol: float = 2e-4) -> None:
    """Autograd grads of sum(fn(*tensors) * r) (float32, through the kernels) against central
    differences of the float64 reference forward ref_fn(*arrays64)."""
    rng = np.random.default_rng(11)
    tensors = [Tensor(a, requires_grad=True) for a in arrays]
    out = fn(*tensors)
    weights = rng.standard_normal(out.shape).astype(np.float32)
    expected_out = ref_fn(*[a.astype(np.float64) for a in arrays])
    assert_close(out.numpy(), np.asarray(expected_out, dtype=np.float32), rtol=1e-4, atol=1e-5, what="forward")
    (out * Tensor(weights)).sum().backward()
    arrays64 = [a.astype(np.float64) for a in arrays]
    w64 = weights.astype(np.float64)

    def value() -> float:
        return float((np.asarray(ref_fn(*arrays64)) * w64).sum())

    for i, (a64, t) in enumerate(zip(arrays64, tensors)):
        expected = numeric_grad(value, a64)
        assert t.grad is not None, f"input {i} got no gradient"
        assert_close(t.grad, expected.astype(np.float32), rtol=rtol, atol=atol, what=f"grad of input {i}")


# ---------------------------------------------------------------------------- functional
def _linear_ref(x, w, b=None, relu=False):
    out = x @ w.T + (0 if b is None else b)
    return np.maximum(out, 0) if relu else out


@pytest.mark.parametrize("n,fin,fout", [(1, 1, 1), (5, 7, 3), (4, 13, 11)])
def test_linear_grad(rng, cpu_backend, n, fin, fout):
    x, w, b = randn(rng, n, fin), randn(rng, fout, fin), randn(rng, fout)
    check_against_reference(F.linear, _linear_ref, [x, w, b])
    check_against_reference(lambda x, w: F.linear(x, w), _linear_ref, [x, w])


def test_linear_fused_relu_grad(rng, cpu_backend):
    x, w, b = randn(rng, 6, 5), randn(rng, 7, 5), randn(rng, 7)
    check_against_reference(lambda x, w, b: F.linear(x, w, b, activation="relu"),
                            lambda x, w, b: _linear_ref(x, w, b, relu=True), [x, w, b])


def test_linear_only_computes_needed_grads(rng, cpu_backend):
    # x without requires_grad (the first layer): weight and bias grads still exact
    x, w, b = randn(rng, 4, 3), randn(rng, 2, 3), randn(rng, 2)
    tw, tb = Tensor(w, requires_grad=True), Tensor(b, requires_grad=True)
    out = F.linear(Tensor(x), tw, tb, activation="relu")
    g = randn(rng, 4, 2)
    out.backward(g)
    mask = (x.astype(np.float64) @ w.T + b) > 0
    gm = np.where(mask, g, 0)
    assert_close(tw.grad, (gm.T @ x).astype(np.float32), rtol=1e-4, atol=1e-5)
    assert_close(tb.grad, gm.sum(0).astype(np.float32), rtol=1e-4, atol=1e-5)


def test_linear_batched_input(rng, cpu_backend):
    x, w, b = randn(rng, 2, 3, 5), randn(rng, 4, 5), randn(rng, 4)
    check_against_reference(F.linear, _linear_ref, [x, w, b])
    assert F.linear(Tensor(randn(rng, 5)), Tensor(w)).shape == (4,)


def test_linear_rejects_bad_shapes(rng):
    with pytest.raises(ValueError, match="in_features"):
        F.linear(Tensor(randn(rng, 2, 3)), Tensor(randn(rng, 4, 5)))
    with pytest.raises(ValueError, match="activation"):
        F.linear(Tensor(randn(rng, 2, 3)), Tensor(randn(rng, 4, 3)), activation="gelu")


@pytest.mark.parametrize("stride,padding", [(1, 0), (2, 1), ((1, 2), (0, 1))])
def test_conv2d_grad(rng, cpu_backend, stride, padding):
    x, w, b = randn(rng, 2, 3, 6, 5), randn(rng, 4, 3, 3, 2), randn(rng, 4)
    st, pd = pair(stride, "s", 1), pair(padding, "p", 0)
    check_against_reference(lambda x, w, b: F.conv2d(x, w, b, stride, padding),
                            lambda x, w, b: ref.conv2d(x, w, b, st, pd), [x, w, b])


def test_conv2d_without_bias(rng, cpu_backend):
    x, w = randn(rng, 1, 2, 5, 5), randn(rng, 3, 2, 3, 3)
    check_against_reference(lambda x, w: F.conv2d(x, w), lambda x, w: ref.conv2d(x, w, None, (1, 1), (0, 0)),
                            [x, w])


@pytest.mark.parametrize("kernel,stride,padding", [(2, None, 0), (3, 2, 1), ((2, 3), (1, 2), 0)])
def test_pool_grads(rng, cpu_backend, kernel, stride, padding):
    x = randn(rng, 2, 3, 7, 6)
    k = pair(kernel, "k", 1)
    s = k if stride is None else pair(stride, "s", 1)
    p = pair(padding, "p", 0)
    check_against_reference(lambda x: F.max_pool2d(x, kernel, stride, padding),
                            lambda x: ref.max_pool2d(x, k, s, p), [x])
    check_against_reference(lambda x: F.avg_pool2d(x, kernel, stride, padding),
                            lambda x: ref.avg_pool2d(x, k, s, p), [x])


def test_activation_grads(rng, cpu_backend):
    x = randn(rng, 3, 7)
    check_against_reference(F.relu, lambda x: np.maximum(x, 0), [x])
    check_against_reference(F.sigmoid, lambda x: 1 / (1 + np.exp(-x)), [x])
    check_against_reference(F.tanh, np.tanh, [x])
    for axis in (0, -1):
        check_against_reference(lambda t: F.softmax(t, axis), lambda a: ref.softmax(a, axis % 2), [x])
        check_against_reference(lambda t: F.log_softmax(t, axis), lambda a: ref.log_softmax(a, axis % 2), [x])


def test_sigmoid_is_stable_for_large_inputs():
    with np.errstate(all="raise"):
        out = F.sigmoid(Tensor([-1000.0, 0.0, 1000.0])).numpy()
    assert_close(out, np.array([0.0, 0.5, 1.0], dtype=np.float32))


def test_tensor_activation_methods(rng):
    x = randn(rng, 2, 3)
    t = Tensor(x)
    assert_close(t.relu().numpy(), np.maximum(x, 0))
    assert_close(t.softmax().numpy(), ref.softmax(x, 1), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,c", [(1, 2), (5, 3), (7, 11)])
def test_cross_entropy_grad(rng, cpu_backend, n, c):
    logits = randn(rng, n, c)
    labels = rng.integers(0, c, size=n)
    check_against_reference(lambda t: F.cross_entropy(t, labels), lambda a: ref.cross_entropy(a, labels), [logits])
    # labels as int32 array, Tensor, or list give the same loss
    expected = F.cross_entropy(Tensor(logits), labels).item()
    for form in (labels.astype(np.int32), Tensor(labels), labels.tolist()):
        assert F.cross_entropy(Tensor(logits), form).item() == pytest.approx(expected, rel=1e-6)


def test_cross_entropy_scaled_upstream_gradient(rng, cpu_backend):
    logits, labels = randn(rng, 4, 3), np.array([0, 2, 1, 2])
    t = Tensor(logits, requires_grad=True)
    (F.cross_entropy(t, labels) * 3.0).backward()
    assert_close(t.grad, ref.cross_entropy_backward(logits, labels, 3.0), rtol=1e-4, atol=1e-6)


def test_cross_entropy_rejects_bad_labels(rng):
    with pytest.raises(TypeError, match="labels"):
        F.cross_entropy(Tensor(randn(rng, 2, 3)), np.array([0.5, 1.0]))
    with pytest.raises(ValueError, match="labels"):
        F.cross_entropy(Tensor(randn(rng, 2, 3)), np.array([0, 3]))


@pytest.mark.parametrize("reduction", ["mean", "sum"])
def test_mse_loss_grad(rng, reduction):
    pred, target = randn(rng, 4, 3), randn(rng, 4, 3)
    scale = 1 / pred.size if reduction == "mean" else 1.0
    check_against_reference(lambda p, t: F.mse_loss(p, t, reduction), lambda p, t: ((p - t) ** 2).sum() * scale,
                            [pred, target])
    # a plain array target
    loss = F.mse_loss(Tensor(pred), target.astype(np.float64), reduction)
    assert loss.item() == pytest.approx(float(((pred - target).astype(np.float64) ** 2).sum() * scale), rel=1e-5)
    with pytest.raises(ValueError, match="target"):
        F.mse_loss(Tensor(pred), target[:2])
    with pytest.raises(ValueError, match="reduction"):
        F.mse_loss(Tensor(pred), target, "max")


def test_dropout(rng):
    x = Tensor(randn(rng, 50, 40) + 5, requires_grad=True)
    assert F.dropout(x, 0.3, training=False) is x
    out = F.dropout(x, 0.25, training=True, rng=np.random.default_rng(0))
    kept = out.numpy() != 0
    assert 0.65 < kept.mean() < 0.85
    assert_close(out.numpy()[kept], (x.numpy() / 0.75)[kept], rtol=1e-6)
    out.sum().backward()
    assert_close(x.grad, np.where(kept, np.float32(1 / 0.75), np.float32(0)), rtol=1e-6)
    assert not F.dropout(x, 1.0).numpy().any()
    with pytest.raises(ValueError, match="p"):
        F.dropout(x, 1.5)


def test_dropout_is_seedable():
    x = Tensor(np.ones((8, 8)))
    dk.manual_seed(3)
    a = F.dropout(x, 0.5).numpy()
    dk.manual_seed(3)
    b = F.dropout(x, 0.5).numpy()
    assert np.array_equal(a, b)


# ---------------------------------------------------------------------------- Module
class Block(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.fc = nn.Linear(3, 4)
        self.scale = nn.Parameter(np.ones(4))
        self.act = nn.ReLU()

    def forward(self, x):
        return self.act(self.fc(x)) * self.scale


class Net(nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.block = Block()
        self.head = nn.Linear(4, 2)
        self.drop = nn.Dropout(0.5)

    def forward(self, x):
        return self.head(self.drop(self.block(x)))


def test_module_registration_and_traversal():
    net = Net()
    names = [n for n, _ in net.named_parameters()]
    # PyTorch's order: a module's own parameters, then each child's, depth first
    assert names == ["block.scale", "block.fc.weight", "block.fc.bias", "head.weight", "head.bias"]
    assert len(net.parameters()) == 5
    assert net.num_parameters() == 3 * 4 + 4 + 4 + 4 * 2 + 2
    assert [type(m).__name__ for m in net.children()] == ["Block", "Linear", "Dropout"]
    assert [n for n, _ in net.named_modules()] == ["", "block", "block.fc", "block.act", "head", "drop"]
    net.head = nn.Linear(4, 5)   # replacing a submodule keeps its place
    assert [n for n, _ in net.named_parameters()][-2:] == ["head.weight", "head.bias"]
    with pytest.raises(TypeError, match="Parameter"):
        net.block.scale = np.ones(4)
    net.block.scale = None
    assert "block.scale" not in dict(net.named_parameters())
    assert "Linear(in_features=3, out_features=4" in repr(net)


def test_shared_parameter_is_listed_once():
    net = Net()
    net.extra = nn.Linear(4, 2)
    net.extra.weight = net.head.weight
    names = [n for n, _ in net.named_parameters()]
    assert names.count("head.weight") == 1 and "extra.weight" not in names
    assert len(net.parameters()) == len(set(map(id, net.parameters())))


def test_train_eval_and_zero_grad(rng):
    net = Net()
    assert all(m.training for m in net.modules())
    net.eval()
    assert not any(m.training for m in net.modules())
    x = Tensor(randn(rng, 5, 3))
    assert_close(net(x).numpy(), net(x).numpy(), what="eval mode must be deterministic")
    net.train()
    assert net.drop.training
    net(x).sum().backward()
    assert all(p.grad is not None for p in net.parameters())
    net.zero_grad()
    assert all(p.grad is None for p in net.parameters())


def test_state_dict_round_trip(rng):
    a, b = Net(), Net()
    sd = a.state_dict()
    assert list(sd) == [n for n, _ in a.named_parameters()]
    assert all(isinstance(v, np.ndarray) and v.dtype == np.float32 for v in sd.values())
    sd["head.bias"][...] = 123  # a copy: the model is unchanged
    assert not np.any(a.head.bias.numpy() == 123)
    b_weight = b.head.weight
    b.load_state_dict(a.state_dict())
    assert b.head.weight is b_weight, "loading must copy in place, keeping the Parameter objects"
    x = Tensor(randn(rng, 3, 3))
    a.eval(), b.eval()
    assert_close(a(x).numpy(), b(x).numpy())


def test_load_state_dict_refuses_mismatches():
    net = Net()
    sd = net.state_dict()
    before = net.head.weight.numpy().copy()
    missing = dict(sd)
    del missing["head.bias"]
    with pytest.raises(ValueError, match="missing keys.*head.bias"):
        net.load_state_dict(missing)
    with pytest.raises(ValueError, match="unexpected keys.*extra"):
        net.load_state_dict({**sd, "extra": np.zeros(1)})
    bad = dict(sd)
    bad["head.weight"] = np.zeros((3, 3), dtype=np.float32)
    bad["block.fc.bias"] = np.ones(4, dtype=np.float32)
    with pytest.raises(ValueError, match=r"head.weight: shape \(3, 3\)"):
        net.load_state_dict(bad)
    assert np.array_equal(net.head.weight.numpy(), before)
    assert not np.all(net.block.fc.bias.numpy() == 1), "a refused load must change nothing"
    with pytest.raises(TypeError):
        net.load_state_dict([1, 2])


def test_module_to_cpu_and_errors():
    net = Net()
    assert net.to("cpu") is net
    with pytest.raises(ValueError, match="device"):
        net.to("tpu")

    class Forgot(nn.Module):
        def __init__(self) -> None:
            self.w = nn.Parameter([1.0])

    with pytest.raises(AttributeError, match="super"):
        Forgot()
    with pytest.raises(NotImplementedError):
        nn.Module()(1)


# ---------------------------------------------------------------------------- layers
def test_sequential_fuses_linear_relu_with_same_result(rng, cpu_backend):
    dk.manual_seed(1)
    seq = nn.Sequential(nn.Linear(6, 5), nn.ReLU(), nn.Linear(5, 3), nn.Tanh())
    x = randn(rng, 4, 6)
    tx = Tensor(x, requires_grad=True)
    out = seq(tx)
    out.sum().backward()
    fused_grads = [p.grad.copy() for p in seq.parameters()] + [tx.grad.copy()]
    seq.zero_grad()
    tx2 = Tensor(x, requires_grad=True)
    manual = seq[3](seq[2](F.relu(seq[0](tx2))))   # the same layers, unfused
    manual.sum().backward()
    assert_close(out.numpy(), manual.numpy(), rtol=1e-5, atol=1e-6)
    for got, want in zip(fused_grads, [p.grad for p in seq.parameters()] + [tx2.grad]):
        assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_sequential_pools_before_relu_with_same_result(rng, cpu_backend):
    dk.manual_seed(2)
    seq = nn.Sequential(nn.Conv2d(2, 3, 3, padding=1), nn.ReLU(), nn.MaxPool2d(2, padding=1), nn.Flatten())
    x = randn(rng, 2, 2, 7, 6)
    results = []
    for run in (seq, lambda t: seq[3](seq[2](seq[1](seq[0](t))))):   # rewritten, then layer by layer
        seq.zero_grad()
        tx = Tensor(x, requires_grad=True)
        out = run(tx)
        out.backward(np.linspace(-1, 1, out.size, dtype=np.float32).reshape(out.shape))
        results.append([out.numpy()] + [p.grad.copy() for p in seq.parameters()] + [tx.grad])
    for got, want in zip(*results):
        assert_close(got, want, rtol=1e-5, atol=1e-6)


def test_sequential_container():
    seq = nn.Sequential([nn.Linear(2, 3), nn.ReLU()])
    assert len(seq) == 2 and isinstance(seq[0], nn.Linear) and isinstance(seq[-1], nn.ReLU)
    assert isinstance(seq[:1], nn.Sequential) and len(seq[:1]) == 1
    seq.append(nn.Linear(3, 1))
    assert [n for n, _ in seq.named_parameters()] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    assert [type(m) for m in seq] == [nn.Linear, nn.ReLU, nn.Linear]
    with pytest.raises(TypeError, match="Module"):
        seq.append(lambda x: x)


def test_layer_shapes_and_modules(rng, cpu_backend):
    x = Tensor(randn(rng, 2, 3, 9, 8))
    conv = nn.Conv2d(3, 5, 3, stride=2, padding=1)
    assert conv(x).shape == (2, 5, 5, 4) and conv.output_size(9, 8) == (5, 4)
    assert nn.MaxPool2d(2)(x).shape == (2, 3, 4, 4)
    assert nn.AvgPool2d(3, stride=1, padding=1)(x).shape == (2, 3, 9, 8)
    assert nn.Flatten()(x).shape == (2, 216)
    assert_close(nn.Softmax(axis=1)(x).numpy().sum(axis=1), np.ones((2, 9, 8), dtype=np.float32), rtol=1e-5)
    assert_close(nn.Sigmoid()(x).numpy(), F.sigmoid(x).numpy())
    lin = nn.Linear(3, 2, bias=False, activation="relu")
    assert lin.bias is None and len(lin.parameters()) == 1
    assert np.all(lin(Tensor(randn(rng, 4, 3))).numpy() >= 0)


def test_layer_argument_validation():
    with pytest.raises(ValueError, match="in_features"):
        nn.Linear(0, 3)
    with pytest.raises(ValueError, match="activation"):
        nn.Linear(2, 3, activation="sigmoid")
    with pytest.raises(ValueError, match="kernel_size"):
        nn.Conv2d(1, 2, 0)
    with pytest.raises(ValueError, match="init"):
        nn.Linear(2, 3, init="orthogonal")
    with pytest.raises(ValueError, match="p"):
        nn.Dropout(-0.1)
    with pytest.raises(ValueError, match="seed"):
        dk.manual_seed(-1)


def test_init_schemes_and_seeding():
    dk.manual_seed(0)
    a = nn.Linear(200, 50)
    dk.manual_seed(0)
    b = nn.Linear(200, 50)
    assert np.array_equal(a.weight.numpy(), b.weight.numpy())
    assert not np.any(a.bias.numpy())
    he_bound = np.sqrt(6 / 200)
    w = a.weight.numpy()
    assert np.abs(w).max() <= he_bound and np.abs(w).max() > 0.9 * he_bound
    assert w.std() == pytest.approx(he_bound / np.sqrt(3), rel=0.05)
    x = nn.Conv2d(4, 6, 3, init="xavier", rng=np.random.default_rng(1)).weight.numpy()
    assert np.abs(x).max() <= np.sqrt(6 / (4 * 9 + 6 * 9))
    explicit = nn.Linear(5, 5, rng=np.random.default_rng(9)).weight.numpy()
    assert np.array_equal(explicit, nn.Linear(5, 5, rng=np.random.default_rng(9)).weight.numpy())


def test_loss_modules(rng, cpu_backend):
    logits, labels = randn(rng, 5, 4), rng.integers(0, 4, 5)
    assert nn.CrossEntropyLoss()(Tensor(logits), labels).item() == pytest.approx(
        float(ref.cross_entropy(logits.astype(np.float64), labels)), rel=1e-5)
    pred, target = randn(rng, 3, 2), randn(rng, 3, 2)
    assert nn.MSELoss("sum")(Tensor(pred), target).item() == pytest.approx(
        float(((pred.astype(np.float64) - target) ** 2).sum()), rel=1e-5)
    with pytest.raises(ValueError, match="reduction"):
        nn.MSELoss("none")
