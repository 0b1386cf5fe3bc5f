"""``deepkern train`` end to end: quick runs, outputs, refusals, and quick-mode accuracy."""
from __future__ import annotations

import os
import re
import subprocess
import sys

import numpy as np
import pytest

import deepkern as dk
from deepkern import backends, cli, train


def _run(capsys, *argv):
    code = cli.main(["train", *argv])
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def _test_accuracy(out: str) -> float:
    match = re.search(r"test accuracy: ([0-9.]+)", out)
    assert match, out
    return float(match.group(1))


def test_train_mlp_one_epoch_end_to_end(tmp_path, capsys):
    ckpt, plot = tmp_path / "mlp.npz", tmp_path / "mlp.png"
    code, out, err = _run(capsys, "--model", "mlp", "--epochs", "1", "--limit", "1000", "--no-progress",
                          "--save", str(ckpt), "--plot", str(plot))
    assert code == 0, err
    assert "Epoch 1/1" in out and "val_accuracy" in out
    assert _test_accuracy(out) > 0.6  # 900 real digits, one epoch
    assert re.search(r"training: [0-9,]+ samples/s", out)
    assert f"checkpoint: {ckpt}" in out and f"history plot: {plot}" in out
    assert plot.read_bytes()[:4] == b"\x89PNG"
    # the checkpoint restores into a fresh MLP, with the Adam state that trained it
    model = dk.models.MLP(784, (256, 256), 10)
    opt = dk.optim.Adam(model.parameters())
    assert train.load(model, ckpt, optimizer=opt)["optimizer"] == "Adam"
    assert opt.step_count == 29  # ceil(900 / 32) updates
    x_train, y_train, x_test, y_test = dk.data.load_mnist5k(seed=0, flatten=True)
    assert train.evaluate(model, x_test, y_test)[1] == pytest.approx(_test_accuracy(out), abs=1e-4)


def test_train_perceptron_learns_or(tmp_path, capsys):
    code, out, err = _run(capsys, "--model", "perceptron", "--save", str(tmp_path / "p.npz"),
                          "--plot", str(tmp_path / "p.png"))
    assert code == 0, err
    for row, want in (("(0, 0)", 0), ("(0, 1)", 1), ("(1, 0)", 1), ("(1, 1)", 1)):
        assert f"OR{row} = {want}" in out
    assert _test_accuracy(out) == 1.0
    assert "Epoch" not in out  # no thousand lines of per-epoch logs
    assert (tmp_path / "p.npz").exists() and (tmp_path / "p.png").exists()


def test_train_with_forced_backend(tmp_path, capsys):
    try:
        code, out, err = _run(capsys, "--model", "perceptron", "--epochs", "300", "--backend", "numpy",
                              "--save", str(tmp_path / "p.npz"), "--plot", str(tmp_path / "p.png"))
    finally:
        backends.set_backend(None)
    assert code == 0, err
    assert _test_accuracy(out) == 1.0


@pytest.mark.parametrize("argv, message", [
    (["--model", "perceptron", "--dataset", "mnist5k"], "perceptron is a single neuron"),
    (["--model", "mlp", "--dataset", "or"], "use --model perceptron"),
    (["--model", "cnn", "--dataset", "digits"], "cnn cannot take the digits images .1, 8, 8.*--model mlp"),
    (["--model", "mlp", "--epochs", "0"], "--epochs must be >= 1"),
    (["--model", "mlp", "--batch-size", "0"], "--batch-size must be >= 1"),
    (["--model", "mlp", "--validation-split", "1.5"], "--validation-split"),
    (["--model", "mlp", "--lr", "0"], "--lr must be > 0"),
    (["--model", "mlp", "--seed", "-3"], "--seed must be >= 0"),
    (["--model", "mlp", "--patience", "-1"], "--patience must be >= 0"),
])
def test_train_refuses_bad_combinations(tmp_path, capsys, argv, message):
    code, out, err = _run(capsys, *argv, "--no-progress", "--save", str(tmp_path / "x.npz"),
                          "--plot", str(tmp_path / "x.png"))
    assert code == 2
    assert re.search(message, err), err
    assert not os.listdir(tmp_path)  # nothing trained, nothing written


def test_train_cuda_without_gpu_fails_cleanly(tmp_path, capsys):
    if backends.available("cuda") or backends.available("cupy"):
        pytest.skip("a GPU backend is available")
    code, out, err = _run(capsys, "--model", "mlp", "--dataset", "digits", "--device", "cuda",
                          "--no-progress", "--save", str(tmp_path / "x.npz"), "--plot", str(tmp_path / "x.png"))
    assert code == 1 and "cuda" in err.lower()


def test_mlp_on_digits_reaches_96_percent(tmp_path):
    # the quick seed-model target, run as a user would: the console module in a fresh process
    result = subprocess.run(
        [sys.executable, "-m", "deepkern.cli", "train", "--model", "mlp", "--dataset", "digits",
         "--no-progress", "--save", str(tmp_path / "d.npz"), "--plot", str(tmp_path / "d.png")],
        capture_output=True, text=True, timeout=300, env={**os.environ, "PYTHONPATH": os.pathsep.join(sys.path)})
    assert result.returncode == 0, result.stderr
    assert _test_accuracy(result.stdout) >= 0.96


def test_cnn_short_run_on_a_subset_learns(tmp_path, capsys):
    # two epochs on 600 real MNIST digits: far from the full target, well above chance (10%)
    code, out, err = _run(capsys, "--model", "cnn", "--epochs", "2", "--limit", "600", "--no-progress",
                          "--save", str(tmp_path / "c.npz"), "--plot", str(tmp_path / "c.png"))
    assert code == 0, err
    assert _test_accuracy(out) >= 0.75
    model = dk.models.CNN()
    train.load(model, tmp_path / "c.npz")
    _, _, x_test, y_test = dk.data.load_mnist5k(seed=0)
    logits = train.predict(model, x_test[:200])
    assert logits.shape == (200, 10) and np.mean(logits.argmax(1) == y_test[:200]) > 0.6
