"""The seed's deep neural network for MNIST with its loss and accuracy plots, on deepkern.

The tutorial (TensorFlow 1) builds a 784-256-256-10 ReLU network from weight and bias
dictionaries drawn from a standard normal, trains it with Adam (learning rate 0.001) for 15
epochs of batches of 100 on softmax cross-entropy, records the average cost and the test
accuracy after every epoch, then plots both. Here the graph and session become deepkern
tensors with autograd; ``mnist.train.next_batch`` becomes ``dk.data.BatchIterator``; the
plots are written to PNG files instead of shown.

    python examples/mlp_loss_accuracy_plots.py [--quick] [--outdir DIR]
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import matplotlib

matplotlib.use("Agg")  # write files; no display needed
import matplotlib.pyplot as plt  # noqa: E402
import numpy as np  # noqa: E402

import deepkern as dk  # noqa: E402
from deepkern import data  # noqa: E402
from deepkern.nn import functional as F  # noqa: E402


def multilayer_perceptron(x, weights, biases):
    # Hidden layer with RELU activation
    layer_1 = (x @ weights['h1'] + biases['b1']).relu()
    # Hidden layer with RELU activation
    layer_2 = (layer_1 @ weights['h2'] + biases['b2']).relu()
    # Output layer with linear activation
    out_layer = layer_2 @ weights['out'] + biases['out']
    return out_layer


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("DEEPKERN_QUICK") == "1",
                        help="2 epochs on 1,000 images (also: DEEPKERN_QUICK=1)")
    parser.add_argument("--outdir", default=".", help="where to write cost.png and accuracy.png")
    args = parser.parse_args(argv)

    # MNIST: the full set from $DEEPKERN_MNIST_DIR, else the embedded 5,000-digit sample
    if data.mnist_dir() is not None:
        x_train, y_train, x_test, y_test = data.load_mnist(flatten=True)
    else:
        x_train, y_train, x_test, y_test = data.load_mnist5k(seed=0, flatten=True)

    # Parameters
    learning_rate = 0.001
    training_epochs = 2 if args.quick else 15
    batch_size = 100
    display_step = 1
    if args.quick:
        x_train, y_train = x_train[:1000], y_train[:1000]

    # Network Parameters
    n_hidden_1 = 256  # 1st layer number of features
    n_hidden_2 = 256  # 2nd layer number of features
    n_input = 784  # MNIST data input (img shape: 28*28)
    n_classes = 10  # MNIST total classes (0-9 digits)

    # Store layers weight & bias (tf.random_normal: standard normal)
    rng = np.random.default_rng(0)

    def random_normal(*shape):
        return dk.Tensor(rng.standard_normal(shape), requires_grad=True)
    weights = {
        'h1': random_normal(n_input, n_hidden_1),
        'h2': random_normal(n_hidden_1, n_hidden_2),
        'out': random_normal(n_hidden_2, n_classes)
    }
    biases = {
        'b1': random_normal(n_hidden_1),
        'b2': random_normal(n_hidden_2),
        'out': random_normal(n_classes)
    }

    # Loss (fused softmax cross-entropy on the logits) and optimizer
    optimizer = dk.optim.Adam(list(weights.values()) + list(biases.values()), lr=learning_rate)
    batches = data.BatchIterator(x_train, y_train, batch_size=batch_size, shuffle=True, seed=0)

    # lists for the cost history and accuracy history
    cost_history = []
    accuracy_history = []

    # Training cycle
    for epoch in range(training_epochs):
        avg_cost = 0.
        total_batch = len(batches)
        # Loop over all batches
        for batch_x, batch_y in batches:
            optimizer.zero_grad()
            cost = F.cross_entropy(multilayer_perceptron(dk.Tensor(batch_x), weights, biases), batch_y)
            cost.backward()
            optimizer.step()
            # Compute average loss
            avg_cost += cost.item() / total_batch
        # Display logs per epoch step
        if epoch % display_step == 0:
            with dk.no_grad():
                pred = multilayer_perceptron(dk.Tensor(x_test), weights, biases)
            acu_temp = float(np.mean(pred.argmax(axis=1) == y_test))
            # append the accuracy and the cost to the lists
            accuracy_history.append(acu_temp)
            cost_history.append(avg_cost)
            print("Epoch:", '%04d' % (epoch + 1), "- cost=", "{:.9f}".format(avg_cost), "- Accuracy=", acu_temp)
    print("Optimization Finished!")

    # plot the cost history and the accuracy history (saved rather than shown)
    os.makedirs(args.outdir, exist_ok=True)
    for name, values in (("cost", cost_history), ("accuracy", accuracy_history)):
        plt.figure()
        plt.plot(values)
        plt.xlabel("epoch")
        plt.ylabel(name)
        path = os.path.join(args.outdir, f"{name}.png")
        plt.savefig(path)
        plt.close()
        print("wrote", path)

    # Test model
    with dk.no_grad():
        pred = multilayer_perceptron(dk.Tensor(x_test), weights, biases)
    print("Accuracy:", float(np.mean(pred.argmax(axis=1) == y_test)))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
