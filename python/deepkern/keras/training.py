"""What ``Sequential.fit``/``evaluate`` add to ``dk.train``: Keras's targets, sample and class
weights, metrics, logs and console output.

``dk.train.fit`` runs the loop (batches, shuffling, validation split, optimizer steps). The
Keras model hands it targets *packed* with one weight per sample -- a float32 ``(N, k + 1)``
array whose last column is the weight, so shuffling and splitting keep each weight with its
sample -- and an :class:`Objective` as the loss: it unpacks them, computes Keras's weighted
loss on the fused kernels, and feeds the compiled metrics. :class:`KerasRun` is the one
callback ``dk.train.fit`` sees: it gives the user's callbacks Keras's logs (``loss``, the
metrics, ``val_*``) and prints a progress bar or one line per epoch.
"""
from __future__ import annotations

import sys
import time
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from .. import distributed as _distributed
from .. import nn, ops, train
from ..train.callbacks import _bar_size, _progress_enabled, progress_bar_class
from ..autograd import Tensor
from . import losses as _losses
from . import metrics as _metrics

__all__ = ["prepare_targets", "sample_weights", "pack", "Objective", "KerasRun", "Batches", "check_batch_size",
           "verbosity"]

_SPARSE = "sparse_categorical_crossentropy"
_CATEGORICAL = "categorical_crossentropy"


def check_batch_size(batch_size: Any) -> int:
    """Keras's default 32 for None; anything else must be an int >= 1 (0 is an error, not 32)."""
    if batch_size is None:
        return 32
    if isinstance(batch_size, (bool, np.bool_)) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
        raise ValueError(f"batch_size: expected an int >= 1 (or None for 32), got {batch_size!r}")
    return int(batch_size)


def verbosity(verbose: Union[int, str]) -> int:
    """Keras's verbose: 0, 1, 2 or "auto" (1)."""
    level = 1 if verbose == "auto" else verbose
    if isinstance(level, bool) or level not in (0, 1, 2):
        raise ValueError(f"verbose: expected 0, 1, 2 or 'auto', got {verbose!r}")
    return int(level)


class Batches:
    """A batch source for ``dk.train.fit`` over another one: converts the targets (Keras's to
    packed targets and weights) and, with ``steps``, takes that many batches per epoch from an
    endless iterator. A batch is ``(x, y)`` or ``(x, y, sample_weight)``."""

    def __init__(self, source: Any, convert: Any, steps: Optional[int]) -> None:
        self.source = source
        self.convert = convert
        self.steps = steps
        self.n = None if steps is not None else getattr(source, "n", None)
        self.batch_size = getattr(source, "batch_size", None)
        self._endless: Optional[Iterator[Any]] = None

    def __len__(self) -> int:
        return self.steps if self.steps is not None else len(self.source)

    def _pairs(self) -> Iterator[Any]:
        if self.steps is None:
            yield from self.source
            return
        if self._endless is None:
            # an object with __next__ (Keras-style flow, generator) continues where it stopped
            self._endless = self.source if hasattr(self.source, "__next__") else _cycle(self.source)
        for _ in range(self.steps):
            yield next(self._endless)

    def __iter__(self) -> Iterator[Tuple[Any, Any]]:
        for i, batch in enumerate(self._pairs()):
            if not (isinstance(batch, (tuple, list)) and len(batch) in (2, 3)):
                raise TypeError(f"x: batch {i} is not an (inputs, targets) pair; a generator for fit "
                                f"must yield (x_batch, y_batch) or (x_batch, y_batch, sample_weight)")
            weights = batch[2] if len(batch) == 3 else None
            yield batch[0], self.convert(batch[1], f"y batch {i}", weights)


def _cycle(iterable: Any) -> Iterator[Any]:
    while True:
        empty = True
        for item in iterable:
            empty = False
            yield item
        if empty:
            raise ValueError("x: the batch source yielded no batches")


# ------------------------------------------------------------------------------ targets
def _labels(y: np.ndarray, units: int, name: str) -> np.ndarray:
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric class labels, got dtype {y.dtype}")
    if y.dtype.kind == "f" and not (np.isfinite(y).all() and np.all(y == np.round(y))):
        raise TypeError(f"{name}: class labels must be whole numbers, got non-integer values")
    labels = y.astype(np.int64)
    if labels.size and (labels.min() < 0 or labels.max() >= units):
        raise ValueError(f"{name}: class labels must be in [0, {units}) for the {units}-unit output layer, "
                         f"got values from {labels.min()} to {labels.max()}")
    return labels


def prepare_targets(y: Any, loss: _losses.Loss, units: int, name: str) -> np.ndarray:
    """Targets checked against the loss: int64 labels (N,) for both cross-entropies (one-hot
    rows become their indices), float32 (N, units) for binary cross-entropy and MSE."""
    y = np.asarray(y.numpy() if isinstance(y, Tensor) else y)
    if y.ndim == 0:
        raise ValueError(f"{name}: expected one target per sample, got a scalar")
    if loss.name == _SPARSE:
        if y.ndim == 2 and y.shape[1] == 1:
            y = y[:, 0]  # (N, 1) labels, as Keras accepts them
        elif y.ndim == 2 and y.shape[1] == units and units > 1:
            raise ValueError(f"{name}: sparse_categorical_crossentropy takes class labels of shape (N,) or "
                             f"(N, 1), got shape {y.shape}, which looks one-hot; use "
                             f"loss='categorical_crossentropy' for one-hot targets, or pass y.argmax(axis=1)")
        if y.ndim != 1:
            raise ValueError(f"{name}: sparse_categorical_crossentropy takes class labels of shape (N,) "
                             f"or (N, 1), got shape {y.shape}")
        return _labels(y, units, name)
    if loss.name == _CATEGORICAL:
        if y.ndim == 1 or (y.ndim == 2 and y.shape[1] == 1 and units > 1):
            raise ValueError(f"{name}: categorical_crossentropy takes one-hot targets (N, {units}), got class "
                             f"labels of shape {y.shape}; use loss='sparse_categorical_crossentropy', or "
                             f"keras.utils.to_categorical(y, {units})")
        if y.ndim != 2 or y.shape[1] != units:
            raise ValueError(f"{name}: categorical_crossentropy takes one-hot targets (N, {units}), got "
                             f"shape {y.shape}")
        if not (np.all((y == 0) | (y == 1)) and np.all(y.sum(axis=1) == 1)):
            raise ValueError(f"{name}: categorical_crossentropy targets must be one-hot rows (a single 1 each)")
        return y.argmax(axis=1).astype(np.int64)
    if y.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric targets, got dtype {y.dtype}")
    targets = np.ascontiguousarray(y, dtype=np.float32).reshape(len(y), -1)
    if targets.shape[1] != units:
        raise ValueError(f"{name}: {loss.name} needs targets shaped like the outputs (N, {units}), "
                         f"got shape {y.shape}")
    if not np.isfinite(targets).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    if loss.name == "binary_crossentropy" and not np.all((targets >= 0) & (targets <= 1)):
        raise ValueError(f"{name}: binary_crossentropy needs targets in [0, 1]")
    return targets


def _classes_of(targets: np.ndarray, name: str) -> np.ndarray:
    if targets.ndim == 1:
        return targets
    if targets.shape[1] == 1:
        return np.round(targets[:, 0]).astype(np.int64)  # binary 0/1 targets
    return targets.argmax(axis=1)


def sample_weights(targets: np.ndarray, sample_weight: Any = None, class_weight: Optional[Mapping[int, float]] = None,
                   name: str = "sample_weight") -> Optional[np.ndarray]:
    """One float32 weight per sample from ``sample_weight`` (N,) times ``class_weight[class]``;
    None when neither is given."""
    n = len(targets)
    weights = None
    if sample_weight is not None:
        weights = np.asarray(sample_weight, dtype=np.float32)
        if weights.ndim == 2 and weights.shape[1] == 1:
            weights = weights[:, 0]
        if weights.shape != (n,):
            raise ValueError(f"{name}: expected one weight per sample, shape ({n},), got {weights.shape}")
        if not (np.isfinite(weights).all() and (weights >= 0).all()):
            raise ValueError(f"{name}: weights must be finite and >= 0")
    if class_weight is not None:
        if not isinstance(class_weight, Mapping):
            raise TypeError(f"class_weight: expected a dict {{class: weight}}, got {type(class_weight).__name__}")
        classes = _classes_of(targets, name)
        table = np.ones(int(max(classes.max(initial=0), max(class_weight, default=0))) + 1, np.float32)
        for cls, value in class_weight.items():
            if isinstance(cls, bool) or not isinstance(cls, (int, np.integer)) or cls < 0:
                raise ValueError(f"class_weight: keys must be class indices >= 0, got {cls!r}")
            table[int(cls)] = float(value)
        by_class = table[classes]
        weights = by_class if weights is None else weights * by_class
    return weights


def pack(targets: np.ndarray, weights: Optional[np.ndarray]) -> np.ndarray:
    """float32 (N, k + 1): the targets' columns, then the weight (1 when None)."""
    n = len(targets)
    out = np.empty((n, targets.reshape(n, -1).shape[1] + 1), np.float32)
    out[:, :-1] = targets.reshape(n, -1)
    out[:, -1] = 1.0 if weights is None else weights
    return out


# ------------------------------------------------------------------------------ the objective
# the plain (mean, unweighted) loss on logits for each Keras loss: the fused kernels
_UNWEIGHTED = {"SparseCategoricalCrossentropy": nn.CrossEntropyLoss, "CategoricalCrossentropy": nn.CrossEntropyLoss,
               "BinaryCrossentropy": nn.BCEWithLogitsLoss, "MeanSquaredError": nn.MSELoss}

class Objective(nn.Module):
    """The loss ``dk.train`` calls: Keras's (weighted) loss plus the layers' penalties, and the
    compiled metrics updated from every batch it sees (training batches while the model is in
    train mode, the others under ``"eval"``)."""

    def __init__(self, model: Any, loss: _losses.Loss, fused: bool, penalty: Any,
                 metrics: Sequence[_metrics.Metric]) -> None:
        super().__init__()
        object.__setattr__(self, "_model", model)  # a back reference, not a submodule
        self.loss = loss
        self.fused = fused
        self.penalty = penalty
        self.unweighted = _UNWEIGHTED[type(loss).__name__]()
        self.metrics = {"train": list(metrics), "eval": [_metrics.clone(m) for m in metrics]}
        for group in ("train", "eval"):
            self.reset(group)

    def reset(self, group: str) -> None:
        for metric in self.metrics[group]:
            metric.reset_state()

    def results(self, group: str) -> "OrderedDict[str, float]":
        return OrderedDict((m.name, float(m.result())) for m in self.metrics[group])

    def forward(self, out: Tensor, packed: Any) -> Tensor:
        packed = np.asarray(packed)
        targets, weights = packed[:, :-1], packed[:, -1]
        if self.loss.name in (_SPARSE, _CATEGORICAL):
            targets = targets[:, 0].astype(np.int64)
        value = self._data_loss(out, targets, weights)
        extra = self.penalty()
        if extra is not None:
            value = value + extra
        group = self.metrics["train" if self._model.training else "eval"]
        if group:
            predictions = self.predictions(out.data)
            for metric in group:
                metric.update_state(targets, predictions)
        return value

    def _data_loss(self, out: Tensor, targets: np.ndarray, weights: np.ndarray) -> Tensor:
        if np.all(weights == 1.0):  # the common case: the fused kernels as they are
            return self.unweighted(out, targets if targets.ndim == 1 else np.ascontiguousarray(targets))
        n = len(weights)
        w = weights.reshape(n, 1)
        if self.loss.name in (_SPARSE, _CATEGORICAL):
            picked = np.zeros(out.shape, np.float32)  # each row: the sample's weight at its label
            picked[np.arange(n), targets] = weights
            return (out.log_softmax(-1) * picked).sum() * np.float32(-1.0 / n)
        if self.loss.name == "binary_crossentropy":  # the stable logit form, weighted per sample
            per_element = out.relu() - out * targets + ((-out.abs()).exp() + 1.0).log()
            return (per_element * w).mean()
        diff = out - targets
        return (diff * diff * w).mean()

    def predictions(self, out: Any) -> np.ndarray:
        """What ``predict`` returns for the model's training outputs (the fused head applied)."""
        out = np.ascontiguousarray(out, dtype=np.float32)
        if not self.fused:
            return out
        if self.loss.head == "softmax":
            return ops.softmax(out, axis=-1)
        return (np.float32(0.5) * (np.tanh(np.float32(0.5) * out) + np.float32(1.0))).astype(np.float32)


# ------------------------------------------------------------------------------ callbacks and output
def _format(logs: Mapping[str, float]) -> str:
    return " - ".join(f"{key}: {value:.4f}" for key, value in logs.items())


class KerasRun(train.Callback):
    """The callback ``dk.train.fit`` runs for a Keras ``fit``: builds Keras's epoch logs from
    the loop's loss and the objective's metrics, hands them to the user's callbacks (with
    ``self.model`` the Keras model), records them for the History, prints, and stops when a
    callback or ``model.stop_training`` asks.

    ``verbose``: 0 silent; 1 a progress bar on a terminal or in Jupyter, else (a log file, a
    pipe) one line per epoch as Keras prints when its output is not interactive; 2 one line
    per epoch.
    """

    def __init__(self, keras_model: Any, objective: Objective, callbacks: Sequence[train.Callback],
                 verbose: int, epochs: int, steps: Optional[int]) -> None:
        super().__init__()
        self.keras_model = keras_model
        self.objective = objective
        self.callbacks = list(callbacks)
        self.epochs = epochs
        self.steps = steps
        self.bar_class = progress_bar_class() if verbose == 1 and _progress_enabled(None) else None
        self.print_lines = verbose == 2 or (verbose == 1 and self.bar_class is None)
        self.history: "OrderedDict[str, List[float]]" = OrderedDict()
        self._bar: Any = None
        self._logs: Dict[str, float] = {}

    def on_train_begin(self, logs: Optional[Dict[str, float]] = None) -> None:
        params = dict(self.params, epochs=self.epochs, steps=self.steps, verbose=int(bool(self.bar_class)))
        for cb in self.callbacks:
            cb.model, cb.optimizer, cb.params = self.keras_model, self.optimizer, params
            cb.stop_training = False
            cb.on_train_begin({})

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        self.objective.reset("train")
        self.objective.reset("eval")
        self._batches = 0
        self._start = time.perf_counter()
        if self.bar_class is not None:
            self._bar = self.bar_class(total=self.steps, desc=f"Epoch {epoch + 1}/{self.epochs}", unit="step",
                                       leave=True, file=sys.stdout, **_bar_size())
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, {})

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, float]] = None) -> None:
        logs = logs or {}
        self._batches += 1
        if self._bar is not None:
            running = OrderedDict(loss=float(logs.get("loss", 0.0)))  # the epoch's running mean
            running.update(self.objective.results("train"))
            self._bar.update(1)
            self._bar.set_postfix_str(_format(running), refresh=False)
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, dict(logs))

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        logs = logs or {}
        keras_logs: "OrderedDict[str, float]" = OrderedDict(loss=float(logs["loss"]))
        # data-parallel: the loop averaged the losses; the metrics are averaged here
        keras_logs.update(_distributed.mean_over_ranks(self.objective.results("train")))
        if "val_loss" in logs:
            keras_logs["val_loss"] = float(logs["val_loss"])
            val_metrics = _distributed.mean_over_ranks(self.objective.results("eval"))
            keras_logs.update((f"val_{k}", v) for k, v in val_metrics.items())
        for key, value in keras_logs.items():
            self.history.setdefault(key, []).append(value)
        self._logs = dict(keras_logs)
        elapsed = time.perf_counter() - self._start
        if self._bar is not None:
            self._bar.set_postfix_str(_format(keras_logs), refresh=True)
            self._bar.close()
            self._bar = None
        elif self.print_lines:
            per_step = elapsed / max(self._batches, 1)
            print(f"Epoch {epoch + 1}/{self.epochs} - {self._batches}/{self._batches} - {elapsed:.0f}s - "
                  f"{per_step * 1e3:.0f}ms/step - {_format(keras_logs)}", flush=True)
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, dict(keras_logs))
        if getattr(self.keras_model, "stop_training", False) or any(cb.stop_training for cb in self.callbacks):
            self.stop_training = True

    def on_train_end(self, logs: Optional[Dict[str, float]] = None) -> None:
        if self._bar is not None:  # an exception ended the epoch early
            self._bar.close()
        for cb in self.callbacks:
            cb.on_train_end(dict(self._logs))
