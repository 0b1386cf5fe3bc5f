"""scikit-learn integration: DeepkernClassifier passes the estimator checks; GridSearchCV and
cross_val_score work (also with n_jobs=2 on loky's fresh processes); KerasClassifier runs the
seed's grid search."""
from __future__ import annotations

import numpy as np
import pytest
from sklearn.base import clone
from sklearn.model_selection import GridSearchCV, cross_val_score
from sklearn.pipeline import make_pipeline
from sklearn.preprocessing import StandardScaler
from sklearn.utils.estimator_checks import parametrize_with_checks

import deepkern as dk
from deepkern import data
from deepkern.keras import layers, models
from deepkern.keras.wrappers.scikit_learn import KerasClassifier
from deepkern.sklearn import DeepkernClassifier


@pytest.fixture(scope="module")
def digits():
    x_train, y_train, _, _ = data.load_digits(seed=0, flatten=True)
    return x_train[:600], y_train[:600]


# Small and quick, but enough to pass the checks' accuracy bars on their blob problems.
@parametrize_with_checks([DeepkernClassifier(hidden=(32,), epochs=20, lr=1e-2)])
def test_sklearn_estimator_checks(estimator, check):
    check(estimator)


def test_grid_search_and_cross_val_score_in_two_processes(digits):
    x, y = digits
    grid = GridSearchCV(DeepkernClassifier(epochs=4, batch_size=32),
                        {"hidden": [(16,), (64,)], "lr": [3e-3, 1e-2]}, cv=2, n_jobs=2)
    grid.fit(x, y)
    assert set(grid.best_params_) == {"hidden", "lr"}
    assert grid.best_score_ > 0.85
    assert grid.score(x, y) > 0.9
    scores = cross_val_score(DeepkernClassifier(hidden=(32,), epochs=4, lr=1e-2), x, y, cv=3, n_jobs=2)
    assert scores.shape == (3,) and scores.min() > 0.8


def test_fit_is_seeded_and_leaves_the_global_generator_alone(digits):
    x, y = digits
    state = dk.nn.init.get_generator().bit_generator.state
    a = DeepkernClassifier(hidden=(16,), epochs=2, seed=4).fit(x, y).predict_proba(x)
    b = DeepkernClassifier(hidden=(16,), epochs=2, seed=4).fit(x, y).predict_proba(x)
    c = DeepkernClassifier(hidden=(16,), epochs=2, seed=5).fit(x, y).predict_proba(x)
    np.testing.assert_array_equal(a, b)
    assert not np.allclose(a, c)
    assert dk.nn.init.get_generator().bit_generator.state == state


def test_cnn_callable_models_and_pipelines():
    x_train, y_train, _, _ = data.load_mnist5k(seed=0, flatten=True)
    x, y = x_train[:200], y_train[:200]
    cnn = DeepkernClassifier(model="cnn", epochs=1, batch_size=50).fit(x, y)
    assert cnn.predict(x[:5]).shape == (5,) and cnn.model_.num_parameters() == 121_930
    with pytest.raises(ValueError, match="image_shape"):
        DeepkernClassifier(model="cnn", image_shape=(1, 20, 20)).fit(x, y)

    def tiny(n_features, n_classes):
        return dk.nn.Sequential(dk.nn.Linear(n_features, n_classes))
    labels = np.array(["even", "odd"])[y % 2]
    pipe = make_pipeline(StandardScaler(), DeepkernClassifier(model=tiny, epochs=3)).fit(x, labels)
    assert set(pipe.predict(x)) <= {"even", "odd"}
    with pytest.raises(ValueError, match="model"):
        DeepkernClassifier(model="rnn").fit(x, y)


def create_model(optimizer="adam", units=32):
    """The seed's create_model, sized for the 8x8 digits."""
    model = models.Sequential([
        layers.Dense(units, activation="relu", input_shape=(64,)),
        layers.Dense(units, activation="relu"),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def create_onehot_model():
    model = models.Sequential([layers.Dense(10, activation="softmax", input_shape=(64,))])
    model.compile(optimizer="adam", loss="categorical_crossentropy", metrics=["accuracy"])
    return model


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_keras_classifier_grid_search_like_the_seed(digits, n_jobs):
    x, y = digits
    model = KerasClassifier(build_fn=create_model, epochs=10, batch_size=16, verbose=0)
    param_grid = {"optimizer": ["adam", "sgd"], "epochs": [1, 10]}
    grid = GridSearchCV(estimator=model, param_grid=param_grid, cv=3, n_jobs=n_jobs)
    grid_result = grid.fit(x, y)
    assert grid_result.best_params_ == {"optimizer": "adam", "epochs": 10}
    assert grid_result.best_score_ > 0.8
    assert len(grid_result.cv_results_["mean_test_score"]) == 4


def test_keras_classifier_labels_probabilities_and_params(digits):
    x, y = digits
    names = np.array(list("abcdefghij"))[y]
    clf = KerasClassifier(build_fn=create_model, units=16, epochs=10, batch_size=16, verbose=0)
    assert clf.get_params() == {"build_fn": create_model, "units": 16, "epochs": 10, "batch_size": 16,
                                "verbose": 0}
    assert clone(clf).get_params() == clf.get_params()
    clf.fit(x, names)
    assert clf.model.layers[0].units == 16
    proba = clf.predict_proba(x[:7])
    assert proba.shape == (7, 10)
    np.testing.assert_allclose(proba.sum(1), 1.0, rtol=1e-5)
    assert set(clf.predict(x)) <= set("abcdefghij") and clf.score(x, names) > 0.8
    onehot = KerasClassifier(build_fn=create_onehot_model, epochs=10, batch_size=16, verbose=0).fit(x, y)
    assert onehot.score(x, y) > 0.8
    with pytest.raises(ValueError, match="not parameters"):
        KerasClassifier(build_fn=create_model, dropout=0.5).fit(x, y)
