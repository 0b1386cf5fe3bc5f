"""Keras metrics: ``compile(metrics=[...])`` by name or instance, accumulated over an epoch.

    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy",
                  metrics=["accuracy", "sparse_top_k_categorical_accuracy",
                           metrics.Precision(), metrics.Recall()])

Each metric keeps running counts (``update_state(y_true, y_pred)``) and reports ``result()``;
``fit`` resets them every epoch and logs them under their ``name`` (and ``val_<name>``).
``y_pred`` is what ``predict`` returns (probabilities after a softmax/sigmoid output);
``y_true`` is either class indices ``(N,)`` or targets shaped like ``y_pred`` -- every metric
here accepts both, so one-hot targets and sparse labels give the same numbers.

``"accuracy"`` (or ``"acc"``) picks the accuracy that fits the loss, as Keras does: sparse
categorical for the cross-entropies, binary for ``binary_crossentropy`` and for a single
output unit, categorical otherwise. ``Precision``/``Recall`` are Keras's binary metrics at a
0.5 threshold over every output (class labels count as one-hot rows). Metrics are computed
without sample weights (Keras's ``metrics``, not ``weighted_metrics``).
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Union

import numpy as np

__all__ = ["Metric", "Accuracy", "BinaryAccuracy", "CategoricalAccuracy", "SparseCategoricalAccuracy",
           "TopKCategoricalAccuracy", "SparseTopKCategoricalAccuracy", "Precision", "Recall", "get",
           "clone", "name_of", "resolve", "serialize", "NAMES"]


def _class_indices(y_true: np.ndarray) -> np.ndarray:
    """Labels (N,) as given, or the argmax of one-hot rows (N, C)."""
    y_true = np.asarray(y_true)
    if y_true.ndim == 2 and y_true.shape[1] > 1:
        return y_true.argmax(axis=1)
    return y_true.reshape(-1).astype(np.int64)


def _like_prediction(y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
    """Targets shaped like the predictions: class labels become one-hot rows."""
    y_true = np.asarray(y_true)
    if y_true.ndim == 1 and y_pred.ndim == 2 and y_pred.shape[1] > 1:
        rows = np.zeros(y_pred.shape, np.float32)
        rows[np.arange(len(y_true)), y_true.astype(np.int64)] = 1.0
        return rows
    return y_true.reshape(y_pred.shape)


class Metric:
    """Base class: a named running value. Subclasses set ``count``/``total`` in ``update_state``."""

    default_name = "metric"

    def __init__(self, name: Optional[str] = None) -> None:
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name: expected a non-empty str, got {name!r}")
        self.name = name or self.default_name
        self.reset_state()

    def reset_state(self) -> None:
        self.total = 0.0
        self.count = 0

    def update_state(self, y_true: Any, y_pred: Any) -> None:
        hits = self._hits(np.asarray(y_true), np.asarray(y_pred))
        self.total += float(hits.sum())
        self.count += int(hits.size)

    def _hits(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        raise NotImplementedError(f"{type(self).__name__} must implement _hits or update_state")

    def result(self) -> float:
        """The value so far (0.0 before any update, as Keras reports it)."""
        return self.total / self.count if self.count else 0.0

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(name={self.name!r})"


class SparseCategoricalAccuracy(Metric):
    """How often the highest-scoring class is the label."""

    default_name = "sparse_categorical_accuracy"

    def _hits(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return y_pred.argmax(axis=-1) == _class_indices(y_true)


class CategoricalAccuracy(SparseCategoricalAccuracy):
    """How often the highest-scoring class is the one-hot target's class."""

    default_name = "categorical_accuracy"


class Accuracy(Metric):
    """Exact equality of predictions and targets (Keras's ``Accuracy`` class; the string
    ``"accuracy"`` picks a better-suited accuracy, see the module notes)."""

    default_name = "accuracy"

    def _hits(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return y_pred == _like_prediction(y_true, y_pred)


class BinaryAccuracy(Metric):
    """How often ``y_pred > threshold`` agrees with a 0/1 target, over every output."""

    default_name = "binary_accuracy"

    def __init__(self, name: Optional[str] = None, threshold: float = 0.5) -> None:
        super().__init__(name)
        self.threshold = float(threshold)

    def _hits(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        return (y_pred > self.threshold) == (_like_prediction(y_true, y_pred) > 0.5)

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "threshold": self.threshold}


class SparseTopKCategoricalAccuracy(Metric):
    """How often the label is among the ``k`` highest-scoring classes."""

    default_name = "sparse_top_k_categorical_accuracy"

    def __init__(self, k: int = 5, name: Optional[str] = None) -> None:
        if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 1:
            raise ValueError(f"k: expected an int >= 1, got {k!r}")
        super().__init__(name)
        self.k = int(k)

    def _hits(self, y_true: np.ndarray, y_pred: np.ndarray) -> np.ndarray:
        labels = _class_indices(y_true)
        target_score = y_pred[np.arange(len(labels)), labels]
        # classes scoring strictly higher than the label's; ties count in the label's favour
        return (y_pred > target_score[:, None]).sum(axis=1) < self.k

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "k": self.k}


class TopKCategoricalAccuracy(SparseTopKCategoricalAccuracy):
    """How often the one-hot target's class is among the ``k`` highest-scoring classes."""

    default_name = "top_k_categorical_accuracy"


class _Confusion(Metric):
    """Counts of true positives, false positives and false negatives at a threshold."""

    def __init__(self, name: Optional[str] = None, thresholds: float = 0.5) -> None:
        self.thresholds = float(thresholds)
        super().__init__(name)

    def reset_state(self) -> None:
        self.tp = self.fp = self.fn = 0

    def update_state(self, y_true: Any, y_pred: Any) -> None:
        y_pred = np.asarray(y_pred)
        actual = _like_prediction(np.asarray(y_true), y_pred) > 0.5
        predicted = y_pred > self.thresholds
        self.tp += int(np.count_nonzero(predicted & actual))
        self.fp += int(np.count_nonzero(predicted & ~actual))
        self.fn += int(np.count_nonzero(~predicted & actual))

    def get_config(self) -> Dict[str, Any]:
        return {"name": self.name, "thresholds": self.thresholds}


class Precision(_Confusion):
    """tp / (tp + fp): of the outputs predicted positive, the share that are."""

    default_name = "precision"

    def result(self) -> float:
        return self.tp / (self.tp + self.fp) if self.tp + self.fp else 0.0


class Recall(_Confusion):
    """tp / (tp + fn): of the positive targets, the share predicted positive."""

    default_name = "recall"

    def result(self) -> float:
        return self.tp / (self.tp + self.fn) if self.tp + self.fn else 0.0


_BY_NAME = {
    "sparse_categorical_accuracy": SparseCategoricalAccuracy,
    "categorical_accuracy": CategoricalAccuracy,
    "binary_accuracy": BinaryAccuracy,
    "top_k_categorical_accuracy": TopKCategoricalAccuracy,
    "sparse_top_k_categorical_accuracy": SparseTopKCategoricalAccuracy,
    "precision": Precision,
    "recall": Recall,
}
_CLASSES = {cls.__name__: cls for cls in (Accuracy, *_BY_NAME.values())}
_ACCURACY_NAMES = ("accuracy", "acc")
#: The metric names ``compile`` accepts.
NAMES = _ACCURACY_NAMES + tuple(_BY_NAME)

Identifier = Union[str, Metric, Dict[str, Any]]


def name_of(identifier: Identifier) -> str:
    """The log key of a metric (checked): its string, or the instance's ``name``."""
    if isinstance(identifier, Metric):
        return identifier.name
    if isinstance(identifier, dict) and identifier.get("class_name") in _CLASSES:
        return identifier.get("config", {}).get("name") or _CLASSES[identifier["class_name"]].default_name
    if isinstance(identifier, str) and identifier.lower() in NAMES:
        return identifier
    raise ValueError(f"metrics: expected names from {', '.join(NAMES)} or deepkern.keras.metrics instances, "
                     f"got {identifier!r}")


def get(identifier: Identifier, loss_name: str = "", units: int = 0) -> Metric:
    """A fresh metric for ``identifier``; ``"accuracy"`` is chosen from the loss and output units."""
    if isinstance(identifier, Metric):
        return identifier
    if isinstance(identifier, dict):
        name_of(identifier)
        return _CLASSES[identifier["class_name"]](**identifier.get("config", {}))
    key = name_of(identifier).lower()
    if key in _ACCURACY_NAMES:
        if loss_name in ("sparse_categorical_crossentropy", "categorical_crossentropy"):
            cls = SparseCategoricalAccuracy
        elif loss_name == "binary_crossentropy" or units == 1:
            cls = BinaryAccuracy
        else:
            cls = CategoricalAccuracy
        return cls(name=identifier)
    return _BY_NAME[key](name=identifier if identifier != key else None)


def clone(metric: Metric) -> Metric:
    """A fresh metric with the same settings (evaluation keeps its own counts)."""
    return type(metric)(**metric.get_config())


def resolve(identifiers: Sequence[Identifier], loss_name: str, units: int) -> List[Metric]:
    metrics = [get(identifier, loss_name, units) for identifier in identifiers]
    for metric in metrics:
        metric.reset_state()
    return metrics


def serialize(identifier: Identifier) -> Union[str, Dict[str, Any]]:
    """JSON-ready form for ``model.save`` (names stay names)."""
    if isinstance(identifier, Metric):
        return {"class_name": type(identifier).__name__, "config": identifier.get_config()}
    return identifier
