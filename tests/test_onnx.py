"""ONNX export: each seed model, run by onnxruntime, matches deepkern's outputs to 1e-5."""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern.keras import layers as keras_layers

onnx = pytest.importorskip("onnx")
ort = pytest.importorskip("onnxruntime")

TOL = dict(rtol=1e-5, atol=1e-5)


def _run(path, x):
    session = ort.InferenceSession(str(path), providers=["CPUExecutionProvider"])
    return session.run(None, {"input": np.ascontiguousarray(x, dtype=np.float32)})[0]


def _reference(model, x):
    model.eval()
    with dk.no_grad():
        return model(dk.Tensor(x)).numpy()


def _trained_a_little(model, x, y):
    dk.train.fit(model, x, y, epochs=1, batch_size=8, progress=False)
    return model


@pytest.mark.parametrize("make, shape", [
    (lambda: dk.models.Perceptron(2), (4, 2)),
    (lambda: dk.models.MLP(784, (32, 16), 10, dropout=0.2), (5, 1, 28, 28)),   # images flattened inside
    (lambda: dk.models.CNN(), (3, 1, 28, 28)),
    (lambda: dk.models.CNN(), (3, 28, 28)),                                  # (N, H, W) grayscale
])
def test_seed_models_match_onnxruntime(tmp_path, rng, make, shape):
    dk.manual_seed(0)
    model = make()
    x = rng.random(shape).astype(np.float32)
    path = dk.onnx.export(model, tmp_path / "m.onnx", sample_input=x[:1])
    np.testing.assert_allclose(_run(path, x), _reference(model, x), **TOL)   # the batch axis is dynamic
    checked = onnx.load(path)
    onnx.checker.check_model(checked)
    assert [i.name for i in checked.graph.input] == ["input"]


def test_every_layer_kind_after_training(tmp_path, rng):
    dk.manual_seed(1)
    model = dk.nn.Sequential(
        dk.nn.Conv2d(3, 4, 3, stride=2, padding=1), dk.nn.Tanh(),
        dk.nn.AvgPool2d(2, stride=1, padding=1), dk.nn.Sigmoid(),
        dk.nn.MaxPool2d(3, stride=2, padding=1), dk.nn.ReLU(),
        dk.nn.Dropout(0.5), dk.nn.Flatten(),
        dk.nn.Linear(4 * 3 * 3, 8, activation="relu"), dk.nn.Linear(8, 5), dk.nn.Softmax(),
    )
    x = rng.standard_normal((16, 3, 9, 9)).astype(np.float32)
    _trained_a_little(model, x, rng.integers(0, 5, 16))
    path = dk.onnx.export(model, tmp_path / "all.onnx", dk.Tensor(x[:2]))
    assert model.training  # export restores the mode
    np.testing.assert_allclose(_run(path, x), _reference(model, x), **TOL)
    ops = {node.op_type for node in onnx.load(path).graph.node}
    assert {"Conv", "AveragePool", "MaxPool", "Gemm", "Relu", "Sigmoid", "Tanh", "Softmax", "Flatten"} <= ops
    assert "Dropout" not in ops   # the identity in eval mode


@pytest.mark.skipif(not hasattr(dk.nn, "BatchNorm2d"), reason="BatchNorm layers not in this build")
def test_batch_norm_uses_running_statistics(tmp_path, rng):
    dk.manual_seed(2)
    model = dk.nn.Sequential(dk.nn.Conv2d(1, 3, 3), dk.nn.BatchNorm2d(3), dk.nn.ReLU(), dk.nn.Flatten(),
                             dk.nn.Linear(3 * 4 * 4, 6), dk.nn.BatchNorm1d(6), dk.nn.Linear(6, 2))
    x = rng.standard_normal((12, 1, 6, 6)).astype(np.float32) * 3 + 1
    _trained_a_little(model, x, rng.integers(0, 2, 12))
    path = dk.onnx.export(model, tmp_path / "bn.onnx", x[:1])
    np.testing.assert_allclose(_run(path, x), _reference(model, x), **TOL)


def test_keras_seed_cnn_export_matches_predict(tmp_path, rng):
    from deepkern.keras import layers, models

    dk.manual_seed(3)
    model = models.Sequential([
        layers.Conv2D(8, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(8, (3, 3), activation="relu", padding="same"),
        layers.AveragePooling2D((2, 2), padding="same", strides=3),
        layers.Flatten(),
        layers.Dropout(0.5),
        layers.Dense(16, activation="tanh"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    x = rng.random((8, 28, 28, 1)).astype(np.float32)
    model.fit(x, rng.integers(0, 10, 8), epochs=1, verbose=0)
    path = model.export(tmp_path / "keras.onnx")
    got = _run(path, x)
    np.testing.assert_allclose(got, model.predict(x), **TOL)   # probabilities, as predict gives
    np.testing.assert_allclose(got.sum(axis=1), 1.0, rtol=1e-5)
    # MaxPooling2D 'same' pads with the lowest float: padded pixels never win
    same = models.Sequential([layers.MaxPooling2D((2, 2), padding="same", input_shape=(5, 5, 2)),
                              layers.Conv2D(3, 2, activation="sigmoid")])
    xs = -rng.random((2, 5, 5, 2)).astype(np.float32)
    np.testing.assert_allclose(_run(same.export(tmp_path / "same.onnx"), xs), same.predict(xs), **TOL)


def test_unsupported_module_is_named(tmp_path):
    class Custom(dk.nn.Module):
        def forward(self, x):
            return x * 2

    with pytest.raises(NotImplementedError, match="Custom"):
        dk.onnx.export(dk.nn.Sequential(dk.nn.ReLU(), Custom()), tmp_path / "x.onnx", np.zeros((1, 3), np.float32))
    with pytest.raises(TypeError, match="Module"):
        dk.onnx.export(lambda x: x, tmp_path / "x.onnx", np.zeros((1, 3), np.float32))


def test_a_keras_layer_without_a_converter_is_refused(tmp_path):
    from deepkern.keras import layers, models

    class Doubling(layers.Layer):
        def call(self, x):
            return x * 2

    model = models.Sequential([layers.Dense(3, input_shape=(4,)), Doubling()])
    with pytest.raises(NotImplementedError, match="Doubling"):
        model.export(tmp_path / "k.onnx")


@pytest.mark.skipif(not hasattr(keras_layers, "BatchNormalization"),
                    reason="Keras BatchNormalization/Reshape not in this build")
def test_keras_batch_normalization_and_reshape(tmp_path, rng):
    from deepkern.keras import layers, models

    dk.manual_seed(4)
    model = models.Sequential([
        layers.Reshape((8, 8, 1), input_shape=(64,)),
        layers.Conv2D(4, 3, activation="relu"), layers.BatchNormalization(),
        layers.Reshape((36, 4)), layers.BatchNormalization(),
        layers.Reshape((12, 12, 1)), layers.Flatten(),
        layers.Dense(8), layers.BatchNormalization(), layers.Dense(3, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    x = rng.standard_normal((32, 64)).astype(np.float32) * 2 + 0.5
    model.fit(x, rng.integers(0, 3, 32), epochs=2, batch_size=8, verbose=0)   # moves the statistics
    path = model.export(tmp_path / "bn.onnx")
    np.testing.assert_allclose(_run(path, x), model.predict(x), **TOL)
