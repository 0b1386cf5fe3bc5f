"""The seed networks: Perceptron learns OR, MLP and CNN shapes, parameter counts, and training."""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern import models, nn
from deepkern.autograd import Tensor

from .conftest import assert_close, randn

GATE_INPUTS = [[0, 0], [0, 1], [1, 0], [1, 1]]


@pytest.mark.parametrize("seed", [0, 1, 15, 123])
def test_perceptron_learns_or_exactly(seed):
    dk.manual_seed(seed)
    p = models.Perceptron(2)
    losses = p.fit(GATE_INPUTS, [0, 1, 1, 1])
    assert losses[-1] < losses[0]
    assert p.predict(GATE_INPUTS).tolist() == [0, 1, 1, 1]
    assert p(Tensor(GATE_INPUTS)).shape == (4, 1)


def test_perceptron_learns_and_with_its_own_generator():
    p = models.Perceptron(2, rng=np.random.default_rng(2))
    p.fit(np.array(GATE_INPUTS, dtype=np.float64), np.array([0, 0, 0, 1]))
    assert p.predict(GATE_INPUTS).tolist() == [0, 0, 0, 1]


def test_perceptron_argument_errors():
    with pytest.raises(ValueError, match="epochs"):
        models.Perceptron(2).fit(GATE_INPUTS, [0, 1, 1, 1], epochs=0)
    with pytest.raises(ValueError, match="targets"):
        models.Perceptron(2).fit(GATE_INPUTS, [0, 1, 1])


def test_mlp_shapes_and_parameter_count(rng, cpu_backend):
    mlp = models.MLP(784, [256, 256], 10)
    assert mlp.num_parameters() == 784 * 256 + 256 + 256 * 256 + 256 + 256 * 10 + 10
    x = randn(rng, 3, 1, 28, 28)
    out = mlp(Tensor(x))
    assert out.shape == (3, 10)
    assert_close(mlp(Tensor(x.reshape(3, 784))).numpy(), out.numpy())
    with pytest.raises(ValueError, match="784 features"):
        mlp(Tensor(randn(rng, 2, 100)))


def test_mlp_matches_unfused_numpy(rng, cpu_backend):
    mlp = models.MLP(20, [7, 5], 3)
    x = randn(rng, 6, 20).astype(np.float64)
    h = x
    layers = [m for m in mlp.layers if isinstance(m, nn.Linear)]
    for i, lin in enumerate(layers):
        h = h @ lin.weight.numpy().T.astype(np.float64) + lin.bias.numpy()
        if i < len(layers) - 1:
            h = np.maximum(h, 0)
    assert_close(mlp(x).numpy(), h.astype(np.float32), rtol=1e-4, atol=1e-5)


def test_mlp_dropout_only_in_training(rng):
    mlp = models.MLP(10, [32], 2, dropout=0.5)
    x = Tensor(randn(rng, 4, 10))
    mlp.eval()
    assert_close(mlp(x).numpy(), mlp(x).numpy())
    mlp.train()
    assert not np.allclose(mlp(x).numpy(), mlp(x).numpy())


def test_cnn_parameter_count_and_output_shape(rng, cpu_backend):
    cnn = models.CNN()
    assert cnn.num_parameters() == 121_930
    x = randn(rng, 2, 1, 28, 28)
    out = cnn(Tensor(x))
    assert out.shape == (2, 10)
    assert_close(cnn(x.reshape(2, 28, 28)).numpy(), out.numpy())
    assert_close(cnn(x.reshape(2, 784)).numpy(), out.numpy())
    with pytest.raises(ValueError, match="expected images"):
        cnn(Tensor(randn(rng, 2, 3, 28, 28)))


def test_cnn_flatten_size_follows_image_size(rng):
    cnn = models.CNN(in_channels=3, num_classes=5, image_size=(32, 20))
    # 32x20 -> conv 30x18 -> pool 15x9 -> conv 13x7 -> pool 6x3: 64*6*3 features into Dense 64
    assert cnn.layers[7].in_features == 64 * 6 * 3
    assert cnn(Tensor(randn(rng, 1, 3, 32, 20))).shape == (1, 5)
    assert models.CNN(image_size=10)(Tensor(randn(rng, 1, 1, 10, 10))).shape == (1, 10)
    with pytest.raises(ValueError, match="too small"):
        models.CNN(image_size=9)


def test_models_train_on_a_tiny_problem(rng, cpu_backend):
    dk.manual_seed(4)
    # two classes of 12x12 images: a bright top half or a bright bottom half, plus noise
    n = 32
    labels = rng.integers(0, 2, n)
    x = randn(rng, n, 1, 12, 12) * 0.3
    x[labels == 0, :, :6] += 1.0
    x[labels == 1, :, 6:] += 1.0
    for model in (models.CNN(1, 2, image_size=12), models.MLP(144, [16], 2)):
        opt = dk.optim.Adam(model.parameters(), lr=3e-3)
        loss_fn = nn.CrossEntropyLoss()
        first = None
        for _ in range(15):
            opt.zero_grad()
            loss = loss_fn(model(Tensor(x)), labels)
            loss.backward()
            opt.step()
            first = loss.item() if first is None else first
        assert loss.item() < 0.5 * first, type(model).__name__
        with dk.no_grad():
            accuracy = (model(Tensor(x)).argmax(axis=1) == labels).mean()
        assert accuracy > 0.9
