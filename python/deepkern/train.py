"""The training loop: ``fit`` / ``evaluate`` / ``predict``, ``History``, callbacks, checkpoints.

Keras's workflow on deepkern's PyTorch-like modules::

    model = dk.models.CNN()
    history = dk.train.fit(model, x_train, y_train, epochs=5, batch_size=64,
                           optimizer="adam", validation_split=0.1,
                           callbacks=[dk.train.EarlyStopping(patience=2, restore_best_weights=True)])
    test_loss, test_acc = dk.train.evaluate(model, x_test, y_test)
    dk.train.plot_history(history, "history.png")
    dk.train.save(model, "model.npz")

Inputs are converted once (float32, C-contiguous) before the first epoch; each epoch draws a
fresh permutation and takes its batches by fancy indexing, so the loop does no per-sample
Python work. Randomness: ``seed`` fixes the shuffling here; initial weights come from the
model's constructor (``dk.manual_seed`` before building it).
"""
from __future__ import annotations

import contextlib
import math
import os
import sys
import time
import uuid
import zipfile
import zlib
from collections import OrderedDict
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Sequence, Tuple, Union

import numpy as np

from . import ops
from .autograd import Tensor, no_grad, xp_of

PathLike = Union[str, "os.PathLike[str]"]
LossFn = Callable[[Tensor, Any], Tensor]

__all__ = ["fit", "evaluate", "predict", "History", "Callback", "EarlyStopping", "ModelCheckpoint",
           "EpochLogger", "save", "load", "plot_history", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]

# Learning rates used when the optimizer is given by name and lr is None (Keras's defaults).
_DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3, "rmsprop": 1e-3}
_LOSSES = ("cross_entropy", "mse", "binary_cross_entropy")


# ---------------------------------------------------------------------------------------------
# History and callbacks
# ---------------------------------------------------------------------------------------------
class History:
    """Per-epoch metrics of one ``fit`` call, like Keras's ``History``.

    Attributes:
        history: ``{"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...]}``
            (the ``val_*`` keys only when fit had validation data); ``loss`` includes the
            L1/L2 penalty when one was set, ``val_loss`` is the data loss alone.
        epoch: the 0-based indices of the epochs that ran.
        samples_per_second: training throughput of each epoch (forward, backward, update).
        params: the settings of the run (epochs, batch_size, samples, validation samples, ...).
    """

    def __init__(self) -> None:
        self.history: Dict[str, List[float]] = OrderedDict()
        self.epoch: List[int] = []
        self.samples_per_second: List[float] = []
        self.params: Dict[str, Any] = {}

    def _record(self, epoch: int, logs: Mapping[str, float], samples_per_second: float) -> None:
        self.epoch.append(epoch)
        self.samples_per_second.append(samples_per_second)
        for key, value in logs.items():
            self.history.setdefault(key, []).append(float(value))

    @property
    def loss(self) -> List[float]:
        return self.history.get("loss", [])

    @property
    def accuracy(self) -> List[float]:
        return self.history.get("accuracy", [])

    @property
    def val_loss(self) -> List[float]:
        return self.history.get("val_loss", [])

    @property
    def val_accuracy(self) -> List[float]:
        return self.history.get("val_accuracy", [])

    def __len__(self) -> int:
        return len(self.epoch)

    def __repr__(self) -> str:
        last = {k: round(v[-1], 4) for k, v in self.history.items() if v}
        return f"History(epochs={len(self.epoch)}, last={last})"


class Callback:
    """Base class of training callbacks; override the hooks you need.

    ``fit`` sets ``model``, ``optimizer`` and ``params`` before ``on_train_begin``. ``logs`` at
    epoch end holds the epoch's metrics (``loss``, ``accuracy`` and, with validation data,
    ``val_loss``, ``val_accuracy``). Setting ``self.stop_training = True`` ends training after
    the current epoch.
    """

    def __init__(self) -> None:
        self.model: Any = None
        self.optimizer: Any = None
        self.params: Dict[str, Any] = {}
        self.stop_training = False

    def on_train_begin(self, logs: Optional[Dict[str, float]] = None) -> None:
        """Called once before the first epoch."""

    def on_train_end(self, logs: Optional[Dict[str, float]] = None) -> None:
        """Called once after the last epoch (also after an early stop)."""

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        """Called at the start of each epoch (``epoch`` counts from 0)."""

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        """Called at the end of each epoch with that epoch's metrics."""


def _resolve_mode(mode: str, monitor: str, owner: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def _monitored(logs: Optional[Mapping[str, float]], monitor: str, owner: str) -> float:
    logs = logs or {}
    if monitor not in logs:
        hint = " (give fit() validation_split or validation_data)" if monitor.startswith("val_") else ""
        raise ValueError(f"{owner} monitors {monitor!r} but the epoch logs have only "
                         f"{sorted(logs)}{hint}")
    return float(logs[monitor])


class EarlyStopping(Callback):
    """Stop training when a monitored metric stops improving.

    Args:
        monitor: a key of the epoch logs, e.g. ``"val_loss"`` or ``"val_accuracy"``.
        patience: how many consecutive epochs without improvement end training (Keras's
            meaning: 0 and 1 both stop at the first epoch that does not improve).
        min_delta: the smallest change that counts as an improvement.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (max for accuracies, min otherwise).
        restore_best_weights: at the end of training, put back the weights of the best epoch.

    After training, ``best``, ``best_epoch`` and ``stopped_epoch`` (None when it did not stop
    early) describe what happened.
    """

    def __init__(self, monitor: str = "val_loss", patience: int = 0, min_delta: float = 0.0,
                 mode: str = "auto", restore_best_weights: bool = False) -> None:
        super().__init__()
        if not isinstance(monitor, str) or not monitor:
            raise TypeError(f"EarlyStopping: monitor must be a metric name, got {monitor!r}")
        if isinstance(patience, bool) or not isinstance(patience, (int, np.integer)) or patience < 0:
            raise ValueError(f"EarlyStopping: patience must be an int >= 0, got {patience!r}")
        if not _is_real(min_delta) or not math.isfinite(min_delta):
            raise ValueError(f"EarlyStopping: min_delta must be a finite number, got {min_delta!r}")
        self.monitor = monitor
        self.patience = int(patience)
        self.min_delta = abs(float(min_delta))
        self.mode = _resolve_mode(mode, monitor, "EarlyStopping")
        self.restore_best_weights = bool(restore_best_weights)
        self._reset()

    def _reset(self) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf
        self.best_epoch: Optional[int] = None
        self.stopped_epoch: Optional[int] = None
        self.wait = 0
        self.best_weights: Optional[Dict[str, np.ndarray]] = None
        self._last_epoch: Optional[int] = None

    def _improved(self, value: float) -> bool:
        if self.mode == "min":
            return value < self.best - self.min_delta
        return value > self.best + self.min_delta

    def on_train_begin(self, logs: Optional[Dict[str, float]] = None) -> None:
        self._reset()

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        value = _monitored(logs, self.monitor, "EarlyStopping")
        self._last_epoch = epoch
        if self._improved(value):
            self.best, self.best_epoch, self.wait = value, epoch, 0
            if self.restore_best_weights:
                self.best_weights = self.model.state_dict()  # state_dict returns copies
            return
        self.wait += 1
        if self.wait >= max(self.patience, 1):
            self.stopped_epoch = epoch
            self.stop_training = True

    def on_train_end(self, logs: Optional[Dict[str, float]] = None) -> None:
        if self.best_weights is not None and self.best_epoch != self._last_epoch:
            self.model.load_state_dict(self.best_weights)


class ModelCheckpoint(Callback):
    """Save the model (and optimizer state) after epochs, with :func:`save`.

    Args:
        path: where to write; may hold ``str.format`` fields filled from the epoch (1-based)
            and its logs, e.g. ``"ckpt-{epoch:02d}-{val_loss:.3f}.npz"``.
        monitor: the metric compared when ``save_best_only`` is set.
        save_best_only: write only when ``monitor`` improved on the best value so far.
        mode: ``"min"``, ``"max"`` or ``"auto"`` (as in :class:`EarlyStopping`).
        save_optimizer: include the optimizer's state so training can resume exactly.

    ``last_saved`` is the path of the latest file written (None before any).
    """

    def __init__(self, path: PathLike, monitor: str = "val_loss", save_best_only: bool = False,
                 mode: str = "auto", save_optimizer: bool = True) -> None:
        super().__init__()
        self.path = os.fspath(path)
        if not self.path:
            raise ValueError("ModelCheckpoint: path must not be empty")
        self.monitor = monitor
        self.save_best_only = bool(save_best_only)
        self.mode = _resolve_mode(mode, monitor, "ModelCheckpoint")
        self.save_optimizer = bool(save_optimizer)
        self.best = math.inf if self.mode == "min" else -math.inf
        self.last_saved: Optional[str] = None

    def on_train_begin(self, logs: Optional[Dict[str, float]] = None) -> None:
        self.best = math.inf if self.mode == "min" else -math.inf

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        logs = dict(logs or {})
        if self.save_best_only:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            better = value < self.best if self.mode == "min" else value > self.best
            if not better:
                return
            self.best = value
        path = self.path.format(epoch=epoch + 1, **logs) if "{" in self.path else self.path
        save(self.model, path, optimizer=self.optimizer if self.save_optimizer else None)
        self.last_saved = path


class EpochLogger(Callback):
    """Print one line of metrics per epoch (for logs, where a progress bar is off)."""

    def __init__(self, print_fn: Callable[[str], None] = print) -> None:
        super().__init__()
        self.print_fn = print_fn
        self._start = 0.0

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        self._start = time.perf_counter()

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        metrics = " - ".join(f"{k}: {v:.4f}" for k, v in (logs or {}).items())
        elapsed = time.perf_counter() - self._start
        self.print_fn(f"Epoch {epoch + 1}/{self.params.get('epochs', '?')} - {elapsed:.1f}s - {metrics}")


# ---------------------------------------------------------------------------------------------
# Argument checking and conversion (once per call, never per batch)
# ---------------------------------------------------------------------------------------------
def _is_real(value: Any) -> bool:
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def _non_negative(value: Any, name: str) -> float:
    if not _is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)


def _as_features(x: Any, name: str) -> np.ndarray:
    """Inputs as a float32, C-contiguous array of rank >= 2 (a copy only when needed)."""
    if isinstance(x, Tensor):
        x = x.numpy()
    arr = np.asarray(x)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric inputs, got dtype {arr.dtype}")
    if arr.ndim < 2:
        raise ValueError(f"{name}: expected an array of shape (samples, features...) with rank >= 2, "
                         f"got shape {arr.shape}")
    if arr.shape[0] == 0:
        raise ValueError(f"{name}: has no samples")
    arr = np.ascontiguousarray(arr, dtype=np.float32)
    if not np.isfinite(arr).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    return arr


def _as_targets(y: Any, n: int, loss_kind: str, name: str) -> np.ndarray:
    """Targets checked against the loss: int64 class labels for cross-entropy, float32 otherwise."""
    if isinstance(y, Tensor):
        y = y.numpy()
    arr = np.asarray(y)
    if arr.dtype.kind not in "biuf":
        raise TypeError(f"{name}: expected numeric targets, got dtype {arr.dtype}")
    if arr.ndim == 0 or arr.shape[0] != n:
        raise ValueError(f"{name}: expected {n} targets (one per input sample), got shape {arr.shape}")
    if loss_kind == "cross_entropy":
        if arr.ndim != 1:
            raise ValueError(f"{name}: cross_entropy needs integer class labels of shape ({n},), "
                             f"got shape {arr.shape}")
        if arr.dtype.kind == "f":
            if not np.all(np.isfinite(arr)) or np.any(arr != np.round(arr)):
                raise TypeError(f"{name}: cross_entropy needs integer class labels, got non-integer floats")
        labels = np.ascontiguousarray(arr, dtype=np.int64)
        if labels.min() < 0:
            raise ValueError(f"{name}: class labels must be >= 0, got {labels.min()}")
        return labels
    if loss_kind == "binary_cross_entropy":
        targets = np.ascontiguousarray(arr, dtype=np.float32)
        targets = targets.reshape(n, 1) if targets.ndim == 1 else targets  # one logit per sample
        if not np.all((targets >= 0) & (targets <= 1)):
            raise ValueError(f"{name}: binary_cross_entropy needs targets in [0, 1]")
        return targets
    if loss_kind == "custom":  # a user's loss gets the targets as given, only made contiguous
        return np.ascontiguousarray(arr, dtype=np.int64 if arr.dtype.kind in "iu" else np.float32)
    targets = np.ascontiguousarray(arr, dtype=np.float32)
    if targets.ndim == 1:
        targets = targets.reshape(n, 1)  # one output unit per sample
    if not np.isfinite(targets).all():
        raise ValueError(f"{name}: contains NaN or infinity")
    return targets


def _resolve_loss(loss: Union[str, LossFn]) -> Tuple[str, LossFn]:
    """(kind, function); kind "cross_entropy", "mse", "binary_cross_entropy" or "custom" decides
    how targets are prepared."""
    from . import nn

    if isinstance(loss, str):
        if loss == "cross_entropy":
            return loss, nn.CrossEntropyLoss()
        if loss == "mse":
            return loss, nn.MSELoss()
        if loss == "binary_cross_entropy":  # the model outputs logits; the sigmoid is in the loss
            return loss, nn.BCEWithLogitsLoss()
        raise ValueError(f"loss must be one of {', '.join(_LOSSES)} or a callable, got {loss!r}")
    if callable(loss):
        name = getattr(loss, "__name__", type(loss).__name__).lower()
        kind = "cross_entropy" if isinstance(loss, nn.CrossEntropyLoss) or "cross" in name else "custom"
        if isinstance(loss, nn.MSELoss):
            kind = "mse"
        if isinstance(loss, nn.BCEWithLogitsLoss):
            kind = "binary_cross_entropy"
        return kind, loss
    raise TypeError(f"loss must be a name or a callable(outputs, targets) -> Tensor, got {type(loss).__name__}")


def _resolve_optimizer(optimizer: Any, model: Any, lr: Optional[float]) -> Any:
    from . import optim

    if isinstance(optimizer, str):
        classes = {"sgd": optim.SGD, "adam": optim.Adam, "rmsprop": optim.RMSprop}
        key = optimizer.lower()
        if key not in classes:
            raise ValueError(f"optimizer must be one of {', '.join(classes)} or an optimizer instance, "
                             f"got {optimizer!r}")
        rate = _DEFAULT_LR[key] if lr is None else lr
        return classes[key](model.parameters(), lr=rate)
    if not (hasattr(optimizer, "step") and hasattr(optimizer, "zero_grad")):
        raise TypeError(f"optimizer must be a name ('sgd', 'adam', 'rmsprop') or an object with "
                        f"step() and zero_grad(), got {type(optimizer).__name__}")
    if lr is not None:
        raise ValueError("lr applies only when optimizer is given by name; set the learning rate "
                         "on the optimizer instance instead")
    return optimizer


def _check_model(model: Any) -> None:
    if not callable(model) or not hasattr(model, "parameters"):
        raise TypeError(f"model must be a deepkern Module (callable, with parameters()), "
                        f"got {type(model).__name__}")


def _resolve_device(device: str, model: Any) -> Any:
    """The array module for ``device``; moves the model there (cuda needs CuPy and a GPU)."""
    if device not in ("cpu", "cuda"):
        raise ValueError(f"device must be 'cpu' or 'cuda', got {device!r}")
    if hasattr(model, "to"):
        model.to(device)  # raises RuntimeError naming the reason when there is no usable GPU
    if device == "cpu":
        return np
    import cupy
    return cupy


def _progress_enabled(progress: Optional[bool]) -> bool:
    if progress is None:
        isatty = getattr(sys.stdout, "isatty", None)
        return bool(isatty and isatty())
    if not isinstance(progress, bool):
        raise TypeError(f"progress must be None, True or False, got {progress!r}")
    return progress


def _bar_size() -> Dict[str, Any]:
    """tqdm's size arguments: follow the terminal, except that a pseudo-terminal reporting a
    0x0 size (where tqdm would hide the bar) gets a fixed 140 columns."""
    try:
        size = os.get_terminal_size(sys.stdout.fileno())
    except (OSError, ValueError, AttributeError):  # not a real file, or no terminal
        return {"dynamic_ncols": True}
    if size.columns > 0 and size.lines > 0:
        return {"dynamic_ncols": True}
    return {"ncols": 140, "nrows": 24}


# ---------------------------------------------------------------------------------------------
# Metrics
# ---------------------------------------------------------------------------------------------
def _correct(out: Any, targets: Any, loss_kind: str) -> int:
    """How many predictions in a batch are right (argmax, or a 0.5 threshold for one output)."""
    if out.ndim != 2:
        return 0
    if loss_kind == "binary_cross_entropy":  # logits: sigmoid(z) > 0.5 exactly when z > 0
        return int(((out > 0) == (targets > 0.5)).all(axis=1).sum())
    if out.shape[1] == 1:
        if targets.ndim == 2 and targets.shape[1] == 1:
            return int(((out > 0.5) == (targets > 0.5)).sum())
        return 0
    predicted = out.argmax(axis=1)
    if loss_kind == "cross_entropy" or targets.ndim == 1:
        return int((predicted == targets).sum())
    return int((predicted == targets.argmax(axis=1)).sum())


def _has_accuracy(y: np.ndarray, loss_kind: str) -> bool:
    # accuracy means something for class labels and for one-hot or 0/1 targets
    if loss_kind in ("cross_entropy", "binary_cross_entropy"):
        return True
    if y.dtype.kind == "f":
        return bool(np.all((y == 0) | (y == 1)))
    return False


def _penalty_grads(params: Sequence[Any], l1: float, l2: float) -> float:
    """Add d/dw [l1*|w| + l2*w^2] to each weight's gradient; returns the penalty's value.

    Biases (1-D parameters) are not penalised, as in Keras's kernel regularizers. The gradient
    is added out of place: a .grad may be an array the autograd graph still shares.
    """
    total = 0.0
    for p in params:
        if p.grad is None or p.data.ndim < 2:
            continue
        w = p.data
        xp = xp_of(w)
        extra = 0.0
        if l1:
            extra = extra + np.float32(l1) * xp.sign(w)
            total += l1 * float(xp.abs(w).sum())
        if l2:
            extra = extra + np.float32(2.0 * l2) * w
            total += l2 * float((w * w).sum())
        p.grad = p.grad + extra
    return total


# ---------------------------------------------------------------------------------------------
# fit / evaluate / predict
# ---------------------------------------------------------------------------------------------
def _evaluate_arrays(model: Any, x: Any, y: Any, loss_fn: LossFn, loss_kind: str,
                     batch_size: int, with_accuracy: bool) -> Tuple[float, float]:
    """Mean loss and accuracy over (x, y) in inference mode, without recording the graph."""
    was_training = getattr(model, "training", True)
    if hasattr(model, "eval"):
        model.eval()
    total_loss = 0.0
    correct = 0
    n = len(x)
    try:
        with no_grad():
            for start in range(0, n, batch_size):
                xb, yb = x[start:start + batch_size], y[start:start + batch_size]
                out = model(Tensor(xb))
                total_loss += float(loss_fn(out, yb).item()) * len(xb)
                if with_accuracy:
                    correct += _correct(out.data, yb, loss_kind)
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    return total_loss / n, (correct / n if with_accuracy else math.nan)


def fit(model: Any, X: Any, y: Any, epochs: int = 10, batch_size: int = 32,
        optimizer: Any = "adam", loss: Union[str, LossFn] = "cross_entropy", lr: Optional[float] = None,
        validation_split: float = 0.0, validation_data: Optional[Tuple[Any, Any]] = None,
        shuffle: bool = True, callbacks: Optional[Iterable[Callback]] = None, seed: Optional[int] = 0,
        progress: Optional[bool] = None, l1: float = 0.0, l2: float = 0.0,
        device: str = "cpu") -> History:
    """Train ``model`` on ``(X, y)`` with mini-batch gradient descent; returns a :class:`History`.

    Args:
        model: a ``dk.nn.Module`` mapping a batch Tensor to outputs (logits for cross-entropy).
        X: inputs, shape (N, ...) (any numeric array or nested list; converted to float32 once);
            or a batch source: an object with ``len()`` (batches per epoch) that yields
            ``(x_batch, y_batch)`` pairs on every pass, such as ``dk.data.ImageFlow`` (augmented
            batches from ``ImageDataGenerator.flow``) or ``dk.data.BatchIterator``. A source
            shuffles itself and needs ``y=None``; validate it with ``validation_data``.
        y: class labels (N,) for ``loss="cross_entropy"``; targets (N,) or (N, k) for ``"mse"``.
        epochs, batch_size: passes over the data and samples per update (the last batch may be smaller).
        optimizer: ``"sgd"``, ``"adam"``, ``"rmsprop"`` or a ``dk.optim`` instance.
        loss: ``"cross_entropy"``, ``"mse"``, ``"binary_cross_entropy"`` (one logit per sample and
            0/1 targets; accuracy thresholds the logit at 0) or a callable
            ``(outputs Tensor, targets) -> scalar Tensor``.
        lr: learning rate for a named optimizer (default: sgd 0.01, adam and rmsprop 0.001).
        validation_split: fraction in [0, 1) held out for validation, taken from the *end* of
            the data before shuffling (as Keras does). Ignored when ``validation_data`` is given.
        validation_data: ``(X_val, y_val)`` evaluated after every epoch.
        shuffle: draw a new order of the training samples each epoch.
        callbacks: :class:`Callback` instances (EarlyStopping, ModelCheckpoint, ...).
        seed: seeds the shuffling (None: not reproducible).
        progress: a tqdm bar per epoch; None shows it only when stdout is a terminal.
        l1, l2: penalties ``l1 * sum|w| + l2 * sum w^2`` over the weights (not biases), added to
            the loss and its gradient.
        device: ``"cpu"`` or ``"cuda"`` (moves the model; needs CuPy and a GPU).

    Returns:
        History with per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``.
    """
    _check_model(model)
    epochs = _positive_int(epochs, "epochs")
    batch_size = _positive_int(batch_size, "batch_size")
    if not _is_real(validation_split) or not 0.0 <= validation_split < 1.0:
        raise ValueError(f"validation_split must be a number in [0, 1), got {validation_split!r}")
    l1 = _non_negative(l1, "l1")
    l2 = _non_negative(l2, "l2")
    if lr is not None and (not _is_real(lr) or not math.isfinite(lr) or lr <= 0):
        raise ValueError(f"lr must be a positive number, got {lr!r}")
    if not isinstance(shuffle, bool):
        raise TypeError(f"shuffle must be a bool, got {shuffle!r}")
    if seed is not None and (isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0):
        raise ValueError(f"seed must be None or an int >= 0, got {seed!r}")
    show_progress = _progress_enabled(progress)
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")

    loss_kind, loss_fn = _resolve_loss(loss)
    source = X if _is_batch_source(X) else None
    if source is None:
        x_all = _as_features(X, "X")
        y_all = _as_targets(y, len(x_all), loss_kind, "y")
    else:
        if y is not None:
            raise ValueError("y must be None when X is a batch source yielding (x, y) pairs")
        if validation_split and validation_data is None:
            raise ValueError("validation_split needs arrays; give a batch source validation_data instead")
        if len(source) < 1:
            raise ValueError("X: the batch source yields no batches (len() is 0)")
        x_all = y_all = None

    if validation_data is not None:
        if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
            raise ValueError("validation_data must be a pair (X_val, y_val)")
        x_val = _as_features(validation_data[0], "validation_data[0]")
        y_val = _as_targets(validation_data[1], len(x_val), loss_kind, "validation_data[1]")
        if x_all is not None and x_val.shape[1:] != x_all.shape[1:]:
            raise ValueError(f"validation_data[0]: samples of shape {x_val.shape[1:]} do not match "
                             f"X's {x_all.shape[1:]}")
        x_train, y_train = x_all, y_all
    elif validation_split > 0:
        n_train = int(len(x_all) * (1.0 - validation_split))
        if n_train < 1 or n_train == len(x_all):
            raise ValueError(f"validation_split={validation_split} of {len(x_all)} samples leaves "
                             f"{n_train} for training and {len(x_all) - n_train} for validation; "
                             f"both need at least one")
        # slices, not copies: the training part is indexed by permutation below anyway
        x_train, y_train = x_all[:n_train], y_all[:n_train]
        x_val, y_val = x_all[n_train:], y_all[n_train:]
    else:
        x_train, y_train, x_val, y_val = x_all, y_all, None, None

    xp = _resolve_device(device, model)
    if xp is not np and source is None:
        x_train, y_train = xp.asarray(x_train), xp.asarray(y_train)
        if x_val is not None:
            x_val, y_val = xp.asarray(x_val), xp.asarray(y_val)
    optimizer = _resolve_optimizer(optimizer, model, lr)
    params = list(model.parameters())
    # a source's targets are first seen in its first batch
    with_accuracy: Optional[bool] = _has_accuracy(y_all, loss_kind) if source is None else None
    n = len(x_train) if source is None else getattr(source, "n", None)
    rng = np.random.default_rng(seed)

    def epoch_batches(order: Any) -> Iterable[Tuple[Any, Any]]:
        """One epoch of (inputs, targets) batches on the training device."""
        if source is None:
            for begin in range(0, n, batch_size):
                if order is None:
                    yield x_train[begin:begin + batch_size], y_train[begin:begin + batch_size]
                else:
                    idx = order[begin:begin + batch_size]
                    yield x_train[idx], y_train[idx]
            return
        for i, batch in enumerate(source):
            if not (isinstance(batch, (tuple, list)) and len(batch) == 2):
                raise TypeError(f"X: batch {i} of the source is not an (x, y) pair")
            xb = _as_features(batch[0], f"X batch {i}")
            yb = _as_targets(batch[1], len(xb), loss_kind, f"y batch {i}")
            yield (xb, yb) if xp is np else (xp.asarray(xb), xp.asarray(yb))

    history = History()
    history.params = {"epochs": epochs, "samples": n,
                      "batch_size": batch_size if source is None else getattr(source, "batch_size", None),
                      "validation_samples": 0 if x_val is None else len(x_val),
                      "optimizer": type(optimizer).__name__, "loss": loss_kind, "device": device}
    for cb in callbacks:
        cb.model, cb.optimizer, cb.params = model, optimizer, dict(history.params)
        cb.stop_training = False
        cb.on_train_begin({})

    bar_factory = None
    if show_progress:
        from tqdm.auto import tqdm as bar_factory

    logs: Dict[str, float] = {}
    for epoch in range(epochs):
        for cb in callbacks:
            cb.on_epoch_begin(epoch, {})
        model.train()
        order = rng.permutation(n) if shuffle and source is None else None
        if order is not None and xp is not np:
            order = xp.asarray(order)
        bar = None
        if bar_factory is not None:
            bar = bar_factory(total=n, desc=f"Epoch {epoch + 1}/{epochs}", unit="samples",
                              unit_scale=False, leave=True, file=sys.stdout, **_bar_size())
        total_loss = 0.0
        total_penalty = 0.0
        correct = 0
        seen = 0
        start = time.perf_counter()
        for xb, yb in epoch_batches(order):
            if with_accuracy is None:
                with_accuracy = _has_accuracy(yb, loss_kind)
            optimizer.zero_grad()
            out = model(Tensor(xb))
            batch_loss = loss_fn(out, yb)
            batch_loss.backward()
            if l1 or l2:
                total_penalty += _penalty_grads(params, l1, l2) * len(xb)
            optimizer.step()

            total_loss += float(batch_loss.item()) * len(xb)
            if with_accuracy:
                correct += _correct(out.data, yb, loss_kind)
            seen += len(xb)
            if bar is not None:
                bar.update(len(xb))
                postfix = {"loss": f"{(total_loss + total_penalty) / seen:.4f}"}
                if with_accuracy:
                    postfix["acc"] = f"{correct / seen:.4f}"
                bar.set_postfix(postfix, refresh=False)
        elapsed = time.perf_counter() - start
        rate = seen / elapsed if elapsed > 0 else math.inf

        logs = {"loss": (total_loss + total_penalty) / seen}
        if with_accuracy:
            logs["accuracy"] = correct / seen
        if x_val is not None:
            val_loss, val_acc = _evaluate_arrays(model, x_val, y_val, loss_fn, loss_kind,
                                                 max(batch_size, 256), with_accuracy)
            logs["val_loss"] = val_loss
            if with_accuracy:
                logs["val_accuracy"] = val_acc
        history._record(epoch, logs, rate)
        if bar is not None:
            postfix = {k.replace("accuracy", "acc"): f"{v:.4f}" for k, v in logs.items()}
            postfix["samples/s"] = f"{rate:,.0f}"
            bar.set_postfix(postfix, refresh=True)
            bar.close()
        for cb in callbacks:
            cb.on_epoch_end(epoch, dict(logs))
        if any(cb.stop_training for cb in callbacks):
            break
    for cb in callbacks:
        cb.on_train_end(dict(logs))
    return history


def _is_batch_source(X: Any) -> bool:
    """True for an object that yields (x, y) batches and has len(), rather than an array."""
    if isinstance(X, (np.ndarray, Tensor, list, tuple)) or hasattr(X, "shape"):
        return False
    return hasattr(X, "__iter__") and hasattr(X, "__len__")


def evaluate(model: Any, X: Any, y: Any, batch_size: int = 256,
             loss: Union[str, LossFn] = "cross_entropy") -> Tuple[float, float]:
    """Mean loss and accuracy of ``model`` on ``(X, y)``, in eval mode and without gradients.

    The loss is the data loss alone (no L1/L2 penalty). Accuracy is NaN when the targets are
    not class labels, one-hot or 0/1 values. The model stays on its device; inputs follow it.
    """
    _check_model(model)
    batch_size = _positive_int(batch_size, "batch_size")
    loss_kind, loss_fn = _resolve_loss(loss)
    x = _as_features(X, "X")
    t = _as_targets(y, len(x), loss_kind, "y")
    with_accuracy = _has_accuracy(t, loss_kind)
    x, t = _to_model_device(model, x), _to_model_device(model, t)
    return _evaluate_arrays(model, x, t, loss_fn, loss_kind, batch_size, with_accuracy)


def predict(model: Any, X: Any, batch_size: int = 256, proba: bool = False) -> np.ndarray:
    """The model's outputs for ``X`` as a host NumPy float32 array, batch by batch.

    Returns the raw outputs (logits for the classifiers) by default, or softmax
    probabilities over the last axis with ``proba=True``. Take ``.argmax(axis=1)`` for classes.
    """
    _check_model(model)
    batch_size = _positive_int(batch_size, "batch_size")
    x = _to_model_device(model, _as_features(X, "X"))
    was_training = getattr(model, "training", True)
    if hasattr(model, "eval"):
        model.eval()
    chunks: List[np.ndarray] = []
    try:
        with no_grad():
            for start in range(0, len(x), batch_size):
                out = model(Tensor(x[start:start + batch_size])).data
                if proba:
                    out = ops.softmax(out, axis=-1)
                chunks.append(out.get() if hasattr(out, "get") and not isinstance(out, np.ndarray) else out)
    finally:
        if hasattr(model, "train"):
            model.train(was_training)
    return np.concatenate(chunks, axis=0)


def _to_model_device(model: Any, arr: np.ndarray) -> Any:
    """``arr`` on the device of the model's first parameter (host when it has none)."""
    params = list(model.parameters())
    if params and xp_of(params[0].data) is not np:
        return xp_of(params[0].data).asarray(arr)
    return arr


# ---------------------------------------------------------------------------------------------
# Checkpoints
# ---------------------------------------------------------------------------------------------
#: Value of the format-marker entry every deepkern checkpoint carries.
CHECKPOINT_FORMAT = "deepkern-checkpoint"
#: Layout version written by :func:`save`; :func:`load` reads this version and older.
CHECKPOINT_VERSION = 1
_FORMAT_KEY = "__format__"
_VERSION_KEY = "__version__"
_OPTIMIZER_KEY = "__optimizer__"
_MODEL_PREFIX = "model/"
_OPTIM_PREFIX = "optimizer/"


def _host(value: Any) -> np.ndarray:
    if isinstance(value, Tensor):
        return value.numpy()
    if hasattr(value, "get") and not isinstance(value, np.ndarray):
        return value.get()
    return np.asarray(value)


def save(model: Any, path: PathLike, optimizer: Any = None) -> str:
    """Write the model's weights (and the optimizer's state) to ``path`` as an ``.npz``.

    The file is written to a temporary name in the same directory and renamed over ``path``
    in one step, so an interrupted save never leaves a half-written checkpoint. It holds only
    plain arrays (readable with ``allow_pickle=False``) plus a format marker and version.
    Returns the path written (exactly ``path``; no extension is added).
    """
    _check_model(model)
    path = os.fspath(path)
    arrays: Dict[str, np.ndarray] = {
        _FORMAT_KEY: np.array(CHECKPOINT_FORMAT),
        _VERSION_KEY: np.array(CHECKPOINT_VERSION, dtype=np.int64),
    }
    for name, value in model.state_dict().items():
        arrays[_MODEL_PREFIX + name] = _host(value)
    if optimizer is not None:
        if not hasattr(optimizer, "state_dict"):
            raise TypeError(f"optimizer: expected an optimizer with state_dict(), got {type(optimizer).__name__}")
        arrays[_OPTIMIZER_KEY] = np.array(type(optimizer).__name__)
        for name, value in optimizer.state_dict().items():
            arrays[_OPTIM_PREFIX + name] = _host(value)
    for key, value in arrays.items():
        if value.dtype.kind not in "biufU":
            raise TypeError(f"save: entry {key!r} has dtype {value.dtype}; checkpoints hold numeric arrays only")

    directory = os.path.dirname(os.path.abspath(path))
    tmp = os.path.join(directory, f".{os.path.basename(path)}.{uuid.uuid4().hex[:12]}.tmp")
    try:
        with open(tmp, "xb") as f:
            np.savez(f, **arrays)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        raise
    return path


def _read_checkpoint(path: str) -> Dict[str, np.ndarray]:
    try:
        loaded = np.load(path, allow_pickle=False)
    except (OSError, EOFError, ValueError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: not a readable deepkern checkpoint (truncated, corrupt or another "
                         f"format): {type(exc).__name__}: {exc}") from exc
    if not isinstance(loaded, np.lib.npyio.NpzFile):
        raise ValueError(f"{path}: not a deepkern checkpoint (a single .npy array, not an .npz archive)")
    try:
        with loaded:
            return {key: loaded[key] for key in loaded.files}
    except (OSError, EOFError, ValueError, KeyError, zipfile.BadZipFile, zlib.error) as exc:
        raise ValueError(f"{path}: checkpoint is truncated or corrupt: {type(exc).__name__}: {exc}") from exc


def load(model: Any, path: PathLike, optimizer: Any = None) -> Dict[str, Any]:
    """Restore weights saved by :func:`save` into ``model`` (and ``optimizer``), in place.

    Everything is checked before anything changes: a missing file raises FileNotFoundError;
    a truncated, corrupt or foreign file, a newer format version, missing/unexpected
    parameter names, shape mismatches, or optimizer state that is absent or from another
    optimizer class raise ValueError naming the file and the problem.

    Returns ``{"version": int, "optimizer": class name or None}`` describing the file.
    """
    _check_model(model)
    path = os.fspath(path)
    if not os.path.isfile(path):
        raise FileNotFoundError(f"{path}: no such checkpoint file")
    entries = _read_checkpoint(path)
    marker = entries.get(_FORMAT_KEY)
    if marker is None or marker.dtype.kind != "U" or str(marker) != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a deepkern checkpoint (no {CHECKPOINT_FORMAT!r} marker; "
                         f"entries: {sorted(entries)[:6]})")
    version_entry = entries.get(_VERSION_KEY)
    if version_entry is None or version_entry.dtype.kind not in "iu" or version_entry.ndim != 0:
        raise ValueError(f"{path}: deepkern checkpoint without a valid format version")
    version = int(version_entry)
    if version > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {version} is newer than this deepkern "
                         f"reads ({CHECKPOINT_VERSION}); upgrade deepkern")

    saved = {k[len(_MODEL_PREFIX):]: v for k, v in entries.items() if k.startswith(_MODEL_PREFIX)}
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if missing:
        problems.append(f"missing parameters {missing}")
    if unexpected:
        problems.append(f"unexpected parameters {unexpected}")
    for name, current in own.items():
        value = saved.get(name)
        if value is None:
            continue
        if value.dtype.kind not in "iuf":
            problems.append(f"parameter {name!r} has non-numeric dtype {value.dtype}")
        elif value.shape != np.shape(current):
            problems.append(f"parameter {name!r} has shape {value.shape} in the file but "
                            f"{tuple(np.shape(current))} in the model")
    if problems:
        raise ValueError(f"{path}: checkpoint does not fit {type(model).__name__}: " + "; ".join(problems))

    saved_optimizer = entries.get(_OPTIMIZER_KEY)
    optimizer_name = None if saved_optimizer is None else str(saved_optimizer)
    if optimizer is not None:
        if optimizer_name is None:
            raise ValueError(f"{path}: checkpoint holds no optimizer state (saved without optimizer=)")
        if optimizer_name != type(optimizer).__name__:
            raise ValueError(f"{path}: optimizer state is from {optimizer_name}, "
                             f"cannot load it into {type(optimizer).__name__}")
        state = {k[len(_OPTIM_PREFIX):]: v for k, v in entries.items() if k.startswith(_OPTIM_PREFIX)}
        try:
            optimizer.load_state_dict(state)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: optimizer state does not fit this {optimizer_name}: {exc}") from exc
    model.load_state_dict({name: value.astype(np.float32, copy=False) for name, value in saved.items()})
    return {"version": version, "optimizer": optimizer_name}


# ---------------------------------------------------------------------------------------------
# Plots
# ---------------------------------------------------------------------------------------------
def plot_history(history: Union[History, Mapping[str, Sequence[float]]], path: PathLike,
                 title: Optional[str] = None) -> str:
    """Write a PNG (or any format matplotlib infers from the extension) of the loss and
    accuracy curves, training and validation, per epoch. Returns the path.

    Uses matplotlib's Agg canvas directly, so it works headless and leaves pyplot's global
    backend alone.
    """
    from matplotlib.backends.backend_agg import FigureCanvasAgg
    from matplotlib.figure import Figure

    curves = history.history if isinstance(history, History) else history
    if not isinstance(curves, Mapping) or not curves.get("loss"):
        raise ValueError("history: expected a History or a dict with a non-empty 'loss' list")
    path = os.fspath(path)
    epochs = np.arange(1, len(curves["loss"]) + 1)
    panels = [("loss", "loss")]
    if curves.get("accuracy"):
        panels.append(("accuracy", "accuracy"))
    fig = Figure(figsize=(5.0 * len(panels), 4.0), dpi=100)
    FigureCanvasAgg(fig)
    axes = fig.subplots(1, len(panels), squeeze=False)[0]
    for ax, (key, label) in zip(axes, panels):
        ax.plot(epochs, curves[key], "o-", label="train")
        if curves.get(f"val_{key}"):
            ax.plot(epochs[:len(curves[f"val_{key}"])], curves[f"val_{key}"], "s--", label="validation")
        ax.set_xlabel("epoch")
        ax.set_ylabel(label)
        ax.grid(True, alpha=0.3)
        ax.legend()
        if len(epochs) <= 20:
            ax.set_xticks(epochs)
    if title:
        fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path)
    return path


# ---------------------------------------------------------------------------------------------
# The ``deepkern train`` command (parser in cli.py)
# ---------------------------------------------------------------------------------------------
#: Per-model defaults of ``deepkern train``, chosen so the default run meets the accuracy
#: targets on the embedded data. The MLP and the CNN hold out 10% for validation and stop
#: early on val_loss (patience 2), keeping the best epoch's weights: on mnist5k the CNN's
#: validation loss bottoms out after about 3 epochs of Adam and the MLP's after about 8.
CLI_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "perceptron": {"dataset": "or", "epochs": 1000, "batch_size": 4, "optimizer": "sgd", "lr": 2.0,
                   "loss": "mse", "validation_split": 0.0, "patience": 0},
    "mlp": {"dataset": "mnist5k", "epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": None,
            "loss": "cross_entropy", "validation_split": 0.1, "patience": 2},
    "cnn": {"dataset": "mnist5k", "epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": None,
            "loss": "cross_entropy", "validation_split": 0.1, "patience": 2},
}


def _build_cli_model(name: str, x_train: np.ndarray, num_classes: int) -> Any:
    from . import models

    if name == "perceptron":
        return models.Perceptron(x_train.shape[1])
    if name == "mlp":
        return models.MLP(int(np.prod(x_train.shape[1:])), (256, 256), num_classes)
    return models.CNN(in_channels=x_train.shape[1], num_classes=num_classes, image_size=x_train.shape[2:])


def cli_entry(args: Any) -> int:
    """Run ``deepkern train`` from parsed arguments (see ``cli.build_parser``); returns the exit code."""
    from . import data
    from .backends import set_backend
    from .nn.init import manual_seed

    def fail(message: str, code: int = 2) -> int:
        print(f"deepkern train: error: {message}", file=sys.stderr)
        return code

    model_name = args.model
    defaults = CLI_DEFAULTS[model_name]
    dataset = args.dataset or defaults["dataset"]
    if model_name == "perceptron" and dataset != "or":
        return fail(f"the perceptron is a single neuron for the OR gate; it cannot learn {dataset!r} "
                    f"(use --model mlp or --model cnn, or --dataset or)")
    if model_name != "perceptron" and dataset == "or":
        return fail("the OR gate is the perceptron's dataset; use --model perceptron")
    if args.patience is not None and args.patience < 0:
        return fail(f"--patience must be >= 0, got {args.patience}")
    for option in ("epochs", "batch_size", "limit"):
        value = getattr(args, option)
        if value is not None and value < 1:
            return fail(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    if args.seed < 0:
        return fail(f"--seed must be >= 0, got {args.seed}")
    validation_split = defaults["validation_split"] if args.validation_split is None else args.validation_split
    if not 0.0 <= validation_split < 1.0:
        return fail(f"--validation-split must be in [0, 1), got {validation_split}")
    if args.lr is not None and not args.lr > 0:
        return fail(f"--lr must be > 0, got {args.lr}")
    try:
        if args.backend:
            set_backend(args.backend)
    except (RuntimeError, ValueError) as exc:
        return fail(str(exc))

    epochs = args.epochs or defaults["epochs"]
    batch_size = args.batch_size or defaults["batch_size"]
    optimizer = args.optimizer or defaults["optimizer"]
    lr = args.lr if args.lr is not None else (defaults["lr"] if optimizer == defaults["optimizer"] else None)
    save_path = args.save or f"deepkern-{model_name}.npz"
    plot_path = args.plot or f"deepkern-{model_name}-history.png"

    x_train, y_train, x_test, y_test = data.load_dataset(dataset, seed=args.seed)
    if args.limit is not None:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    manual_seed(args.seed)
    try:
        model = _build_cli_model(model_name, x_train, int(max(y_train.max(), y_test.max())) + 1)
    except ValueError as exc:
        return fail(f"--model {model_name} cannot take the {dataset} images "
                    f"{tuple(x_train.shape[1:])}: {exc}. Use --model mlp for {dataset}.")

    # A per-epoch bar for a 1000-step perceptron would be noise: it reports once at the end.
    quiet_epochs = model_name == "perceptron"
    progress = False if (args.no_progress or quiet_epochs) else None
    callbacks: List[Callback] = []
    patience = defaults["patience"] if args.patience is None else args.patience
    stopper = None
    if patience > 0 and validation_split > 0:
        stopper = EarlyStopping("val_loss", patience=patience, restore_best_weights=True)
        callbacks.append(stopper)
    if not quiet_epochs and not _progress_enabled(progress):
        callbacks.append(EpochLogger())
    # built here rather than inside fit so that its state goes into the checkpoint
    opt = _resolve_optimizer(optimizer, model, lr)
    print(f"training {type(model).__name__} ({sum(p.size for p in model.parameters()):,} parameters) "
          f"on {dataset}: {len(x_train)} samples ({validation_split:.0%} held out for validation), "
          f"{epochs} epochs, batch {batch_size}, "
          f"{type(opt).__name__} lr={opt.lr:g}, device {args.device}")
    started = time.perf_counter()
    try:
        history = fit(model, x_train, y_train, epochs=epochs, batch_size=batch_size, optimizer=opt,
                      loss=defaults["loss"], validation_split=validation_split, callbacks=callbacks,
                      seed=args.seed, progress=progress, device=args.device)
    except RuntimeError as exc:  # e.g. device cuda without a GPU
        return fail(str(exc), code=1)
    wall = time.perf_counter() - started
    if stopper is not None and stopper.best_epoch is not None and stopper.best_epoch != history.epoch[-1]:
        how = "stopped early" if len(history.epoch) < epochs else "finished"
        print(f"{how} after epoch {history.epoch[-1] + 1}; kept the weights of epoch "
              f"{stopper.best_epoch + 1} (best val_loss {stopper.best:.4f})")
    test_loss, test_acc = evaluate(model, x_test, y_test, loss=defaults["loss"])
    trained = history.params["samples"] * len(history.epoch)
    train_seconds = sum(history.params["samples"] / r for r in history.samples_per_second if r > 0)

    if model_name == "perceptron":
        outputs = predict(model, x_test)[:, 0]
        for inputs, out, target in zip(x_test, outputs, y_test):
            print(f"  OR{tuple(int(v) for v in inputs)} = {int(out >= 0.5)}  (output {out:.3f}, expected {target})")
    held_out = "truth table" if dataset == "or" else f"{len(x_test)} held-out samples"
    print(f"test accuracy: {test_acc:.4f} ({held_out}), test loss {test_loss:.4f}")
    print(f"training: {trained / train_seconds:,.0f} samples/s over {len(history.epoch)} epochs "
          f"({wall:.1f} s in all)")
    save(model, save_path, optimizer=opt)
    print(f"checkpoint: {save_path}")
    plot_history(history, plot_path, title=f"{type(model).__name__} on {dataset}")
    print(f"history plot: {plot_path}")
    return 0
