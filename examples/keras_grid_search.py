"""The seed's hyperparameter search: GridSearchCV over a KerasClassifier, on deepkern.keras.

Written as the seed writes it, with the imports changed. One fix: the seed's model declares
``input_shape=(100,)`` but feeds it MNIST rows of 28 * 28 = 784 pixels (Keras would refuse
that too), so the first layer here takes 784 inputs.

    python examples/keras_grid_search.py [--quick] [--n-jobs N]
"""
from __future__ import annotations

import argparse
import os
from typing import Optional, Sequence

from sklearn.model_selection import GridSearchCV

import deepkern as dk
from deepkern.keras import layers, models
from deepkern.keras.datasets import mnist
from deepkern.keras.wrappers.scikit_learn import KerasClassifier


# Create a simple neural network model
def create_model(optimizer='adam'):
    model = models.Sequential([
        layers.Dense(64, activation='relu', input_shape=(784,)),
        layers.Dense(64, activation='relu'),
        layers.Dense(10, activation='softmax')
    ])
    model.compile(optimizer=optimizer,
                  loss='sparse_categorical_crossentropy',
                  metrics=['accuracy'])
    return model


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", default=os.environ.get("DEEPKERN_QUICK") == "1",
                        help="2 epochs on 600 images (also: DEEPKERN_QUICK=1)")
    parser.add_argument("--n-jobs", type=int, default=1, help="parallel fits (loky processes)")
    args = parser.parse_args(argv)
    dk.manual_seed(0)

    # Wrap the model as a scikit-learn classifier
    model = KerasClassifier(build_fn=create_model, epochs=2 if args.quick else 10, batch_size=128, verbose=0)

    # The search space
    param_grid = {'optimizer': ['adam', 'sgd']}
    grid = GridSearchCV(estimator=model, param_grid=param_grid, cv=3, n_jobs=args.n_jobs)

    # Load the data
    (x_train, y_train), (x_test, y_test) = mnist.load_data()
    x_train = x_train.reshape((-1, 28 * 28)).astype('float32') / 255
    x_test = x_test.reshape((-1, 28 * 28)).astype('float32') / 255
    if args.quick:
        x_train, y_train = x_train[:600], y_train[:600]

    # Search
    grid_result = grid.fit(x_train, y_train)

    # Best parameters and their accuracy
    print("Best: %f using %s" % (grid_result.best_score_, grid_result.best_params_))
    for mean, std, params in zip(grid_result.cv_results_["mean_test_score"],
                                 grid_result.cv_results_["std_test_score"], grid_result.cv_results_["params"]):
        print("  %f (%f) with %r" % (mean, std, params))
    print("Test accuracy of the refitted best model: %f" % grid_result.score(x_test, y_test))
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
