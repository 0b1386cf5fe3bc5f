"""The layers added with the backend contract: Keras BatchNormalization, Reshape and Dropout (a
model with them trains), Dropout's masks on the array's device, and Sequential's Linear+ReLU
rewrite for subclasses."""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern import ops
from deepkern.keras import datasets, layers, models
from deepkern.nn import functional as F

from .conftest import gpu_available


@pytest.fixture(scope="module")
def mnist_sample():
    (x_train, y_train), (x_test, y_test) = datasets.mnist.load_data()
    return (x_train[:768].astype("float32") / 255, y_train[:768],
            x_test[:400].astype("float32") / 255, y_test[:400])


def _bn_model() -> models.Sequential:
    return models.Sequential([
        layers.Reshape((28, 28, 1), input_shape=(28, 28)),
        layers.Conv2D(4, (3, 3)), layers.BatchNormalization(momentum=0.9), layers.Activation("relu"),
        layers.MaxPooling2D((2, 2)), layers.Reshape((-1,)),
        layers.Dense(32), layers.BatchNormalization(momentum=0.9), layers.Activation("relu"),
        layers.Dropout(0.25, seed=1), layers.Dense(10, activation="softmax")])


def test_keras_model_with_batch_normalization_reshape_and_dropout_trains(mnist_sample, tmp_path):
    x, y, xt, yt = mnist_sample
    dk.manual_seed(0)
    model = _bn_model()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    _, before = model.evaluate(xt, yt, verbose=0)
    history = model.fit(x, y, epochs=3, batch_size=64, verbose=0)
    _, after = model.evaluate(xt, yt, verbose=0)
    assert history.history["accuracy"][-1] > history.history["accuracy"][0]
    assert after > max(before, 0.5), (before, after)
    # the moving statistics are the layers' buffers: they moved, and a saved model keeps them
    bn = model.layers[2]
    assert not np.allclose(bn.moving_mean.numpy(), 0) and not np.allclose(bn.moving_variance.numpy(), 1)
    path = tmp_path / "bn_model.npz"
    model.save(path)
    loaded = models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(xt[:32], verbose=0), model.predict(xt[:32], verbose=0))
    np.testing.assert_array_equal(loaded.layers[2].moving_variance.numpy(), bn.moving_variance.numpy())


def test_batch_normalization_follows_keras_semantics():
    bn = layers.BatchNormalization()
    bn.build((3,))
    x = np.random.default_rng(0).standard_normal((16, 3)).astype(np.float32) * 2 + 1
    bn.train()
    y = bn(dk.Tensor(x)).numpy()
    mean, var = x.astype(np.float64).mean(0), x.astype(np.float64).var(0)   # biased, as Keras
    np.testing.assert_allclose(y, (x - mean) / np.sqrt(var + 1e-3), rtol=1e-4, atol=1e-5)
    np.testing.assert_allclose(bn.moving_mean.numpy(), 0.01 * mean, rtol=1e-5, atol=1e-7)
    np.testing.assert_allclose(bn.moving_variance.numpy(), 0.99 + 0.01 * var, rtol=1e-5)
    bn.eval()
    want = (x - bn.moving_mean.numpy()) / np.sqrt(bn.moving_variance.numpy() + 1e-3)
    np.testing.assert_allclose(bn(dk.Tensor(x)).numpy(), want, rtol=1e-4, atol=1e-5)
    weights = bn.get_weights()
    assert [w.shape for w in weights] == [(3,)] * 4 and bn.count_params() == 12
    bn.set_weights([np.full(3, 2.0), np.zeros(3), np.zeros(3), np.ones(3)])
    np.testing.assert_allclose(bn(dk.Tensor(x)).numpy(), 2 * x / np.sqrt(1 + 1e-3), rtol=1e-5)


def test_batch_normalization_on_sequences_normalises_the_last_axis():
    bn = layers.BatchNormalization(center=False, scale=False)
    bn.build((5, 4))
    x = np.random.default_rng(1).standard_normal((3, 5, 4)).astype(np.float32)
    xt = dk.Tensor(x, requires_grad=True)
    y = bn(xt)
    flat = x.reshape(-1, 4).astype(np.float64)
    np.testing.assert_allclose(y.numpy(), (x - flat.mean(0)) / np.sqrt(flat.var(0) + 1e-3), rtol=1e-4, atol=1e-5)
    y.sum().backward()
    np.testing.assert_allclose(xt.grad, 0, atol=1e-5)   # sum of a normalised channel is constant


def test_summary_counts_moving_statistics_as_non_trainable():
    model = models.Sequential([layers.Dense(4, input_shape=(3,)), layers.BatchNormalization()])
    lines = []
    model.summary(print_fn=lines.append)
    assert "Total params: 32" in lines and "Trainable params: 24" in lines and "Non-trainable params: 8" in lines
    assert model.count_params() == 32 and len(model.get_weights()) == 6


def test_reshape_uses_keras_element_order():
    x = np.arange(2 * 2 * 3 * 4, dtype=np.float32).reshape(2, 2, 3, 4)    # Keras (N, rows, cols, channels)
    layer = layers.Reshape((4, 6))
    layer.build((2, 3, 4))
    inside = dk.Tensor(np.ascontiguousarray(x.transpose(0, 3, 1, 2)), requires_grad=True)   # NCHW inside
    out = layer(inside)
    np.testing.assert_array_equal(out.numpy(), x.reshape(2, 4, 6))
    out.backward(np.ones(out.shape, np.float32))
    assert inside.grad.shape == inside.shape
    back = layers.Reshape((2, 3, 4))
    back.build((4, 6))
    np.testing.assert_array_equal(back(out).numpy(), inside.numpy())     # an image again, NCHW
    with pytest.raises(ValueError, match="at most one -1"):
        layers.Reshape((-1, -1))
    bad = layers.Reshape((5, 5))
    with pytest.raises(ValueError, match="cannot reshape"):
        bad.build((2, 3, 4))


def test_dropout_masks_follow_the_generator_and_scale():
    x = dk.Tensor(np.ones((64, 50), np.float32), requires_grad=True)
    dk.manual_seed(5)
    a = F.dropout(x, 0.3)
    dk.manual_seed(5)
    b = F.dropout(x, 0.3)
    np.testing.assert_array_equal(a.numpy(), b.numpy())
    assert set(np.unique(a.numpy())) == {0.0, np.float32(1 / 0.7)}
    assert 0.2 < (a.numpy() == 0).mean() < 0.4
    a.sum().backward()
    np.testing.assert_array_equal(x.grad, a.numpy())    # the gradient goes through the same mask
    drop = dk.nn.Dropout(0.5).eval()
    assert drop(x) is x


@pytest.mark.skipif(not gpu_available(), reason="no usable GPU")
def test_dropout_draws_gpu_masks_on_the_gpu(monkeypatch):
    import cupy
    x = dk.Tensor(np.ones((256, 40), np.float32)).to("cuda")
    host = np.random.default_rng(3)
    drawn = []
    original = type(host).random
    monkeypatch.setattr(type(host), "random", lambda self, *a, **k: drawn.append(a) or original(self, *a, **k))
    y = F.dropout(x, 0.5, rng=host)
    assert isinstance(y.data, cupy.ndarray) and drawn == []      # no host draw, no copy
    frac = float((y.data == 0).mean())
    assert 0.4 < frac < 0.6
    z = F.dropout(x, 0.5, rng=np.random.default_rng(3))
    w = F.dropout(x, 0.5, rng=np.random.default_rng(3))
    assert bool((z.data == w.data).all())                         # reproducible from the generator


class _Dense(dk.nn.Linear):
    """A subclass that keeps Linear.forward: Sequential may fuse it with the ReLU after it."""


class _Shifted(dk.nn.Linear):
    def forward(self, x, activation=None):
        return super().forward(x, activation) + 1.0


@pytest.fixture
def matmul_activations(monkeypatch):
    """The activation argument of every ops.matmul call made during the test, in order."""
    calls = []
    matmul = ops.matmul

    def recording(a, b, bias=None, activation=None, **kwargs):
        calls.append(activation)
        return matmul(a, b, bias, activation, **kwargs)
    monkeypatch.setattr(ops, "matmul", recording)
    return calls


def test_sequential_fuses_linear_relu_for_subclasses_that_keep_forward(matmul_activations):
    calls = matmul_activations
    x = dk.Tensor(np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32))
    dk.manual_seed(0)
    fused = dk.nn.Sequential(_Dense(3, 5), dk.nn.ReLU())
    out = fused(x)
    assert calls == ["relu"]
    np.testing.assert_allclose(out.numpy(), np.maximum(x.numpy() @ fused[0].weight.numpy().T, 0), rtol=1e-5)
    calls.clear()
    shifted = dk.nn.Sequential(_Shifted(3, 5), dk.nn.ReLU())
    out = shifted(x)
    assert calls == [None]   # overridden forward: run as written, then the ReLU
    np.testing.assert_allclose(out.numpy(), np.maximum(x.numpy() @ shifted[0].weight.numpy().T + 1, 0), rtol=1e-5)


def test_torch_facade_has_batch_norm_and_fuses_its_linear_relu(matmul_activations):
    from deepkern import torch as dkt
    calls = matmul_activations
    dk.manual_seed(0)
    net = dkt.nn.Sequential(dkt.nn.Linear(3, 4), dkt.nn.ReLU(), dkt.nn.BatchNorm1d(4))
    x = np.random.default_rng(0).standard_normal((8, 3)).astype(np.float32)
    out = net(dkt.tensor(x))
    assert calls == ["relu"]   # the facade's Linear is a subclass that keeps Linear.forward
    np.testing.assert_allclose(out.numpy().mean(axis=0), 0, atol=1e-5)
    assert list(net.state_dict())[-3:] == ["2.running_mean", "2.running_var", "2.num_batches_tracked"]
    net.eval()
    assert net(dkt.tensor(x)).shape == (8, 4)
