"""Every example runs in its quick mode (a subprocess each, as a user would run it) and learns.

The subprocesses import the same deepkern this test process imported (the installed package in
CI, the source tree with its built module under ``PYTHONPATH=python``), never a checkout's bare
``python/`` folder ahead of it, and run on the compiled CPU backend (``DEEPKERN_BACKEND=cpu``, which
fails loudly if the module is missing), not on the NumPy fallback. The examples seed everything,
so the accuracy thresholds below (well under what the quick runs reach) hold on any machine.
"""
from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

import pytest

import deepkern
from deepkern import backends

from .test_data_full import requires_debian_fashion

EXAMPLES = Path(__file__).resolve().parent.parent / "examples"

pytestmark = pytest.mark.skipif(not backends.available("cpu"),
                                reason="the compiled module is not built (pip install . or tools/devbuild.sh)")


def run_example(name: str, *args: str) -> str:
    env = dict(os.environ, MPLBACKEND="Agg", DEEPKERN_BACKEND="cpu")
    env.pop("DEEPKERN_MNIST_DIR", None)  # the embedded sample: the same data on every machine
    env["KERAS_HOME"] = os.devnull       # ... even where the user has Keras's MNIST cached
    package_root = str(Path(deepkern.__file__).resolve().parent.parent)
    env["PYTHONPATH"] = os.pathsep.join(p for p in (package_root, env.get("PYTHONPATH")) if p)
    result = subprocess.run([sys.executable, str(EXAMPLES / name), "--quick", *args], env=env,
                            capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, f"{name} failed:\n{result.stdout}\n{result.stderr}"
    return result.stdout


def number_after(label: str, out: str) -> float:
    """The last number printed after ``label``."""
    found = re.findall(re.escape(label) + r"\s*([0-9.]+)", out)
    assert found, f"no {label!r} in the output:\n{out}"
    return float(found[-1])


def test_examples_import_the_package_under_test():
    out = subprocess.run([sys.executable, "-c", "import deepkern, deepkern.backends as b; "
                          "print(deepkern.__file__, b.available('cpu'))"],
                         env=dict(os.environ, PYTHONPATH=str(Path(deepkern.__file__).resolve().parent.parent)),
                         capture_output=True, text=True, check=True).stdout.split()
    assert Path(out[0]).resolve() == Path(deepkern.__file__).resolve() and out[1] == "True"


def test_perceptron_or_learns_the_gate():
    out = run_example("perceptron_or.py")
    assert "Epoch-- 0 --loss--" in out and "correct: 4/4" in out
    assert number_after("Epoch-- 99 --loss--", out) < number_after("Epoch-- 0 --loss--", out) / 2


def test_mlp_pytorch_style_loop():
    out = run_example("mlp_pytorch_style.py")
    assert "Train Epoch: 1/1, Loss:" in out
    assert number_after("Accuracy of the network on the 1000 test images:", out) > 50.0   # quick run: 67 %


def test_keras_mlp():
    out = run_example("keras_mlp.py")
    assert "'val_accuracy'" in out and number_after("Test accuracy:", out) > 0.7               # 0.86


def test_keras_cnn_with_augmentation_early_stopping_and_l2(tmp_path):
    plot = tmp_path / "history.png"
    out = run_example("keras_cnn_augmentation.py", "--plot", str(plot))
    assert "Total params: 121,930" in out and number_after("Test accuracy:", out) > 0.2        # 1 epoch: 0.31
    assert plot.stat().st_size > 0


def test_keras_grid_search():
    out = run_example("keras_grid_search.py")
    assert "'optimizer'" in out and number_after("Best:", out) > 0.3                          # 0.49


def test_mlp_loss_and_accuracy_plots(tmp_path):
    out = run_example("mlp_loss_accuracy_plots.py", "--outdir", str(tmp_path))
    assert "Optimization Finished!" in out and number_after("Accuracy:", out) > 0.15          # 2 epochs: 0.24
    costs = [float(c) for c in re.findall(r"cost=\s*([0-9.]+)", out)]
    assert len(costs) >= 2 and costs[-1] < costs[0]
    assert (tmp_path / "cost.png").stat().st_size > 0 and (tmp_path / "accuracy.png").stat().st_size > 0


@pytest.mark.slow
@requires_debian_fashion
def test_fashion_mnist_cnn_quick_run_on_the_full_dataset():
    # one epoch on 20,000 of the 60,000 images (9 CPU-seconds of training), the full 10,000 test images;
    # dropout and flips slow the first epoch: the full run needs ~10 epochs for 0.91
    out = run_example("fashion_mnist_cnn.py")
    assert "samples/s" in out and number_after("Test accuracy:", out) >= 0.75                  # 0.787

@pytest.mark.parametrize("name", sorted(p.name for p in EXAMPLES.glob("*.py")))
def test_every_example_has_a_quick_mode(name):
    assert "--quick" in (EXAMPLES / name).read_text(encoding="utf-8")
