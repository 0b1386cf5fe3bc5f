"""``KerasClassifier``: a scikit-learn classifier around a function that builds a compiled model.

Keras's (pre-3) wrapper, on deepkern.keras::

    def create_model(optimizer="adam"):
        model = models.Sequential([...])
        model.compile(optimizer=optimizer, loss="sparse_categorical_crossentropy", metrics=["accuracy"])
        return model

    clf = KerasClassifier(build_fn=create_model, epochs=10, batch_size=128, verbose=0)
    grid = GridSearchCV(clf, {"optimizer": ["adam", "sgd"]}, cv=3).fit(x, y)

Keyword arguments (``sk_params``) go where they are named: arguments of ``build_fn`` to it,
arguments of ``Sequential.fit`` (``epochs``, ``batch_size``, ``verbose``, ...) to ``fit``, and
``batch_size`` also to ``predict``. They are the estimator's parameters for ``get_params`` /
``set_params``, so ``GridSearchCV`` can search model and fit settings alike. Labels may be any
sortable values; they are mapped to class indices (one-hot for categorical_crossentropy).
"""
from __future__ import annotations

import inspect
from typing import Any, Callable, Dict, Optional

import numpy as np
from sklearn.base import BaseEstimator, ClassifierMixin

from .. import losses as _losses
from ..models import Sequential
from ..utils import to_categorical

__all__ = ["KerasClassifier"]

_FIT_ARGS = set(inspect.signature(Sequential.fit).parameters) - {"self", "x", "y"}
_PREDICT_ARGS = {"batch_size"}


def _accepted(fn: Callable[..., Any]) -> set:
    params = inspect.signature(fn).parameters
    if any(p.kind is inspect.Parameter.VAR_KEYWORD for p in params.values()):
        return {"*"}
    return set(params)


class KerasClassifier(ClassifierMixin, BaseEstimator):
    """scikit-learn classifier over ``build_fn() -> compiled Sequential`` (see the module docs).

    Attributes after ``fit``: ``model`` (the trained Sequential), ``classes_``, ``history_``,
    ``n_features_in_``.
    """

    def __init__(self, build_fn: Optional[Callable[..., Sequential]] = None, **sk_params: Any) -> None:
        self.build_fn = build_fn
        self.sk_params = sk_params

    # scikit-learn's parameter protocol, with sk_params flattened in (as Keras's wrapper did)
    def get_params(self, deep: bool = True) -> Dict[str, Any]:
        return {"build_fn": self.build_fn, **self.sk_params}

    def set_params(self, **params: Any) -> "KerasClassifier":
        for key, value in params.items():
            if key == "build_fn":
                self.build_fn = value
            else:
                self.sk_params[key] = value
        return self

    def _check_params(self) -> set:
        if not callable(self.build_fn):
            raise ValueError(f"build_fn: expected a function returning a compiled model, got {self.build_fn!r}")
        build_args = _accepted(self.build_fn)
        unknown = [k for k in self.sk_params
                   if k not in _FIT_ARGS and k not in build_args and "*" not in build_args]
        if unknown:
            raise ValueError(f"{unknown} are not parameters of build_fn or of Sequential.fit")
        return build_args

    def _route(self, names: set, overrides: Optional[Dict[str, Any]] = None) -> Dict[str, Any]:
        args = {k: v for k, v in self.sk_params.items() if k in names or "*" in names}
        args.update(overrides or {})
        return args

    def fit(self, x: Any, y: Any, **kwargs: Any) -> "KerasClassifier":
        """Build a fresh model with ``build_fn`` and train it on ``(x, y)``; returns self."""
        build_args = self._check_params()
        x = np.asarray(x)
        y = np.asarray(y)
        if y.ndim == 2 and y.shape[1] > 1:  # one-hot given
            self.classes_ = np.arange(y.shape[1])
            indices = y.argmax(axis=1)
        elif y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1):
            self.classes_, indices = np.unique(y.reshape(-1), return_inverse=True)
        else:
            raise ValueError(f"y: expected labels (N,) or one-hot (N, classes), got shape {y.shape}")
        model = self.build_fn(**self._route(build_args - _FIT_ARGS if "*" not in build_args else {"*"}))
        if not isinstance(model, Sequential):
            raise TypeError(f"build_fn must return a deepkern.keras Sequential, got {type(model).__name__}")
        if not model.compiled:
            raise ValueError("build_fn must return a compiled model (call model.compile in it)")
        targets: Any = indices
        if isinstance(model.loss, _losses.CategoricalCrossentropy):
            targets = to_categorical(indices, num_classes=len(self.classes_))
        fit_args = self._route(_FIT_ARGS, kwargs)
        self.history_ = model.fit(x, targets, **fit_args)
        self.model = model
        self.n_features_in_ = x.shape[1] if x.ndim == 2 else None
        return self

    def _fitted_model(self) -> Sequential:
        model = getattr(self, "model", None)
        if model is None:
            from sklearn.exceptions import NotFittedError
            raise NotFittedError("this KerasClassifier is not fitted yet; call fit first")
        return model

    def predict_proba(self, x: Any, **kwargs: Any) -> np.ndarray:
        """Class probabilities ``(N, n_classes)`` (a single sigmoid output gives two columns)."""
        out = self._fitted_model().predict(np.asarray(x), **self._route(_PREDICT_ARGS, kwargs))
        if out.ndim == 2 and out.shape[1] == 1:
            out = np.hstack([1.0 - out, out])
        return out

    def predict(self, x: Any, **kwargs: Any) -> np.ndarray:
        """The most probable class label for each sample."""
        return self.classes_[self.predict_proba(x, **kwargs).argmax(axis=1)]
