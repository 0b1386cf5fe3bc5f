"""The training loop: ``fit`` / ``evaluate`` / ``predict``.

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

import math
import sys
import time
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import ops
from .._validate import is_real as _is_real
from .._validate import non_negative as _non_negative
from .._validate import positive_int as _positive_int
from ..autograd import Tensor, no_grad, xp_of
from ._common import LossFn
from ._common import check_model as _check_model
from .batches import _as_features, _as_targets, _is_batch_source
from .callbacks import Callback, History, _bar_size, _progress_enabled

__all__ = ["fit", "evaluate", "predict"]

# Learning rates used when the optimizer is given by name and lr is None (Keras's defaults).
_DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3, "rmsprop": 1e-3}
_LOSSES = ("cross_entropy", "mse", "binary_cross_entropy")



def _resolve_loss(loss: Union[str, LossFn]) -> Tuple[str, LossFn]:
    """(kind, function); kind "cross_entropy", "mse", "binary_cross_entropy" or "custom" decides
    how targets are prepared."""
    from .. import nn

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
    from .. import optim

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

