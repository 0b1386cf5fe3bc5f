"""deepkern.keras where it used to differ from Keras: label shapes, batch_size, save formats,
monitor hints, console output, the functional API, sample/class weights, metrics, errors."""
from __future__ import annotations

import sys
import types
import warnings

import numpy as np
import pytest

import deepkern as dk
from deepkern import data, keras, train
from deepkern.keras import callbacks, layers, metrics, models, optimizers, utils


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, _, _ = data.load_digits(seed=0, flatten=True)
    return x_train[:256], y_train[:256]


def mlp(seed: int = 0) -> models.Sequential:
    dk.manual_seed(seed)
    return models.Sequential([layers.Dense(16, activation="relu", input_shape=(64,)),
                              layers.Dense(10, activation="softmax")])


def compiled(seed: int = 0, **kwargs) -> models.Sequential:
    model = mlp(seed)
    kwargs.setdefault("optimizer", optimizers.SGD(learning_rate=0.05))
    kwargs.setdefault("loss", "sparse_categorical_crossentropy")
    model.compile(**kwargs)
    return model


# -- targets and arguments --------------------------------------------------------------------

def test_column_of_integer_labels_trains_like_flat_labels(digits):
    x, y = digits
    flat = compiled(metrics=["accuracy"]).fit(x, y, epochs=2, verbose=0, seed=1).history
    column = compiled(metrics=["accuracy"]).fit(x, y.reshape(-1, 1).astype(np.int32), epochs=2, verbose=0,
                                                seed=1).history
    assert flat == column


def test_batch_size_zero_is_an_error(digits):
    x, y = digits
    model = compiled()
    for call in (lambda: model.fit(x, y, batch_size=0, verbose=0), lambda: model.evaluate(x, y, batch_size=0),
                 lambda: model.predict(x, batch_size=0), lambda: model.fit(x, y, batch_size=2.5, verbose=0)):
        with pytest.raises(ValueError, match="batch_size: expected an int >= 1"):
            call()
    assert len(model.fit(x, y, batch_size=None, verbose=0).history["loss"]) == 1  # None means 32


def test_one_hot_with_a_sparse_loss_names_the_fix(digits):
    x, y = digits
    model = compiled()
    with pytest.raises(ValueError, match="loss='categorical_crossentropy'.*argmax"):
        model.fit(x, utils.to_categorical(y, 10), verbose=0)
    with pytest.raises(ValueError, match=r"class labels must be in \[0, 10\)"):
        model.fit(x, y + 5, verbose=0)
    onehot = compiled(loss="categorical_crossentropy")
    with pytest.raises(ValueError, match="sparse_categorical_crossentropy.*to_categorical"):
        onehot.fit(x, y, verbose=0)
    with pytest.raises(ValueError, match=r"one-hot targets \(N, 10\)"):
        onehot.fit(x, utils.to_categorical(y, 12), verbose=0)


def test_set_weights_with_a_wrong_shape_says_what_it_expects():
    model = mlp()
    kernel, bias = model.layers[0].get_weights()
    with pytest.raises(ValueError, match=r"weight 0 has shape \(16, 64\), expected \(64, 16\) \(Keras layout"):
        model.layers[0].set_weights([kernel.T, bias])
    with pytest.raises(ValueError, match=r"expected 4 arrays \(shapes \[\(64, 16\), \(16,\), \(16, 10\), \(10,\)\]"):
        model.set_weights([kernel, bias])


# -- saving -----------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["m.h5", "m.HDF5", "m.keras", "m.weights.h5"])
def test_save_refuses_formats_it_does_not_write(tmp_path, name):
    model = mlp()
    for method in ("save", "save_weights"):
        with pytest.raises(ValueError, match=r"does not write.*\.npz"):
            getattr(model, method)(tmp_path / name)
    assert not list(tmp_path.iterdir())   # nothing written under a misleading name
    assert models.load_model(model.save(tmp_path / "m.npz")).count_params() == model.count_params()


# -- callbacks and console output ------------------------------------------------------------

def test_mistyped_monitor_lists_the_available_metrics(digits):
    x, y = digits
    model = compiled(metrics=["accuracy"])
    with pytest.raises(ValueError, match=r"'val_acuracy'.*loss, accuracy, val_loss, val_accuracy.*"
                                         r"did you mean 'val_accuracy'"):
        model.fit(x, y, epochs=2, verbose=0, validation_split=0.25,
                  callbacks=[callbacks.EarlyStopping(monitor="val_acuracy")])
    with pytest.raises(ValueError, match="validation_split or validation_data"):
        model.fit(x, y, epochs=2, verbose=0, callbacks=[callbacks.EarlyStopping(monitor="val_loss")])
    # Keras 1's val_acc finds the log of metrics=["accuracy"], and the other way round
    stopper = callbacks.EarlyStopping(monitor="val_acc", patience=5)
    model.fit(x, y, epochs=2, verbose=0, validation_split=0.25, callbacks=[stopper])
    assert stopper.best_epoch is not None
    compiled(metrics=["acc"]).fit(x, y, epochs=1, verbose=0, validation_split=0.25,
                                  callbacks=[callbacks.EarlyStopping(monitor="val_accuracy")])


def test_output_when_stdout_is_not_a_terminal(digits, capsys):
    x, y = digits
    model = compiled(metrics=["accuracy"])
    model.fit(x, y, epochs=2, batch_size=64, validation_split=0.25)   # verbose "auto" = 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert len(lines) == 2 and lines[0].startswith("Epoch 1/2 - 3/3 - ") and lines[1].startswith("Epoch 2/2")
    for key in ("loss: ", "accuracy: ", "val_loss: ", "val_accuracy: ", "ms/step"):
        assert key in lines[1]
    model.fit(x, y, epochs=2, verbose=2)
    assert capsys.readouterr().out.count("\n") == 2
    model.fit(x, y, epochs=2, verbose=0)
    assert capsys.readouterr().out == ""
    model.evaluate(x, y, verbose=0)
    assert capsys.readouterr().out == ""
    with pytest.raises(ValueError, match="verbose"):
        model.fit(x, y, verbose=3)


def test_jupyter_without_ipywidgets_gets_a_text_bar_and_no_warning(digits, monkeypatch, capsys):
    from tqdm.std import tqdm as text_bar

    monkeypatch.setitem(sys.modules, "ipykernel", types.ModuleType("ipykernel"))
    monkeypatch.setitem(sys.modules, "ipywidgets", None)   # import ipywidgets raises ImportError
    assert train.in_notebook() and train.progress_bar_class() is text_bar
    x, y = digits
    with warnings.catch_warnings():
        warnings.simplefilter("error")   # a TqdmWarning ("IProgress not found") would fail here
        compiled(metrics=["accuracy"]).fit(x, y, epochs=1, batch_size=64, verbose=1)
        train.fit(dk.models.MLP(64, (8,), 10), x, y, epochs=1, progress=None)
    captured = capsys.readouterr()
    shown = captured.out + captured.err
    assert "Epoch 1/1" in shown and "IProgress" not in shown


# -- functional API and import paths --------------------------------------------------------

def test_functional_model_is_the_seed_cnn(tmp_path):
    inputs = keras.Input(shape=(28, 28, 1))
    assert inputs.shape == (None, 28, 28, 1)
    x = layers.Conv2D(32, (3, 3), activation="relu")(inputs)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Conv2D(64, (3, 3), activation="relu")(x)
    x = layers.MaxPooling2D((2, 2))(x)
    x = layers.Flatten()(x)
    x = layers.Dense(64, activation="relu")(x)
    assert x.shape == (None, 64)
    outputs = layers.Dense(10, activation="softmax")(x)
    model = keras.Model(inputs=inputs, outputs=outputs)
    assert isinstance(model, keras.models.Model) and model.count_params() == 121_930
    assert [layer.name for layer in model.layers][:2] == ["conv2d", "max_pooling2d"]
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    rng = np.random.default_rng(0)
    images, labels = rng.random((16, 28, 28, 1)).astype(np.float32), rng.integers(0, 10, 16)
    history = model.fit(images, labels, epochs=1, batch_size=8, verbose=0)
    assert list(history.history) == ["loss", "accuracy"]
    loaded = keras.models.load_model(model.save(tmp_path / "functional.npz"))
    assert type(loaded) is keras.Model
    np.testing.assert_array_equal(loaded.predict(images), model.predict(images))


def test_input_starts_a_sequential_and_branches_are_refused():
    model = keras.Sequential([keras.Input(shape=(64,)), layers.Dense(10, activation="softmax")])
    assert model.built and model.count_params() == 650
    a = keras.Input(shape=(4,))
    b = keras.Input(shape=(4,))
    with pytest.raises(ValueError, match="do not come from inputs"):
        keras.Model(inputs=a, outputs=layers.Dense(2)(b))
    with pytest.raises(ValueError, match="one input"):
        keras.Model(inputs=[a, b], outputs=layers.Dense(2)(a))
    with pytest.raises(TypeError, match="dk.nn.Module"):
        keras.Model()


def test_import_paths_mirror_tensorflow_keras():
    from deepkern.keras import Input, Model, Sequential, callbacks, datasets, layers, models, optimizers, utils
    from deepkern.keras.layers import Dense
    from deepkern.keras.models import Model as ModelFromModels

    assert Model is ModelFromModels and Sequential is models.Sequential and Dense is layers.Dense
    assert callable(Input) and callable(datasets.mnist.load_data) and callable(utils.to_categorical)
    assert callbacks.EarlyStopping and optimizers.Adam
    assert layers.Input(shape=(3,)).shape == (None, 3)


# -- sample and class weights -----------------------------------------------------------------

def test_sample_weight_scales_each_samples_loss(digits):
    x, y = digits[0][:64], digits[1][:64]
    model = compiled()
    weights = np.linspace(0.0, 2.0, 64).astype(np.float32)
    probs = model.predict(x).astype(np.float64)
    per_sample = -np.log(probs[np.arange(64), y])
    np.testing.assert_allclose(model.evaluate(x, y, sample_weight=weights, verbose=0),
                               np.sum(weights * per_sample) / 64, rtol=1e-5)
    binary = models.Sequential([layers.Dense(1, activation="sigmoid", input_shape=(64,))])
    binary.compile(optimizer="sgd", loss="binary_crossentropy")
    t = (y % 2).astype(np.float32)
    p = binary.predict(x)[:, 0].astype(np.float64)
    bce = -(t * np.log(p) + (1 - t) * np.log(1 - p))
    np.testing.assert_allclose(binary.evaluate(x, t, sample_weight=weights, verbose=0),
                               np.sum(weights * bce) / 64, rtol=1e-4)
    regression = models.Sequential([layers.Dense(3, input_shape=(64,))])
    regression.compile(optimizer="sgd", loss="mse")
    target = np.ones((64, 3), np.float32)
    se = ((regression.predict(x) - target) ** 2).mean(axis=1)
    np.testing.assert_allclose(regression.evaluate(x, target, sample_weight=weights, verbose=0),
                               np.sum(weights * se) / 64, rtol=1e-4)


def test_weighted_gradients_match_the_fused_kernel(digits):
    """Weights of 2 (the weighted path) take the same SGD step as weight 1 at twice the rate."""
    x, y = digits
    doubled = compiled(1, optimizer=optimizers.SGD(learning_rate=0.02))
    doubled.fit(x, y, epochs=1, verbose=0, seed=3, sample_weight=np.full(len(y), 2.0))
    faster = compiled(1, optimizer=optimizers.SGD(learning_rate=0.04))
    faster.fit(x, y, epochs=1, verbose=0, seed=3)
    for a, b in zip(doubled.get_weights(), faster.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-4, atol=1e-6)


def test_class_weight_is_a_weight_per_class(digits):
    x, y = digits
    table = {c: float(c % 3) for c in range(10)}
    by_class = compiled(2).fit(x, y, epochs=2, verbose=0, seed=4, class_weight=table).history
    by_sample = compiled(2).fit(x, y, epochs=2, verbose=0, seed=4,
                                sample_weight=np.array([table[c] for c in y])).history
    assert by_class == by_sample
    both = compiled(2).fit(x, y, epochs=1, verbose=0, seed=4, class_weight={c: 2.0 for c in range(10)},
                           sample_weight=np.full(len(y), 0.5)).history
    plain = compiled(2).fit(x, y, epochs=1, verbose=0, seed=4).history
    np.testing.assert_allclose(both["loss"], plain["loss"], rtol=1e-5)   # 2 * 0.5 = 1
    with pytest.raises(ValueError, match="one weight per sample"):
        compiled().fit(x, y, verbose=0, sample_weight=np.ones(3))


# -- metrics ----------------------------------------------------------------------------------

def test_metrics_match_their_definitions(digits):
    x, y = digits
    model = compiled(optimizer=optimizers.Adam(learning_rate=0.01), metrics=[
        "accuracy", "sparse_top_k_categorical_accuracy", "precision", "recall",
        metrics.SparseTopKCategoricalAccuracy(k=2, name="top2")])
    history = model.fit(x, y, epochs=6, verbose=0, validation_split=0.25)
    names = ["accuracy", "sparse_top_k_categorical_accuracy", "precision", "recall", "top2"]
    assert list(history.history) == ["loss"] + names + ["val_loss"] + [f"val_{n}" for n in names]
    values = model.evaluate(x, y, verbose=0, return_dict=True)
    probs = model.predict(x)
    order = np.argsort(-probs, axis=1)
    onehot = utils.to_categorical(y, 10) > 0.5
    predicted = probs > 0.5
    tp = np.sum(predicted & onehot)
    assert 0 < tp < np.sum(predicted) and np.sum(predicted) < len(y)   # precision and recall both < 1
    expected = {"accuracy": np.mean(order[:, 0] == y),
                "sparse_top_k_categorical_accuracy": np.mean((order[:, :5] == y[:, None]).any(axis=1)),
                "top2": np.mean((order[:, :2] == y[:, None]).any(axis=1)),
                "precision": tp / np.sum(predicted), "recall": tp / np.sum(onehot)}
    for name, value in expected.items():
        assert values[name] == pytest.approx(value, abs=1e-9), name
    # one-hot targets with categorical cross-entropy give the same numbers
    onehot_model = compiled(loss="categorical_crossentropy",
                            metrics=["categorical_accuracy", "top_k_categorical_accuracy", "precision"])
    onehot_model.set_weights(model.get_weights())
    got = onehot_model.evaluate(x, utils.to_categorical(y, 10), verbose=0, return_dict=True)
    assert got["categorical_accuracy"] == pytest.approx(expected["accuracy"])
    assert got["top_k_categorical_accuracy"] == pytest.approx(expected["sparse_top_k_categorical_accuracy"])
    assert got["precision"] == pytest.approx(expected["precision"])


def test_binary_metrics_and_accuracy_resolution():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 1], np.float32)
    model = models.Sequential([layers.Dense(1, activation="sigmoid", input_shape=(2,))])
    model.compile(optimizer="sgd", loss="binary_crossentropy", metrics=["acc", "precision", "recall"])
    model.set_weights([np.array([[4.0], [4.0]], np.float32), np.array([-2.0], np.float32)])
    values = model.evaluate(x, y, verbose=0, return_dict=True)
    assert values == pytest.approx({"loss": values["loss"], "acc": 1.0, "precision": 1.0, "recall": 1.0})
    model.set_weights([np.array([[4.0], [-4.0]], np.float32), np.array([-1.0], np.float32)])
    predicted = model.predict(x)[:, 0] > 0.5            # [F, F, T, F] against [F, T, T, T]
    values = model.evaluate(x, y, verbose=0, return_dict=True)
    assert values["acc"] == np.mean(predicted == (y > 0.5)) == 0.5
    assert values["precision"] == 1.0 and values["recall"] == pytest.approx(1 / 3)
    assert isinstance(metrics.get("accuracy", "mean_squared_error", 1), metrics.BinaryAccuracy)
    assert isinstance(metrics.get("accuracy", "mean_squared_error", 4), metrics.CategoricalAccuracy)
    with pytest.raises(ValueError, match="metrics"):
        compiled(metrics=["auc"])


def test_metrics_survive_save_and_load(tmp_path, digits):
    x, y = digits
    model = compiled(metrics=["accuracy", metrics.SparseTopKCategoricalAccuracy(k=3, name="top3")])
    loaded = models.load_model(model.save(tmp_path / "m.npz"))
    assert loaded.metrics_names == ["loss", "accuracy", "top3"]
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
