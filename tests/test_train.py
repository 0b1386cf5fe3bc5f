"""The training loop: fit/evaluate/predict, History, callbacks, L1/L2, checkpoints, plots."""
from __future__ import annotations

import os
import zipfile

import numpy as np
import pytest

import deepkern as dk
from deepkern import train


def _blobs(rng, n=120, features=5, classes=3, spread=0.6):
    """Well separated Gaussian blobs: a problem any small network learns in a few epochs."""
    centres = rng.standard_normal((classes, features)) * 3.0
    y = rng.integers(0, classes, size=n)
    x = centres[y] + spread * rng.standard_normal((n, features))
    return x, y  # float64 on purpose: fit converts once


def _mlp(features=5, classes=3, hidden=(16,), seed=0):
    dk.manual_seed(seed)
    return dk.models.MLP(features, hidden, classes)


def test_fit_lowers_the_loss_and_fills_history(rng):
    x, y = _blobs(rng)
    model = _mlp()
    loss_before, _ = train.evaluate(model, x, y)
    history = train.fit(model, x, y, epochs=6, batch_size=16, lr=0.01, progress=False)
    loss_after, acc_after = train.evaluate(model, x, y)
    assert loss_after < 0.5 * loss_before
    assert acc_after > 0.9
    assert isinstance(history, train.History)
    assert history.epoch == list(range(6))
    assert list(history.history) == ["loss", "accuracy"]
    assert len(history.loss) == len(history.accuracy) == 6
    assert history.loss is history.history["loss"]
    assert history.loss[-1] < history.loss[0]
    assert all(0.0 <= a <= 1.0 for a in history.accuracy)
    assert history.val_loss == [] and history.val_accuracy == []
    assert len(history.samples_per_second) == 6 and min(history.samples_per_second) > 0
    assert history.params["samples"] == 120 and history.params["batch_size"] == 16
    assert len(history) == 6 and "epochs=6" in repr(history)


def test_fit_accepts_lists_and_reports_the_training_loss(rng):
    x, y = _blobs(rng, n=40)
    model = _mlp()
    history = train.fit(model, x.tolist(), y.tolist(), epochs=1, batch_size=40, shuffle=False,
                        optimizer="sgd", lr=1e-9, progress=False)
    # one full batch with a negligible step: the epoch loss is the loss before the update
    loss, acc = train.evaluate(model, x, y)
    assert history.loss[0] == pytest.approx(loss, rel=1e-4)
    assert history.accuracy[0] == pytest.approx(acc)


def test_validation_split_takes_the_tail(rng):
    x, y = _blobs(rng, n=100)
    model = _mlp()
    history = train.fit(model, x, y, epochs=2, batch_size=10, validation_split=0.25, lr=0.01, progress=False)
    assert history.params["samples"] == 75 and history.params["validation_samples"] == 25
    assert len(history.val_loss) == len(history.val_accuracy) == 2
    val_loss, val_acc = train.evaluate(model, x[75:], y[75:])
    assert history.val_loss[-1] == pytest.approx(val_loss, rel=1e-5)
    assert history.val_accuracy[-1] == pytest.approx(val_acc)


def test_validation_data_overrides_split(rng):
    x, y = _blobs(rng, n=60)
    xv, yv = _blobs(np.random.default_rng(1), n=17)
    model = _mlp()
    history = train.fit(model, x, y, epochs=2, validation_data=(xv, yv), validation_split=0.5,
                        progress=False)
    assert history.params["samples"] == 60 and history.params["validation_samples"] == 17
    assert history.val_loss[-1] == pytest.approx(train.evaluate(model, xv, yv)[0], rel=1e-5)


def test_shuffling_is_seeded(rng):
    x, y = _blobs(rng, n=64)
    runs = []
    for seed in (5, 5, 6):
        model = _mlp(seed=0)
        runs.append(train.fit(model, x, y, epochs=2, batch_size=8, seed=seed, progress=False).loss)
    assert runs[0] == runs[1]
    assert runs[0] != runs[2]


def test_fit_rejects_bad_arguments(rng):
    x, y = _blobs(rng, n=20)
    model = _mlp()
    cases = [
        (dict(epochs=0), ValueError, "epochs"),
        (dict(epochs=2.5), TypeError, "epochs"),
        (dict(batch_size=0), ValueError, "batch_size"),
        (dict(validation_split=1.0), ValueError, "validation_split"),
        (dict(validation_split=-0.1), ValueError, "validation_split"),
        (dict(validation_split=0.99), ValueError, "validation_split"),  # 0 samples left to train on
        (dict(validation_split=1e-17), ValueError, "validation_split"),  # 0 samples held out
        (dict(optimizer="adagrad"), ValueError, "optimizer"),
        (dict(optimizer=object()), TypeError, "optimizer"),
        (dict(loss="hinge"), ValueError, "loss"),
        (dict(lr=-1.0), ValueError, "lr"),
        (dict(l2=-0.1), ValueError, "l2"),
        (dict(progress="yes"), TypeError, "progress"),
        (dict(device="tpu"), ValueError, "device"),
        (dict(callbacks=[print]), TypeError, "callbacks"),
        (dict(validation_data=(x,)), ValueError, "validation_data"),
        (dict(validation_data=(x[:, :3], y)), ValueError, "validation_data"),
    ]
    for kwargs, error, word in cases:
        with pytest.raises(error, match=word):
            train.fit(model, x, y, progress=False, **kwargs)
    with pytest.raises(ValueError, match="19"):
        train.fit(model, x, y[:19], progress=False)
    with pytest.raises(ValueError, match="rank >= 2"):
        train.fit(model, x[:, 0], y, progress=False)
    with pytest.raises(ValueError, match="NaN"):
        train.fit(model, np.full_like(x, np.nan), y, progress=False)
    with pytest.raises(TypeError, match="integer class labels"):
        train.fit(model, x, y + 0.5, progress=False)
    with pytest.raises(ValueError, match="lr applies only"):
        train.fit(model, x, y, optimizer=dk.optim.SGD(model.parameters(), lr=0.1), lr=0.1, progress=False)
    with pytest.raises(TypeError, match="model"):
        train.fit("model", x, y, progress=False)


def test_optimizer_instance_and_custom_loss(rng):
    x, y = _blobs(rng, n=60)
    model = _mlp()
    opt = dk.optim.RMSprop(model.parameters(), lr=0.005)
    calls = []

    def my_loss(out, target):
        calls.append(target.dtype)
        return dk.nn.functional.cross_entropy(out, target)

    history = train.fit(model, x, y, epochs=3, batch_size=20, optimizer=opt, loss=my_loss, progress=False)
    assert opt.step_count == 9
    assert calls and all(dtype == np.int64 for dtype in calls)
    assert history.loss[-1] < history.loss[0]


def test_mse_perceptron_learns_or_gate():
    x, y, _, _ = dk.data.load_or_gate()
    dk.manual_seed(0)
    model = dk.models.Perceptron(2)
    history = train.fit(model, x, y, epochs=400, batch_size=4, loss="mse", optimizer="sgd", lr=2.0,
                        progress=False)
    assert history.accuracy[-1] == 1.0
    np.testing.assert_array_equal(model.predict(x), [0, 1, 1, 1])
    out = train.predict(model, x)
    assert out.shape == (4, 1) and out.dtype == np.float32
    loss, acc = train.evaluate(model, x, y, loss="mse")
    assert acc == 1.0 and loss == pytest.approx(history.loss[-1], abs=0.01)


def test_l1_l2_penalties_shrink_weights(rng):
    x, y = _blobs(rng, n=80)
    norms = {}
    for name, kwargs in [("none", {}), ("l2", {"l2": 0.05}), ("l1", {"l1": 0.1})]:
        model = _mlp(seed=0)
        history = train.fit(model, x, y, epochs=8, batch_size=16, optimizer="sgd", lr=0.05, seed=1,
                            progress=False, **kwargs)
        weights = [p.data for p in model.parameters() if p.data.ndim == 2]
        norms[name] = (sum(float((w * w).sum()) for w in weights), sum(float(np.abs(w).sum()) for w in weights))
        if kwargs:
            # the reported loss includes the penalty: it exceeds the data loss
            assert history.loss[-1] > train.evaluate(model, x, y)[0]
    assert norms["l2"][0] < 0.8 * norms["none"][0]
    assert norms["l1"][1] < 0.8 * norms["none"][1]


def test_penalty_gradient_matches_the_penalty_tensors(rng):
    # the loop's analytic gradient terms agree with dk.optim's differentiable penalties
    model = _mlp(seed=3)
    params = model.parameters()
    weights = [p for p in params if p.data.ndim >= 2]
    for p in params:
        p.grad = np.zeros_like(p.data)
    value = train._penalty_grads(params, 0.01, 0.02)
    ours = [p.grad.copy() for p in weights]
    for p in params:
        p.grad = None
    total = dk.optim.l1_penalty(weights, 0.01) + dk.optim.l2_penalty(weights, 0.02)
    total.backward()
    assert value == pytest.approx(total.item(), rel=1e-5)
    for mine, p in zip(ours, weights):
        np.testing.assert_allclose(mine, p.grad, rtol=1e-5, atol=1e-7)


def test_predict_logits_and_probabilities(rng):
    x, y = _blobs(rng, n=37)
    model = _mlp()
    logits = train.predict(model, x, batch_size=8)
    assert logits.shape == (37, 3) and logits.dtype == np.float32
    np.testing.assert_allclose(logits, model(dk.Tensor(x.astype(np.float32))).numpy(), rtol=1e-5, atol=1e-6)
    probs = train.predict(model, x, batch_size=8, proba=True)
    np.testing.assert_allclose(probs.sum(axis=1), 1.0, rtol=1e-5)
    np.testing.assert_array_equal(probs.argmax(1), logits.argmax(1))
    assert model.training  # predict restores the mode it found


class _Recorder(train.Callback):
    def __init__(self):
        super().__init__()
        self.events = []

    def on_train_begin(self, logs=None):
        self.events.append(("begin", self.model is not None, self.optimizer is not None))

    def on_epoch_begin(self, epoch, logs=None):
        self.events.append(("epoch_begin", epoch))

    def on_epoch_end(self, epoch, logs=None):
        self.events.append(("epoch_end", epoch, sorted(logs)))
        if epoch == 1:
            self.stop_training = True

    def on_train_end(self, logs=None):
        self.events.append(("end",))


def test_callback_hooks_and_stop_training(rng):
    x, y = _blobs(rng, n=30)
    rec = _Recorder()
    history = train.fit(_mlp(), x, y, epochs=5, validation_split=0.2, callbacks=[rec], progress=False)
    keys = ["accuracy", "loss", "val_accuracy", "val_loss"]
    assert rec.events == [("begin", True, True), ("epoch_begin", 0), ("epoch_end", 0, keys),
                          ("epoch_begin", 1), ("epoch_end", 1, keys), ("end",)]
    assert len(history.loss) == 2


def test_early_stopping_stops_and_restores_best_weights(rng):
    x, y = _blobs(rng, n=60)
    xv, yv = _blobs(np.random.default_rng(7), n=30)
    model = _mlp()
    # an absurd learning rate makes the validation loss climb after the first epoch or two
    stopper = train.EarlyStopping(monitor="val_loss", patience=1, restore_best_weights=True)
    snapshots = []

    class Snapshot(train.Callback):
        def on_epoch_end(self, epoch, logs=None):
            snapshots.append(self.model.state_dict())

    history = train.fit(model, x, y, epochs=30, batch_size=10, optimizer="sgd", lr=5.0,
                        validation_data=(xv, yv), callbacks=[Snapshot(), stopper], progress=False)
    assert stopper.stopped_epoch is not None and len(history.loss) < 30
    assert stopper.stopped_epoch == len(history.loss) - 1
    best = int(np.argmin(history.val_loss))
    assert stopper.best_epoch == best and stopper.best == pytest.approx(history.val_loss[best])
    assert best != stopper.stopped_epoch
    assert stopper.stopped_epoch - best == 1  # patience 1: the first epoch without improvement
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, snapshots[best][name])
    assert train.evaluate(model, xv, yv)[0] == pytest.approx(history.val_loss[best], rel=1e-5)


def test_early_stopping_patience_min_delta_and_mode():
    stopper = train.EarlyStopping(monitor="val_accuracy", patience=2, min_delta=0.01)
    assert stopper.mode == "max"
    stopper.model = None
    stopper.on_train_begin()
    for epoch, acc in enumerate([0.5, 0.6, 0.605, 0.609]):
        stopper.on_epoch_end(epoch, {"val_accuracy": acc})
    assert stopper.best == 0.6 and stopper.best_epoch == 1
    assert stopper.stopped_epoch == 3 and stopper.stop_training
    with pytest.raises(ValueError, match="monitors 'val_loss'.*validation"):
        train.EarlyStopping().on_epoch_end(0, {"loss": 1.0})
    with pytest.raises(ValueError, match="mode"):
        train.EarlyStopping(mode="up")
    with pytest.raises(ValueError, match="patience"):
        train.EarlyStopping(patience=-1)


def test_model_checkpoint_every_epoch_and_best_only(tmp_path, rng):
    x, y = _blobs(rng, n=50)
    every = train.ModelCheckpoint(tmp_path / "ep{epoch:02d}.npz", save_best_only=False)
    best = train.ModelCheckpoint(tmp_path / "best.npz", monitor="loss", save_best_only=True)
    model = _mlp()
    train.fit(model, x, y, epochs=3, callbacks=[every, best], progress=False)
    assert sorted(os.listdir(tmp_path)) == ["best.npz", "ep01.npz", "ep02.npz", "ep03.npz"]
    assert every.last_saved == str(tmp_path / "ep03.npz")
    restored = _mlp(seed=9)
    opt = dk.optim.Adam(restored.parameters())
    info = train.load(restored, tmp_path / "ep03.npz", optimizer=opt)
    assert info == {"version": train.CHECKPOINT_VERSION, "optimizer": "Adam"}
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(restored.state_dict()[name], value)
    assert opt.step_count == 3 * 2  # 3 epochs of 2 batches of 32


def test_checkpoint_round_trip_with_optimizer_state(tmp_path, rng):
    x, y = _blobs(rng, n=64)
    model = _mlp(hidden=(8, 8))
    opt = dk.optim.Adam(model.parameters(), lr=0.01)
    train.fit(model, x, y, epochs=2, optimizer=opt, progress=False)
    path = tmp_path / "model.npz"
    assert train.save(model, path, optimizer=opt) == str(path)
    assert os.listdir(tmp_path) == ["model.npz"]  # no temporary file left behind
    with np.load(path, allow_pickle=False) as npz:  # plain arrays only
        assert str(npz["__format__"]) == train.CHECKPOINT_FORMAT

    other = _mlp(hidden=(8, 8), seed=5)
    other_opt = dk.optim.Adam(other.parameters(), lr=0.5)
    train.load(other, path, optimizer=other_opt)
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(other.state_dict()[name], value)
    saved_state, loaded_state = opt.state_dict(), other_opt.state_dict()
    assert sorted(saved_state) == sorted(loaded_state)
    for key in saved_state:
        np.testing.assert_array_equal(loaded_state[key], saved_state[key])
    # continuing from the checkpoint equals continuing the original run
    train.fit(model, x, y, epochs=1, optimizer=opt, seed=3, progress=False)
    train.fit(other, x, y, epochs=1, optimizer=other_opt, seed=3, progress=False)
    for name, value in model.state_dict().items():
        np.testing.assert_allclose(other.state_dict()[name], value, rtol=1e-6, atol=1e-7)

    # weights only: loading into a model works, asking for optimizer state does not
    train.save(model, tmp_path / "weights.npz")
    train.load(other, tmp_path / "weights.npz")
    with pytest.raises(ValueError, match="weights.npz.*no optimizer state"):
        train.load(other, tmp_path / "weights.npz", optimizer=other_opt)
    with pytest.raises(ValueError, match="model.npz.*from Adam.*SGD"):
        train.load(other, path, optimizer=dk.optim.SGD(other.parameters()))


def test_checkpoint_refuses_bad_files_without_touching_the_model(tmp_path, rng):
    model = _mlp(hidden=(8,))
    path = tmp_path / "good.npz"
    train.save(model, path)
    before = model.state_dict()

    truncated = tmp_path / "truncated.npz"
    truncated.write_bytes(path.read_bytes()[: path.stat().st_size // 2])
    with pytest.raises(ValueError, match="truncated.npz.*(truncated|corrupt)"):
        train.load(model, truncated)

    garbage = tmp_path / "garbage.npz"
    garbage.write_bytes(b"definitely not a checkpoint" * 10)
    with pytest.raises(ValueError, match="garbage.npz"):
        train.load(model, garbage)

    foreign = tmp_path / "foreign.npz"
    np.savez(foreign, weights=np.ones(3, dtype=np.float32))
    with pytest.raises(ValueError, match="foreign.npz.*not a deepkern checkpoint"):
        train.load(model, foreign)

    single = tmp_path / "single.npy"
    np.save(single, np.ones(3))
    with pytest.raises(ValueError, match="single.npy.*not a deepkern checkpoint"):
        train.load(model, single)

    newer = tmp_path / "newer.npz"
    with np.load(path) as npz:
        entries = dict(npz)
    entries["__version__"] = np.array(train.CHECKPOINT_VERSION + 1)
    np.savez(newer, **entries)
    with pytest.raises(ValueError, match="newer.npz.*version"):
        train.load(model, newer)

    wider = _mlp(hidden=(9,))
    with pytest.raises(ValueError, match=r"good.npz.*shape \(8, 5\) in the file but \(9, 5\)"):
        train.load(wider, path)
    deeper = _mlp(hidden=(8, 8))
    with pytest.raises(ValueError, match="good.npz.*(missing|unexpected) parameters"):
        train.load(deeper, path)

    with pytest.raises(FileNotFoundError, match="absent.npz"):
        train.load(model, tmp_path / "absent.npz")
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def test_save_is_atomic(tmp_path, monkeypatch):
    model = _mlp(hidden=(4,))
    path = tmp_path / "ckpt.npz"
    train.save(model, path)
    original = path.read_bytes()

    def crash(*args, **kwargs):
        raise KeyboardInterrupt("power cut")

    monkeypatch.setattr(np, "savez", crash)
    with pytest.raises(KeyboardInterrupt):
        train.save(_mlp(hidden=(4,), seed=8), path)
    assert path.read_bytes() == original  # the old checkpoint is intact
    assert os.listdir(tmp_path) == ["ckpt.npz"]  # and no temporary file remains
    assert zipfile.is_zipfile(path)


def test_plot_history_writes_png(tmp_path, rng):
    x, y = _blobs(rng, n=40)
    history = train.fit(_mlp(), x, y, epochs=2, validation_split=0.25, progress=False)
    out = train.plot_history(history, tmp_path / "curves.png", title="blobs")
    data = (tmp_path / "curves.png").read_bytes()
    assert out == str(tmp_path / "curves.png") and data[:8] == b"\x89PNG\r\n\x1a\n" and len(data) > 5000
    train.plot_history({"loss": [1.0, 0.5]}, tmp_path / "loss_only.png")
    assert (tmp_path / "loss_only.png").stat().st_size > 1000
    with pytest.raises(ValueError, match="loss"):
        train.plot_history({}, tmp_path / "empty.png")


def test_progress_bar_shows_metrics(rng, capsys):
    x, y = _blobs(rng, n=40)
    train.fit(_mlp(), x, y, epochs=2, batch_size=8, validation_split=0.2, progress=True)
    out = capsys.readouterr().out
    assert "Epoch 2/2" in out and "loss=" in out and "val_acc=" in out and "samples/s" in out


def test_progress_is_off_when_stdout_is_not_a_terminal(rng, capsys):
    x, y = _blobs(rng, n=20)
    train.fit(_mlp(), x, y, epochs=1, progress=None)  # pytest captures stdout: not a tty
    assert capsys.readouterr().out == ""


def test_epoch_logger(rng):
    x, y = _blobs(rng, n=20)
    lines = []
    train.fit(_mlp(), x, y, epochs=2, callbacks=[train.EpochLogger(lines.append)], progress=False)
    assert len(lines) == 2 and lines[1].startswith("Epoch 2/2") and "accuracy:" in lines[1]


def test_cuda_device_without_gpu_is_a_clear_error(rng):
    if dk.backends.available("cuda") or dk.backends.available("cupy"):
        pytest.skip("a GPU backend is available")
    x, y = _blobs(rng, n=8)
    with pytest.raises(RuntimeError, match="cuda"):
        train.fit(_mlp(), x, y, epochs=1, device="cuda", progress=False)
