"""Every example runs in its quick mode (a subprocess each, as a user would run it)."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"


def run_example(name: str, *args: str) -> str:
    env = dict(os.environ, MPLBACKEND="Agg")
    env.pop("DEEPKERN_MNIST_DIR", None)  # the embedded sample: the same data on every machine
    package_root = str(Path(__file__).resolve().parent.parent / "python")
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, str(EXAMPLES / name), "--quick", *args], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def test_perceptron_or_learns_the_gate():
    out = run_example("perceptron_or.py")
    assert "Epoch-- 0 --loss--" in out and "correct: 4/4" in out


def test_mlp_pytorch_style_loop():
    out = run_example("mlp_pytorch_style.py")
    assert "Train Epoch: 1/1, Loss:" in out and "Accuracy of the network on the 1000 test images" in out


def test_keras_mlp():
    out = run_example("keras_mlp.py")
    assert "Test accuracy:" in out and "'val_accuracy'" in out


def test_keras_cnn_with_augmentation_early_stopping_and_l2(tmp_path):
    plot = tmp_path / "history.png"
    out = run_example("keras_cnn_augmentation.py", "--plot", str(plot))
    assert "Total params: 121,930" in out and "Test accuracy:" in out
    assert plot.stat().st_size > 0


def test_keras_grid_search():
    out = run_example("keras_grid_search.py")
    assert "Best: " in out and "'optimizer'" in out


def test_mlp_loss_and_accuracy_plots(tmp_path):
    out = run_example("mlp_loss_accuracy_plots.py", "--outdir", str(tmp_path))
    assert "Optimization Finished!" in out and "Accuracy:" in out
    assert (tmp_path / "cost.png").stat().st_size > 0 and (tmp_path / "accuracy.png").stat().st_size > 0


@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_a_quick_mode(name):
    assert "--quick" in (EXAMPLES / name).read_text(encoding="utf-8")
