"""A scikit-learn classifier over deepkern networks, for pipelines, GridSearchCV and cross_val_score.

    from sklearn.model_selection import GridSearchCV
    clf = dk.sklearn.DeepkernClassifier(model="mlp", hidden=(256, 256), epochs=10)
    GridSearchCV(clf, {"lr": [1e-3, 3e-3], "hidden": [(128,), (256, 256)]}, cv=3, n_jobs=2).fit(X, y)

``fit`` builds a fresh network (``dk.models.MLP``, ``dk.models.CNN`` or your own), trains it
with ``dk.train.fit`` and keeps it as ``model_``. Runs are reproducible: ``seed`` fixes the
initial weights, dropout masks and shuffling, without disturbing deepkern's global generator.

Parallel search: ``n_jobs=2`` works as usual. scikit-learn's default joblib backend (loky)
starts fresh worker processes and limits their threads (OMP_NUM_THREADS, which deepkern's
kernels honour); a fork-based backend works too, since the kernels' thread pool restarts in a
forked child.
"""
from __future__ import annotations

import contextlib
import math
from typing import Any, Callable, Iterator, Optional, Sequence, Tuple, Union

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin
from sklearn.utils.multiclass import check_classification_targets
from sklearn.utils.validation import check_is_fitted, validate_data

from . import models, nn, train
from .nn.init import get_generator

__all__ = ["DeepkernClassifier"]

ModelSpec = Union[str, Callable[[int, int], nn.Module]]


@contextlib.contextmanager
def _seeded_global_generator(seed: int) -> Iterator[None]:
    """Run with deepkern's global generator (weights, dropout) in a seeded state, then put
    its previous state back, so fitting an estimator does not change anyone else's stream."""
    generator = get_generator()
    saved = generator.bit_generator.state
    generator.bit_generator.state = np.random.default_rng(seed).bit_generator.state
    try:
        yield
    finally:
        generator.bit_generator.state = saved


class DeepkernClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn classifier training a deepkern network.

    Args:
        model: ``"mlp"`` (``dk.models.MLP`` over the features), ``"cnn"`` (``dk.models.CNN``;
            rows are images, see ``image_shape``) or a callable
            ``(n_features, n_classes) -> dk.nn.Module`` returning logits.
        hidden: hidden layer sizes of the MLP.
        epochs, batch_size: passes over the data and samples per step.
        lr: learning rate (None: the optimizer's default, 1e-3 for Adam/RMSprop, 1e-2 for SGD).
        optimizer: ``"adam"``, ``"sgd"`` or ``"rmsprop"``.
        dropout: dropout after each hidden layer of the MLP.
        image_shape: ``(channels, height, width)`` of each row for ``model="cnn"``; None means
            one channel and a square image (``n_features`` must be a perfect square).
        seed: seeds initial weights, dropout and shuffling (same seed, same model).
        verbose: print one line per epoch.

    Attributes after ``fit``: ``model_``, ``classes_``, ``n_features_in_``, ``history_``.
    """

    def __init__(self, model: ModelSpec = "mlp", hidden: Sequence[int] = (256, 256), epochs: int = 10,
                 batch_size: int = 32, lr: Optional[float] = None, optimizer: str = "adam",
                 dropout: float = 0.0, image_shape: Optional[Tuple[int, int, int]] = None,
                 seed: int = 0, verbose: bool = False) -> None:
        self.model = model
        self.hidden = hidden
        self.epochs = epochs
        self.batch_size = batch_size
        self.lr = lr
        self.optimizer = optimizer
        self.dropout = dropout
        self.image_shape = image_shape
        self.seed = seed
        self.verbose = verbose

    # ------------------------------------------------------------------------ building
    def _image_shape(self, n_features: int) -> Tuple[int, int, int]:
        if self.image_shape is not None:
            shape = tuple(int(v) for v in self.image_shape)
            if len(shape) != 3 or math.prod(shape) != n_features:
                raise ValueError(f"image_shape: {self.image_shape!r} does not hold {n_features} features "
                                 f"as (channels, height, width)")
            return shape  # type: ignore[return-value]
        side = math.isqrt(n_features)
        if side * side != n_features:
            raise ValueError(f"model='cnn' needs image_shape=(channels, height, width): {n_features} "
                             f"features are not a square single-channel image")
        return (1, side, side)

    def _build(self, n_features: int, n_classes: int) -> nn.Module:
        if callable(self.model):
            net = self.model(n_features, n_classes)
            if not isinstance(net, nn.Module):
                raise TypeError(f"model: the callable must return a dk.nn.Module, got {type(net).__name__}")
            return net
        if self.model == "mlp":
            hidden = (self.hidden,) if isinstance(self.hidden, (int, np.integer)) else tuple(self.hidden)
            return models.MLP(n_features, hidden, n_classes, dropout=self.dropout)
        if self.model == "cnn":
            channels, height, width = self._image_shape(n_features)
            return models.CNN(in_channels=channels, num_classes=n_classes, image_size=(height, width))
        raise ValueError(f"model: expected 'mlp', 'cnn' or a callable (n_features, n_classes) -> Module, "
                         f"got {self.model!r}")

    def _inputs(self, X: np.ndarray) -> np.ndarray:
        X = np.ascontiguousarray(X, dtype=np.float32)
        if self.model == "cnn":
            X = X.reshape((len(X),) + self._image_shape(X.shape[1]))
        return X

    # ------------------------------------------------------------------------ estimator API
    def fit(self, X: Any, y: Any) -> "DeepkernClassifier":
        """Train a fresh network on ``(X, y)``; returns self."""
        X, y = validate_data(self, X, y, dtype=(np.float32, np.float64))
        check_classification_targets(y)
        self.classes_, indices = np.unique(y, return_inverse=True)
        if len(self.classes_) < 2:
            raise ValueError(f"DeepkernClassifier needs samples of at least 2 classes; got 1 class "
                             f"({self.classes_[0]!r})")
        if isinstance(self.seed, bool) or not isinstance(self.seed, (int, np.integer)) or self.seed < 0:
            raise ValueError(f"seed: expected an int >= 0, got {self.seed!r}")
        callbacks = [train.EpochLogger()] if self.verbose else []
        with _seeded_global_generator(int(self.seed)):
            net = self._build(X.shape[1], len(self.classes_))
            self.history_ = train.fit(net, self._inputs(X), indices.astype(np.int64), epochs=self.epochs,
                                      batch_size=self.batch_size, optimizer=self.optimizer, lr=self.lr,
                                      loss="cross_entropy", seed=int(self.seed), progress=False,
                                      callbacks=callbacks)
        self.model_ = net
        return self

    def predict_proba(self, X: Any) -> np.ndarray:
        """Class probabilities ``(N, n_classes)``, columns in the order of ``classes_``."""
        check_is_fitted(self, "model_")
        X = validate_data(self, X, dtype=(np.float32, np.float64), reset=False)
        proba = train.predict(self.model_, self._inputs(X), proba=True).astype(np.float64)
        return proba / proba.sum(axis=1, keepdims=True)  # exact unit rows in float64

    def predict(self, X: Any) -> np.ndarray:
        """The most probable class label of each row."""
        check_is_fitted(self, "model_")
        return self.classes_[self.predict_proba(X).argmax(axis=1)]

    def __sklearn_tags__(self) -> Any:
        tags = super().__sklearn_tags__()
        tags.non_deterministic = False  # seeded: the same seed gives the same model
        return tags
