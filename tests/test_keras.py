"""deepkern.keras: layers and shapes, summary, fused losses, fit/evaluate/predict, callbacks,
regularizers, augmentation input, save/load, datasets, optimizers and error messages."""
from __future__ import annotations

import json
import zipfile

import numpy as np
import pytest

import deepkern as dk
from deepkern import data
from deepkern.keras import callbacks, datasets, layers, losses, models, optimizers, regularizers, utils
from deepkern.keras.preprocessing.image import ImageDataGenerator


def seed_cnn() -> models.Sequential:
    """The seed tutorial's CNN, written as the seed writes it."""
    return models.Sequential([
        layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        layers.MaxPooling2D((2, 2)),
        layers.Conv2D(64, (3, 3), activation="relu"),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(64, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])


def digits_mlp(**dense_kwargs) -> models.Sequential:
    return models.Sequential([
        layers.Dense(32, activation="relu", input_shape=(64,), **dense_kwargs),
        layers.Dense(10, activation="softmax"),
    ])


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, x_test, y_test = data.load_digits(seed=0, flatten=True)
    return x_train, y_train, x_test, y_test


# -- structure -------------------------------------------------------------------------------

def test_seed_cnn_summary_matches_keras():
    model = seed_cnn()
    lines = []
    model.summary(print_fn=lines.append)
    text = "\n".join(lines)
    assert model.count_params() == 121_930
    assert "Total params: 121,930" in text
    for name, shape, params in [("conv2d (Conv2D)", "(None, 26, 26, 32)", "320"),
                                ("max_pooling2d (MaxPooling2D)", "(None, 13, 13, 32)", "0"),
                                ("conv2d_1 (Conv2D)", "(None, 11, 11, 64)", "18,496"),
                                ("max_pooling2d_1 (MaxPooling2D)", "(None, 5, 5, 64)", "0"),
                                ("flatten (Flatten)", "(None, 1600)", "0"),
                                ("dense (Dense)", "(None, 64)", "102,464"),
                                ("dense_1 (Dense)", "(None, 10)", "650")]:
        row = next(line for line in lines if line.startswith(name))
        assert row.split()[-1] == params and shape in row
    assert [layer.output_shape for layer in model.layers][-1] == (10,)


def test_add_builds_like_the_list_form():
    model = models.Sequential()
    model.add(layers.Dense(8, activation="tanh", input_shape=(5,)))
    model.add(layers.Dropout(0.25))
    model.add(layers.Dense(3))
    assert model.built and model.output_shape == (3,)
    assert [layer.name for layer in model.layers] == ["dense", "dropout", "dense_1"]
    assert model.count_params() == 5 * 8 + 8 + 8 * 3 + 3
    popped = model.pop()
    assert popped.name == "dense_1" and model.output_shape == (8,)
    lazy = models.Sequential([layers.Dense(4), layers.Dense(2, activation="softmax")])
    assert not lazy.built
    assert lazy.predict(np.ones((3, 7), np.float32)).shape == (3, 2)  # built from the data
    assert lazy.input_shape == (7,)


def _conv_reference(x, w, b, stride, pads):
    """Plain NHWC convolution of a zero-padded input; w is Keras's (kh, kw, in, out)."""
    top, bottom, left, right = pads
    xp = np.pad(x.astype(np.float64), ((0, 0), (top, bottom), (left, right), (0, 0)))
    kh, kw = w.shape[:2]
    rows = (xp.shape[1] - kh) // stride[0] + 1
    cols = (xp.shape[2] - kw) // stride[1] + 1
    out = np.zeros((x.shape[0], rows, cols, w.shape[3]))
    for i in range(rows):
        for j in range(cols):
            patch = xp[:, i * stride[0]:i * stride[0] + kh, j * stride[1]:j * stride[1] + kw, :]
            out[:, i, j, :] = np.tensordot(patch, w, axes=([1, 2, 3], [0, 1, 2]))
    return out + b


@pytest.mark.parametrize("size, kernel, stride, padding", [
    ((7, 9), (3, 3), (1, 1), "same"),   # symmetric padding
    ((7, 8), (2, 4), (1, 1), "same"),   # even kernels: one extra row/column at the bottom/right
    ((9, 6), (3, 2), (2, 2), "same"),   # stride 2: TensorFlow's asymmetric split
    ((7, 5), (3, 2), (2, 1), "valid"),
])
def test_conv2d_matches_tensorflow_padding(rng, size, kernel, stride, padding):
    x = rng.standard_normal((2,) + size + (3,)).astype(np.float32)
    model = models.Sequential([layers.Conv2D(4, kernel, strides=stride, padding=padding,
                                             input_shape=size + (3,))])
    w = rng.standard_normal(kernel + (3, 4)).astype(np.float32)
    b = rng.standard_normal(4).astype(np.float32)
    model.set_weights([w, b])
    np.testing.assert_array_equal(model.get_weights()[0], w)  # Keras layout round trip
    if padding == "same":
        pads = []
        for n, k, s in zip(size, kernel, stride):
            out = -(-n // s)
            total = max((out - 1) * s + k - n, 0)
            pads += [total // 2, total - total // 2]
    else:
        pads = [0, 0, 0, 0]
    expected = _conv_reference(x, w, b, stride, pads)
    got = model.predict(x)
    assert got.shape == expected.shape == (2,) + model.output_shape
    np.testing.assert_allclose(got, expected, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("layer_cls", [layers.MaxPooling2D, layers.AveragePooling2D])
@pytest.mark.parametrize("size, pool, strides", [((5, 7), (2, 2), None), ((6, 5), (3, 2), (2, 2))])
def test_pooling_same_padding_ignores_padded_pixels(rng, layer_cls, size, pool, strides):
    x = rng.standard_normal((2,) + size + (3,)).astype(np.float32) - 3.0  # all negative: zero pads would win a max
    model = models.Sequential([layer_cls(pool, strides=strides, padding="same", input_shape=size + (3,))])
    stride = pool if strides is None else strides
    got = model.predict(x)
    out_shape = tuple(-(-n // s) for n, s in zip(size, stride))
    assert got.shape == (2,) + out_shape + (3,)
    befores = [max((o - 1) * s + k - n, 0) // 2 for o, s, k, n in zip(out_shape, stride, pool, size)]
    for i in range(out_shape[0]):
        for j in range(out_shape[1]):
            r0, c0 = i * stride[0] - befores[0], j * stride[1] - befores[1]
            window = x[:, max(r0, 0):r0 + pool[0], max(c0, 0):c0 + pool[1], :]
            reduce = np.max if layer_cls is layers.MaxPooling2D else np.mean
            np.testing.assert_allclose(got[:, i, j, :], reduce(window, axis=(1, 2)), rtol=1e-5, atol=1e-5)


def test_dense_weights_use_keras_layout(rng):
    model = digits_mlp()
    kernel, bias = model.layers[0].get_weights()
    assert kernel.shape == (64, 32) and bias.shape == (32,)
    new = [rng.standard_normal(w.shape).astype(np.float32) for w in model.get_weights()]
    model.set_weights(new)
    x = rng.random((5, 64)).astype(np.float32)
    hidden = np.maximum(x @ new[0] + new[1], 0)
    logits = hidden @ new[2] + new[3]
    expected = np.exp(logits - logits.max(1, keepdims=True))
    expected /= expected.sum(1, keepdims=True)
    np.testing.assert_allclose(model.predict(x), expected, rtol=1e-4, atol=1e-6)
    with pytest.raises(ValueError, match="Keras layout"):
        model.layers[0].set_weights([new[0].T, new[1]])


# -- losses, fusion and training -------------------------------------------------------------

def test_softmax_cross_entropy_is_fused_and_stable(rng):
    model = models.Sequential([layers.Dense(3, activation="softmax", input_shape=(2,))])
    model.compile(optimizer="sgd", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    # logits of +-1000: log(softmax) would give log(0) = -inf; the fused kernel does not
    model.set_weights([np.array([[1000.0, -1000.0, 0.0], [0.0, 0.0, 0.0]], np.float32), np.zeros(3, np.float32)])
    x = np.array([[1.0, 0.0], [1.0, 0.0]], np.float32)
    y = np.array([0, 1])
    logits = dk.Tensor(x) @ dk.Tensor(model.get_weights()[0])
    out = model.forward(x)  # the training graph ends in logits
    np.testing.assert_allclose(out.numpy(), logits.numpy(), rtol=1e-6)
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert np.isfinite(loss)
    np.testing.assert_allclose(loss, (0.0 + 2000.0) / 2, rtol=1e-5)  # -log p = logsumexp - logit
    assert accuracy == 0.5
    probs = model.predict(x)
    np.testing.assert_allclose(probs[0], [1.0, 0.0, 0.0], atol=1e-7)
    model.fit(x, y, epochs=1, batch_size=2, verbose=0)
    assert np.all(np.isfinite(model.get_weights()[0]))


def test_fit_history_keys_and_digits_accuracy(digits):
    x_train, y_train, x_test, y_test = digits
    dk.manual_seed(0)
    model = digits_mlp()
    model.compile(optimizer=optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=8, batch_size=32, validation_split=0.2, verbose=0)
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    assert all(len(v) == 8 for v in history.history.values())
    assert history.history["loss"][-1] < history.history["loss"][0]
    test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)
    assert test_acc > 0.9 and test_loss < 0.5
    probs = model.predict(x_test)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    assert np.mean(probs.argmax(1) == y_test) == pytest.approx(test_acc)
    assert model.history is history


def test_fit_is_reproducible_under_manual_seed(digits):
    x_train, y_train = digits[0][:300], digits[1][:300]
    runs = []
    for _ in range(2):
        dk.manual_seed(3)
        model = digits_mlp()
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
        runs.append(model.fit(x_train, y_train, epochs=2, verbose=0).history["loss"])
    assert runs[0] == runs[1]


def test_metric_names_follow_compile(digits):
    x, y = digits[0][:200], digits[1][:200]
    model = digits_mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    history = model.fit(x, y, epochs=1, verbose=0, validation_data=(x[:50], y[:50]))
    assert list(history.history) == ["loss", "val_loss"]
    assert isinstance(model.evaluate(x, y, verbose=0), float)
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["acc"])
    history = model.fit(x, y, epochs=1, verbose=0)
    assert list(history.history) == ["loss", "acc"]
    assert set(model.evaluate(x, y, verbose=0, return_dict=True)) == {"loss", "acc"}


def test_categorical_and_sparse_cross_entropy_train_identically(digits):
    x, y = digits[0][:256], digits[1][:256]
    results = []
    for loss, targets in (("sparse_categorical_crossentropy", y),
                          ("categorical_crossentropy", utils.to_categorical(y, 10))):
        dk.manual_seed(1)
        model = digits_mlp()
        model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss=loss, metrics=["accuracy"])
        results.append(model.fit(x, targets, epochs=2, batch_size=64, verbose=0, seed=5).history)
    assert results[0] == results[1]
    with pytest.raises(ValueError, match="one-hot"):
        model.fit(x, utils.to_categorical(y, 10) * 0.5, epochs=1, verbose=0)


def test_binary_cross_entropy_with_sigmoid_output(digits):
    x, y = digits[0], digits[1]
    keep = (y == 0) | (y == 1)
    x, y = x[keep], (y[keep] == 1).astype(np.float32)
    dk.manual_seed(0)
    model = models.Sequential([layers.Dense(8, activation="relu", input_shape=(64,)),
                               layers.Dense(1, activation="sigmoid")])
    model.compile(optimizer="adam", loss="binary_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, batch_size=16, verbose=0)
    assert history.history["accuracy"][-1] > 0.95
    probs = model.predict(x)
    assert probs.shape == (len(x), 1) and 0.0 <= probs.min() and probs.max() <= 1.0
    loss, accuracy = model.evaluate(x, y, verbose=0)
    assert accuracy == pytest.approx(np.mean((probs[:, 0] > 0.5) == (y > 0.5)))
    p = np.clip(probs[:, 0].astype(np.float64), 1e-12, 1 - 1e-12)
    np.testing.assert_allclose(loss, -np.mean(y * np.log(p) + (1 - y) * np.log(1 - p)), rtol=1e-3, atol=1e-4)


def test_activation_layer_as_the_softmax_head(digits):
    x, y = digits[0][:300], digits[1][:300]
    dk.manual_seed(0)
    model = models.Sequential([layers.Dense(10, input_shape=(64,)), layers.Activation("softmax")])
    model.compile(optimizer=optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    history = model.fit(x, y, epochs=5, verbose=0)
    assert history.history["accuracy"][-1] > 0.8
    np.testing.assert_allclose(model.predict(x[:4]).sum(1), 1.0, rtol=1e-5)
    assert model.count_params() == 650


def test_mse_and_from_logits():
    x = np.array([[0, 0], [0, 1], [1, 0], [1, 1]], np.float32)
    y = np.array([0, 1, 1, 1], np.float32)
    dk.manual_seed(0)
    model = models.Sequential([layers.Dense(1, activation="sigmoid", input_shape=(2,))])
    model.compile(optimizer=optimizers.SGD(learning_rate=2.0), loss="mse", metrics=["accuracy"])
    history = model.fit(x, y, epochs=300, batch_size=4, verbose=0)
    assert history.history["loss"][-1] < 0.05 and history.history["accuracy"][-1] == 1.0
    logits_model = models.Sequential([layers.Dense(3, input_shape=(2,))])
    logits_model.compile(optimizer="adam", loss=losses.SparseCategoricalCrossentropy(from_logits=True))
    logits_model.fit(x, np.array([0, 1, 2, 1]), epochs=1, verbose=0)
    assert not np.allclose(logits_model.predict(x).sum(1), 1.0)  # raw outputs, no softmax added


def test_l2_regularizer_adds_its_penalty(digits):
    x, y = digits[0][:100], digits[1][:100]
    dk.manual_seed(0)
    plain = digits_mlp()
    dk.manual_seed(0)
    regularized = digits_mlp(kernel_regularizer=regularizers.l2(0.01))
    for model in (plain, regularized):
        model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    kernel = regularized.layers[0].get_weights()[0].astype(np.float64)
    penalty = 0.01 * np.sum(kernel ** 2)
    np.testing.assert_allclose(regularized.evaluate(x, y, verbose=0) - plain.evaluate(x, y, verbose=0),
                               penalty, rtol=1e-4)
    both = regularizers.l1_l2(l1=0.001, l2=0.002)
    assert (both.l1, both.l2) == (0.001, 0.002)
    assert regularizers.get("l1").l1 == 0.01
    # the penalty's gradient shrinks the kernel: with zero data gradient, a step of plain SGD is
    # w - lr * 2 * l2 * w
    model = models.Sequential([layers.Dense(2, input_shape=(3,), use_bias=False,
                                            kernel_regularizer=regularizers.l2(0.5))])
    model.compile(optimizer=optimizers.SGD(learning_rate=0.1), loss="mse")
    w0 = model.get_weights()[0]
    model.fit(np.zeros((4, 3), np.float32), np.zeros((4, 2), np.float32), epochs=1, batch_size=4, verbose=0)
    np.testing.assert_allclose(model.get_weights()[0], w0 * (1 - 0.1 * 2 * 0.5), rtol=1e-5)


def test_optimizers_map_keras_arguments():
    params = [dk.nn.Parameter(np.zeros((2, 2), np.float32))]
    adam = optimizers.Adam(learning_rate=0.01, beta_1=0.8, beta_2=0.9, epsilon=1e-6).build(params)
    assert (adam.lr, adam.beta1, adam.beta2, adam.eps) == (0.01, 0.8, 0.9, 1e-6)
    rms = optimizers.RMSprop(rho=0.8).build(params)
    assert (rms.lr, rms.alpha, rms.eps) == (0.001, 0.8, 1e-7)
    sgd = optimizers.SGD(lr=0.5, momentum=0.9, nesterov=True).build(params)
    assert (sgd.lr, sgd.momentum, sgd.nesterov) == (0.5, 0.9, True)
    assert isinstance(optimizers.get("RMSprop"), optimizers.RMSprop)
    with pytest.raises(ValueError, match="learning_rate"):
        optimizers.Adam(learning_rate=-1)
    with pytest.raises(ValueError, match="optimizer"):
        optimizers.get("adagrad")


# -- callbacks and inputs --------------------------------------------------------------------

def test_early_stopping_and_keras_stop_idiom(digits):
    x, y = digits[0][:200], digits[1][:200]
    model = digits_mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    stopper = callbacks.EarlyStopping(monitor="loss", min_delta=100.0, patience=1, restore_best_weights=True)
    history = model.fit(x, y, epochs=10, verbose=0, callbacks=[stopper])
    assert len(history.history["loss"]) == 2 and stopper.stopped_epoch == 1
    by_acc = callbacks.EarlyStopping(monitor="val_acc", patience=3)
    assert by_acc.monitor == "val_accuracy" and by_acc.mode == "max"

    def stop_after_first(epoch, logs):
        model.stop_training = True
    history = model.fit(x, y, epochs=10, verbose=0,
                        callbacks=[callbacks.LambdaCallback(on_epoch_end=stop_after_first)])
    assert len(history.history["loss"]) == 1


def test_learning_rate_scheduler_sets_the_rate_each_epoch(digits):
    x, y = digits[0][:200], digits[1][:200]
    model = digits_mlp()
    model.compile(optimizer=optimizers.Adam(learning_rate=0.01), loss="sparse_categorical_crossentropy")
    seen, weights = [], []

    def schedule(epoch, lr):
        seen.append(lr)
        return 0.01 / (epoch + 1) if epoch < 2 else 0.0   # rate 0: the last epoch must not move anything

    model.fit(x, y, epochs=3, verbose=0, callbacks=[
        callbacks.LearningRateScheduler(schedule),
        callbacks.LambdaCallback(on_epoch_end=lambda epoch, logs: weights.append(model.get_weights()[0].copy()))])
    np.testing.assert_allclose(seen, [0.01, 0.01, 0.005])        # each call gets the rate set before it
    assert not np.array_equal(weights[0], weights[1])
    np.testing.assert_array_equal(weights[1], weights[2])
    with pytest.raises(TypeError, match="schedule"):
        callbacks.LearningRateScheduler(0.01)

def test_fit_on_augmented_flow(rng):
    (x_train, y_train), _ = datasets.mnist.load_data()
    x = x_train[:96].reshape(-1, 28, 28, 1).astype("float32") / 255
    y = y_train[:96]
    dk.manual_seed(0)
    model = models.Sequential([layers.Conv2D(4, (3, 3), activation="relu", input_shape=(28, 28, 1)),
                               layers.MaxPooling2D((2, 2)), layers.Flatten(),
                               layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    gen = ImageDataGenerator(rotation_range=10, width_shift_range=0.1, height_shift_range=0.1,
                             shear_range=0.1, zoom_range=0.1, fill_mode="nearest")
    history = model.fit(gen.flow(x, y, batch_size=32, seed=0), epochs=2, verbose=0,
                        validation_data=(x[:16], y[:16]))
    assert list(history.history) == ["loss", "accuracy", "val_loss", "val_accuracy"]
    history = model.fit(gen.flow(x, y, batch_size=32, seed=1), steps_per_epoch=2, epochs=2, verbose=0)
    assert len(history.history["loss"]) == 2
    onehot = models.Sequential([layers.Flatten(input_shape=(28, 28, 1)), layers.Dense(10, activation="softmax")])
    onehot.compile(optimizer="adam", loss="categorical_crossentropy")
    onehot.fit(gen.flow(x, utils.to_categorical(y, 10), batch_size=48), epochs=1, verbose=0)
    with pytest.raises(ValueError, match="y must not"):
        model.fit(gen.flow(x, y), y, epochs=1)


def test_verbose_prints_one_line_per_epoch(digits, capsys):
    model = digits_mlp()
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    model.fit(digits[0][:64], digits[1][:64], epochs=2, verbose=2)
    out = capsys.readouterr().out
    assert out.count("Epoch ") == 2 and "accuracy" in out


# -- saving and loading ----------------------------------------------------------------------

def test_save_and_load_model_round_trip(tmp_path, digits):
    x, y = digits[0][:200], digits[1][:200]
    dk.manual_seed(0)
    model = models.Sequential([layers.Dense(16, activation="relu", input_shape=(64,),
                                            kernel_regularizer=regularizers.l2(1e-3)),
                               layers.Dropout(0.1), layers.Dense(10, activation="softmax")])
    model.compile(optimizer=optimizers.Adam(learning_rate=3e-3), loss="sparse_categorical_crossentropy",
                  metrics=["accuracy"])
    model.fit(x, y, epochs=1, verbose=0)
    path = model.save(tmp_path / "model.npz")
    with np.load(path, allow_pickle=False) as archive:
        config = json.loads(str(archive["architecture"]))
    assert [layer["class_name"] for layer in config["config"]["layers"]] == ["Dense", "Dropout", "Dense"]
    loaded = models.load_model(path)
    np.testing.assert_array_equal(loaded.predict(x), model.predict(x))
    assert loaded.evaluate(x, y, verbose=0) == model.evaluate(x, y, verbose=0)
    assert loaded.layers[0].kernel_regularizer.l2 == 1e-3
    # the optimizer state came along: one more epoch gives the same weights in both
    for m in (model, loaded):
        dk.manual_seed(5)  # the same dropout masks
        m.fit(x, y, epochs=1, verbose=0, seed=9)
    for a, b in zip(model.get_weights(), loaded.get_weights()):
        np.testing.assert_allclose(a, b, rtol=1e-6, atol=1e-7)
    assert models.model_from_json(model.to_json()).count_params() == model.count_params()


def test_load_model_refuses_bad_files(tmp_path):
    with pytest.raises(FileNotFoundError):
        models.load_model(tmp_path / "missing.npz")
    junk = tmp_path / "junk.npz"
    junk.write_bytes(b"not a zip at all")
    with pytest.raises(ValueError, match=str(junk)):
        models.load_model(junk)
    other = tmp_path / "other.npz"
    np.savez(other, a=np.zeros(3))
    with pytest.raises(ValueError, match="no 'deepkern-keras-model' marker"):
        models.load_model(other)
    model = digits_mlp()
    path = model.save(tmp_path / "m.npz")
    with zipfile.ZipFile(path) as archive:
        entries = {name: archive.read(name) for name in archive.namelist()}
    with zipfile.ZipFile(tmp_path / "cut.npz", "w") as archive:  # drop one weight
        for name, payload in entries.items():
            if name != "weights/dense_1.linear.bias.npy":
                archive.writestr(name, payload)
    with pytest.raises(ValueError, match="missing keys"):
        models.load_model(tmp_path / "cut.npz")


# -- datasets --------------------------------------------------------------------------------

def test_mnist_load_data_embedded_and_from_idx(tmp_path, monkeypatch, capsys):
    monkeypatch.delenv(data.MNIST_DIR_ENV, raising=False)
    (x_train, y_train), (x_test, y_test) = datasets.mnist.load_data()
    assert x_train.shape == (4000, 28, 28) and x_test.shape == (1000, 28, 28)
    assert x_train.dtype == np.uint8 and y_train.dtype == np.uint8
    assert x_train.max() == 255 and set(np.unique(y_test)) == set(range(10))
    reference = data.load_mnist5k(seed=0)[0]
    np.testing.assert_allclose(x_train / 255.0, reference[:, 0], atol=1e-6)

    images = np.arange(3 * 28 * 28, dtype=np.uint8).reshape(3, 28, 28)
    labels = np.array([1, 2, 3], np.uint8)
    for stem, array in (("train-images-idx3-ubyte", images), ("t10k-images-idx3-ubyte", images),
                        ("train-labels-idx1-ubyte", labels), ("t10k-labels-idx1-ubyte", labels)):
        header = bytes([0, 0, 8, array.ndim]) + b"".join(d.to_bytes(4, "big") for d in array.shape)
        (tmp_path / stem).write_bytes(header + array.tobytes())
    monkeypatch.setenv(data.MNIST_DIR_ENV, str(tmp_path))
    (x_train, y_train), (x_test, y_test) = datasets.mnist.load_data()
    np.testing.assert_array_equal(x_train, images)
    np.testing.assert_array_equal(y_test, labels)


# -- errors ----------------------------------------------------------------------------------

def test_clear_errors():
    model = digits_mlp()
    with pytest.raises(RuntimeError, match="compile"):
        model.fit(np.zeros((2, 64)), np.zeros(2), verbose=0)
    bare = models.Sequential([layers.Dense(10, input_shape=(64,))])
    with pytest.raises(ValueError, match="activation='softmax'.*from_logits=True"):
        bare.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    sigmoid = models.Sequential([layers.Dense(1, activation="softmax", input_shape=(4,))])
    with pytest.raises(ValueError, match="sigmoid"):
        sigmoid.compile(optimizer="adam", loss="binary_crossentropy")
    with pytest.raises(ValueError, match="Flatten"):
        models.Sequential([layers.Conv2D(2, 3, input_shape=(8, 8, 1)), layers.Dense(3)])
    with pytest.raises(ValueError, match="channels-last"):
        seed_cnn().predict(np.zeros((2, 1, 28, 28), np.float32))
    with pytest.raises(ValueError, match="activation"):
        layers.Dense(3, activation="swish")
    with pytest.raises(ValueError, match="metrics"):
        digits_mlp().compile(optimizer="adam", loss="mse", metrics=["mae"])
    with pytest.raises(ValueError, match="loss"):
        digits_mlp().compile(optimizer="adam", loss="hinge")
    with pytest.raises(ValueError, match="padding"):
        layers.Conv2D(2, 3, padding="full")
    with pytest.raises(ValueError, match="larger than the input"):
        models.Sequential([layers.Conv2D(2, 5, input_shape=(3, 3, 1))])
    with pytest.raises(TypeError, match="Layer"):
        models.Sequential([dk.nn.Linear(2, 3)])
