"""Every seed program (tests/seeds/, kept verbatim) runs with only its imports swapped.

The swap is mechanical (``swap_imports``): ``tensorflow.keras`` -> ``deepkern.keras``,
``tensorflow`` -> ``deepkern.compat.v1``, ``torch`` -> ``deepkern.torch``, ``torchvision`` ->
``deepkern.torchvision``, on import lines only. The data the programs load is a small MNIST
subset written as IDX files and named by ``$DEEPKERN_MNIST_DIR`` (what a user with the full set
does), so each run stays short; the programs' ``reshape((60000, ...))`` lines, which hard-code the
full set's size, become ``reshape((-1, ...))``. Each program runs in-process and the test checks
what it computed (accuracy, loss).
"""
from __future__ import annotations

import re
from pathlib import Path
from typing import Dict

import numpy as np
import pytest

from deepkern import data
from deepkern.compat import v1 as tf1

from .conftest import write_idx

SEEDS = Path(__file__).resolve().parent / "seeds"

_MODULES = [("tensorflow.keras", "deepkern.keras"), ("tensorflow", "deepkern.compat.v1"),
            ("torchvision", "deepkern.torchvision"), ("torch", "deepkern.torch")]
_IMPORT = re.compile(r"^(\s*(?:import|from)\s+)([\w.]+)(.*)$")


def swap_imports(source: str) -> str:
    """Point the import lines at deepkern's front ends; every other line stays as it is."""
    lines = []
    for line in source.splitlines():
        m = _IMPORT.match(line)
        if m:
            module, rest = m.group(2), m.group(3)
            for old, new in _MODULES:
                if module == old or module.startswith(old + "."):
                    if module == old and m.group(1).lstrip().startswith("import") and not rest.strip():
                        rest = f" as {old}"  # `import torch` must still bind the name torch
                    module = new + module[len(old):]
                    break
            line = m.group(1) + module + rest
        lines.append(line)
    return "\n".join(lines) + "\n"


def test_swap_imports_changes_only_import_lines():
    src = ("import tensorflow as tf\nfrom tensorflow.keras import layers\nimport torch.nn as nn\n"
           "from torchvision import datasets\nx = tf.torch\nimport torchx\nimport torch\n")
    assert swap_imports(src) == ("import deepkern.compat.v1 as tf\nfrom deepkern.keras import layers\n"
                                 "import deepkern.torch.nn as nn\nfrom deepkern.torchvision import datasets\n"
                                 "x = tf.torch\nimport torchx\nimport deepkern.torch as torch\n")


@pytest.fixture
def mnist_subset(tmp_path, monkeypatch):
    """Make ``n_train``/``n_test`` digits of the embedded sample the user's "full" MNIST."""
    def make(n_train: int, n_test: int) -> Path:
        (x_train, y_train), (x_test, y_test) = data.load_mnist_arrays("mnist", source="sample")
        folder = tmp_path / "mnist"
        folder.mkdir()
        for stem, array in (("train-images-idx3-ubyte", x_train[:n_train]),
                            ("train-labels-idx1-ubyte", y_train[:n_train]),
                            ("t10k-images-idx3-ubyte", x_test[:n_test]),
                            ("t10k-labels-idx1-ubyte", y_test[:n_test])):
            write_idx(folder / stem, array)
        monkeypatch.setenv(data.MNIST_DIR_ENV, str(folder))
        return folder
    monkeypatch.setenv("KERAS_HOME", str(tmp_path / "no-keras-cache"))
    monkeypatch.setenv("MPLBACKEND", "Agg")
    monkeypatch.chdir(tmp_path)
    return make


def run_seed(name: str, edits: Dict[str, str] = {}) -> dict:  # noqa: B006  (read only)
    """Run tests/seeds/<name> with its imports swapped (and the given data-line edits)."""
    import matplotlib
    matplotlib.use("Agg")
    source = swap_imports((SEEDS / name).read_text(encoding="utf-8"))
    for old, new in edits.items():
        assert old in source, f"{name}: expected the line {old!r}"
        source = source.replace(old, new)
    tf1.reset_default_graph()
    namespace = {"__name__": "__main__"}
    exec(compile(source, str(SEEDS / name), "exec"), namespace)
    return namespace


FULL_SIZE_RESHAPES = {"reshape((60000,": "reshape((-1,", "reshape((10000,": "reshape((-1,"}


def test_seed002_tf1_perceptron_or(capsys):
    ns = run_seed("s002_tf1_perceptron_or.py")
    out = capsys.readouterr().out
    losses = [float(line.split("--loss--")[1]) for line in out.splitlines() if line.startswith("Epoch--")]
    assert len(losses) == 100 and losses[-1] == pytest.approx(float(ns["cost"]))
    # gradient descent on this loss never goes uphill; how far it gets depends on the random
    # start (the page's TF run began at 2.07; a ReLU that starts dead on an input stays dead)
    assert all(b <= a + 1e-6 for a, b in zip(losses, losses[1:])) and losses[-1] < losses[0]


def test_tf1_perceptron_learns_the_or_gate_from_a_live_start():
    tf = tf1
    tf.reset_default_graph()
    w = tf.Variable([[0.1], [0.2], [0.3]])
    x = tf.placeholder(tf.float32, [None, 3])
    y = tf.placeholder(tf.float32, [None, 1])
    output = tf.nn.relu(tf.matmul(x, w))
    loss = tf.reduce_sum(tf.square(output - y))
    train = tf.train.GradientDescentOptimizer(0.1).minimize(loss)
    inputs, targets = [[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]], [[0], [1], [1], [1]]
    with tf.Session() as sess:
        sess.run(tf.global_variables_initializer())
        for _ in range(200):
            sess.run(train, {x: inputs, y: targets})
        assert loss.eval({x: inputs, y: targets}) < 0.3
        assert ((output.eval({x: inputs}) > 0.5) == np.array(targets, bool)).all()


def test_seed002_tf1_mlp_with_plots(mnist_subset, capsys):
    mnist_subset(1200, 500)
    ns = run_seed("s002_tf1_mlp_plots.py")
    out = capsys.readouterr().out
    assert "Optimization Finished!" in out and out.count("Epoch:") == 15
    assert ns["mnist"].train.num_examples == 1100          # the first 100 became the validation set
    costs, accuracies = ns["cost_history"], ns["accuracy_history"]
    assert costs[-1] < costs[0] / 3
    assert accuracies[-1] > 0.6 and accuracies[-1] > accuracies[0]
    final = float(out.strip().splitlines()[-1].split("Accuracy:")[1])
    assert final == pytest.approx(float(accuracies[-1]))


def test_seed001_torch_mlp(mnist_subset, capsys):
    mnist_subset(1500, 500)
    # the seed never defines its loaders and feeds (N, 1, 28, 28) images to Linear(784): add both
    edits = {"# 构建模型\n": "from deepkern.torch.utils.data import DataLoader\n"
                          "train_loader = DataLoader(train_dataset, batch_size=64, shuffle=True)\n"
                          "test_loader = DataLoader(test_dataset, batch_size=1000)\n",
             "output = model(data)": "output = model(data.view(data.size(0), -1))"}
    ns = run_seed("s001_torch_mlp.py", edits)
    out = capsys.readouterr().out
    losses = [float(line.rsplit("Loss: ", 1)[1]) for line in out.splitlines() if line.startswith("Train Epoch")]
    assert len(losses) == 10 and losses[-1] < losses[0] / 3
    assert ns["total"] == 500 and ns["correct"] / ns["total"] > 0.8


def test_seed000_keras_cnn_summary(capsys):
    run_seed("s000_keras_cnn_summary.py")
    out = capsys.readouterr().out
    # Keras's count: convolutions 896 + 18,496 + 2 * 36,928, dense 7*7*64*64+64 + 130
    assert "Total params: 294,146" in out


def test_seed000_keras_cnn_mnist(mnist_subset, capsys):
    mnist_subset(600, 300)
    ns = run_seed("s000_keras_cnn_mnist.py", FULL_SIZE_RESHAPES)
    assert len(ns["history"].history["loss"]) == 10
    assert ns["test_acc"] > 0.7


@pytest.mark.parametrize("name", ["s000_keras_mlp_input100.py", "s000_keras_grid_search.py"])
def test_seed000_input_shape_mismatch_fails_clearly(name, mnist_subset):
    # these programs declare input_shape=(100,) and then fit 784-pixel images: Keras refuses
    # them too, so the test asks for the same refusal with a message naming both sizes
    mnist_subset(300, 100)
    with pytest.raises(ValueError, match=r"(?s)100.*784|784.*100"):
        run_seed(name, FULL_SIZE_RESHAPES)
