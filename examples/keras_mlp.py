"""The seed's Keras training example (a dense network on MNIST), on deepkern.keras.

As the seed writes it, imports changed; the first layer takes the 784 pixels the data have
(the seed's ``input_shape=(100,)`` does not match its own 28 * 28 reshape).

    python examples/keras_mlp.py [--quick]
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

import deepkern as dk
from deepkern.keras import layers, models
import deepkern.keras as keras


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("DEEPKERN_QUICK") == "1",
                        help="2 epochs (also: DEEPKERN_QUICK=1)")
    args = parser.parse_args(argv)
    dk.manual_seed(0)

    # A simple neural network model
    model = models.Sequential([
        layers.Dense(64, activation='relu', input_shape=(784,)),
        layers.Dense(64, activation='relu'),
        layers.Dense(10, activation='softmax')
    ])

    # Compile
    model.compile(optimizer='adam',
                  loss='sparse_categorical_crossentropy',
                  metrics=['accuracy'])

    # Load the data
    (x_train, y_train), (x_test, y_test) = keras.datasets.mnist.load_data()
    x_train = x_train.reshape((-1, 28 * 28)).astype('float32') / 255
    x_test = x_test.reshape((-1, 28 * 28)).astype('float32') / 255

    # Train
    history = model.fit(x_train, y_train, epochs=2 if args.quick else 10, batch_size=128,
                        validation_split=0.2, verbose=2)

    # Evaluate
    test_loss, test_acc = model.evaluate(x_test, y_test, verbose=0)
    print("Test accuracy:", test_acc)
    print("history keys:", list(history.history))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
