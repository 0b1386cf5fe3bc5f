"""The seed's perceptron for the OR gate, on deepkern's autograd (the seed used TensorFlow 1).

Same recipe as the tutorial: inputs with a constant 1 appended (the bias), a 3x1 weight drawn
from a seeded normal, ``relu(x @ w)``, the summed squared error, plain gradient descent with
learning rate 0.01, 100 epochs. ``tf.Variable`` becomes a ``dk.Tensor(requires_grad=True)``,
``GradientDescentOptimizer`` becomes ``dk.optim.SGD``; there is no session.

    python examples/perceptron_or.py [--quick] [--epochs N]

(``dk.models.Perceptron`` is the library's version: a sigmoid neuron, which cannot start "dead"
the way a ReLU neuron whose weighted sums are all negative can.)
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import numpy as np

import deepkern as dk


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("DEEPKERN_QUICK") == "1",
                        help="print every 10th epoch only (also: DEEPKERN_QUICK=1)")
    parser.add_argument("--epochs", type=int, default=100)
    parser.add_argument("--seed", type=int, default=7,
                        help="seed of the initial weights (default 7: loss 2.57 -> 0.25, like the tutorial's "
                             "2.07 -> 0.27; with about a third of seeds every weighted sum starts negative, "
                             "the ReLU passes no gradient and the loss stays at 3)")
    args = parser.parse_args(argv)

    # Step 2: inputs (the last column is the bias input) and outputs of the OR gate
    train_in = [[0, 0, 1], [0, 1, 1], [1, 0, 1], [1, 1, 1]]
    train_out = [[0], [1], [1], [1]]
    # Step 3: the 3x1 weights, from a seeded normal (the seed: tf.random_normal([3, 1], seed=15))
    w = dk.Tensor(np.random.default_rng(args.seed).standard_normal((3, 1)), requires_grad=True)
    # Step 4: no placeholders needed; the data are tensors
    x = dk.Tensor(train_in)
    y = dk.Tensor(train_out)
    # Step 7: gradient descent on the weights
    optimizer = dk.optim.SGD([w], lr=0.01)

    # Steps 5, 6 and 9: output, cost and training
    for i in range(args.epochs):
        optimizer.zero_grad()
        output = (x @ w).relu()                 # tf.nn.relu(tf.matmul(x, w))
        loss = ((output - y) ** 2).sum()        # tf.reduce_sum(tf.square(output - y))
        loss.backward()
        optimizer.step()
        with dk.no_grad():                      # the seed prints the cost after the step
            cost = float((((x @ w).relu() - y) ** 2).sum().item())
        if not args.quick or i % 10 == 0 or i == args.epochs - 1:
            print("Epoch--", i, "--loss--", round(cost, 6))

    # Step 10: the trained gate
    with dk.no_grad():
        outputs = (x @ w).relu().numpy()[:, 0]
    for inputs, out, target in zip(train_in, outputs, train_out):
        print(f"OR({inputs[0]}, {inputs[1]}) -> {out:.3f} (rounds to {int(out >= 0.5)}, expected {target[0]})")
    correct = int(np.sum((outputs >= 0.5) == (np.array(train_out)[:, 0] == 1)))
    print(f"correct: {correct}/4")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
