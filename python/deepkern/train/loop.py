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

import contextlib
import math
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import distributed as _distributed
from .. import nn
from .. import ops
from .._device import canonical_device, device_name, to_device, to_host
from .._precision import precision as precision_block
from .._validate import is_real as _is_real
from .._validate import non_negative as _non_negative
from .._validate import positive_int as _positive_int
from ..autograd import Tensor, no_grad
from ._common import LossFn
from ._common import check_model as _check_model
from .batches import ArrayBatches, BatchSource, SourceBatches, _as_features, _as_targets, is_batch_source
from .callbacks import Callback, CallbackList, History, ProgressBar, _progress_enabled

__all__ = ["fit", "evaluate", "predict"]

# Learning rates used when the optimizer is given by name and lr is None (Keras's defaults).
_DEFAULT_LR = {"sgd": 0.01, "adam": 1e-3, "rmsprop": 1e-3}
_LOSSES = ("cross_entropy", "mse", "binary_cross_entropy")


def _resolve_loss(loss: Union[str, LossFn]) -> Tuple[str, LossFn]:
    """(kind, function); kind "cross_entropy", "mse", "binary_cross_entropy" or "custom" decides
    how targets are prepared."""
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


def _place_model(device: str, model: Any) -> str:
    """Move the model to ``device`` ("cpu", "cuda" or "cuda:N"); returns the canonical name.
    A GPU without a usable backend raises RuntimeError naming the reason."""
    try:
        device = canonical_device(device)
    except (TypeError, ValueError):
        raise ValueError(f"device must be 'cpu', 'cuda' or 'cuda:N', got {device!r}") from None
    if hasattr(model, "to"):
        model.to(device)
    return device


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


def _weight_penalty(params: Sequence[Any], l1: float, l2: float) -> Optional[Tensor]:
    """``l1 * sum|w| + l2 * sum w^2`` over the weights (rank >= 2; biases are not penalised, as
    in Keras's kernel regularizers), as a Tensor in the graph: the one way penalties are applied
    (``dk.optim.l1_penalty`` / ``l2_penalty``, as the Keras regularizers do). None when both are 0."""
    from .. import optim

    if not (l1 or l2):
        return None
    weights = [p for p in params if p.data.ndim >= 2]
    if not weights:
        return None
    total = optim.l1_penalty(weights, l1) if l1 else None
    if l2:
        term = optim.l2_penalty(weights, l2)
        total = term if total is None else total + term
    return total


def _penalty_grads(params: Sequence[Any], l1: float, l2: float) -> float:
    """Add the penalty's gradient to each weight's ``.grad`` (through the graph, as ``fit`` does);
    returns the penalty's value. Parameters without a gradient are left alone."""
    penalty = _weight_penalty([p for p in params if p.grad is not None], l1, l2)
    if penalty is None:
        return 0.0
    penalty.backward()
    return float(penalty.item())


# ---------------------------------------------------------------------------------------------
# fit / evaluate / predict
# ---------------------------------------------------------------------------------------------
def _evaluate_arrays(model: Any, x: Any, y: Any, loss_fn: LossFn, loss_kind: str,
                     batch_size: int, with_accuracy: bool) -> Tuple[float, float]:
    """Mean loss and accuracy over (x, y) in inference mode, without recording the graph."""
    total_loss = 0.0
    correct = 0
    n = len(x)
    with _inference(model):
        for start in range(0, n, batch_size):
            xb, yb = x[start:start + batch_size], y[start:start + batch_size]
            out = model(Tensor(xb))
            total_loss += float(loss_fn(out, yb).item()) * len(xb)
            if with_accuracy:
                correct += _correct(out.data, yb, loss_kind)
    return total_loss / n, (correct / n if with_accuracy else math.nan)


@contextlib.contextmanager
def _inference(model: Any) -> Iterator[None]:
    """No graph, and the model in eval mode for this thread only (nn.eval_mode: another thread
    may be training it); a model that is not a dk.nn.Module is switched with eval()/train()."""
    if isinstance(model, nn.Module):
        with no_grad(), nn.eval_mode():
            yield
        return
    was_training = getattr(model, "training", True)
    if hasattr(model, "eval"):
        model.eval()
    try:
        with no_grad():
            yield
    finally:
        if hasattr(model, "train"):
            model.train(was_training)


def _check_fit_options(epochs: Any, batch_size: Any, validation_split: Any, l1: Any, l2: Any, lr: Any,
                       shuffle: Any, seed: Any, callbacks: Any) -> Tuple[int, int, float, float, List[Callback]]:
    """fit's scalar options checked once: (epochs, batch_size, l1, l2, callbacks)."""
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
    callbacks = list(callbacks or [])
    for cb in callbacks:
        if not isinstance(cb, Callback):
            raise TypeError(f"callbacks must be Callback instances, got {type(cb).__name__}")
    return epochs, batch_size, l1, l2, callbacks


class _FitData:
    """fit's inputs sorted out: the training batches and the validation arrays (or None)."""

    def __init__(self, X: Any, y: Any, loss_kind: str, validation_split: float,
                 validation_data: Optional[Tuple[Any, Any]]) -> None:
        self.source = X if is_batch_source(X) else None
        if self.source is None:
            x_all = _as_features(X, "X")
            y_all = _as_targets(y, len(x_all), loss_kind, "y")
            # a source's targets are first seen in its first batch
            self.with_accuracy: Optional[bool] = _has_accuracy(y_all, loss_kind)
        else:
            if y is not None:
                raise ValueError("y must be None when X is a batch source yielding (x, y) pairs")
            if validation_split and validation_data is None:
                raise ValueError("validation_split needs arrays; give a batch source validation_data instead")
            x_all = y_all = None
            self.with_accuracy = None
        self.x_train, self.y_train = x_all, y_all
        self.x_val = self.y_val = None
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) != 2:
                raise ValueError("validation_data must be a pair (X_val, y_val)")
            self.x_val = _as_features(validation_data[0], "validation_data[0]")
            self.y_val = _as_targets(validation_data[1], len(self.x_val), loss_kind, "validation_data[1]")
            if x_all is not None and self.x_val.shape[1:] != x_all.shape[1:]:
                raise ValueError(f"validation_data[0]: samples of shape {self.x_val.shape[1:]} do not match "
                                 f"X's {x_all.shape[1:]}")
        elif validation_split > 0:
            n_train = int(len(x_all) * (1.0 - validation_split))
            if n_train < 1 or n_train == len(x_all):
                raise ValueError(f"validation_split={validation_split} of {len(x_all)} samples leaves "
                                 f"{n_train} for training and {len(x_all) - n_train} for validation; "
                                 f"both need at least one")
            # the tail, as Keras takes it; slices, not copies
            self.x_train, self.y_train = x_all[:n_train], y_all[:n_train]
            self.x_val, self.y_val = x_all[n_train:], y_all[n_train:]

    def batches(self, loss_kind: str, batch_size: int, shuffle: bool, seed: Optional[int],
                device: str, shard: Any = None) -> BatchSource:
        if self.source is not None:
            return SourceBatches(self.source, loss_kind, device)
        return ArrayBatches(self.x_train, self.y_train, batch_size, shuffle, np.random.default_rng(seed), device,
                            shard)

    def validation(self, device: str) -> Optional[Tuple[Any, Any]]:
        if self.x_val is None:
            return None
        return to_device(self.x_val, device), to_device(self.y_val, device)


def fit(model: Any, X: Any, y: Any, epochs: int = 10, batch_size: int = 32,
        optimizer: Any = "adam", loss: Union[str, LossFn] = "cross_entropy", lr: Optional[float] = None,
        validation_split: float = 0.0, validation_data: Optional[Tuple[Any, Any]] = None,
        shuffle: bool = True, callbacks: Optional[Iterable[Callback]] = None, seed: Optional[int] = 0,
        progress: Optional[bool] = None, l1: float = 0.0, l2: float = 0.0,
        device: str = "cpu", distributed: Optional[bool] = None, precision: Optional[str] = None) -> History:
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
        distributed: train data-parallel over MPI ranks (see ``dk.distributed``); None (the
            default) does so when launched by ``mpiexec`` with several ranks. ``batch_size`` is
            then per rank, every rank trains on its shard of each epoch's permutation, metrics
            are averaged over the ranks and only rank 0 shows progress and runs the
            ``rank_zero_only`` callbacks (checkpoints, epoch lines). A batch source is used as
            given on each rank: build each rank's from its share, e.g.
            ``gen.flow(*dk.distributed.shard(x, y), seed=dk.distributed.rank_seed(0))``
            (every rank must yield the same number of batches).
        precision: ``"fp32"`` or ``"bf16"`` matmul products for this run (see
            ``dk.set_precision``; bf16 needs a CPU with AVX512-BF16, else RuntimeError);
            None keeps the current setting. Weights and optimizer state stay fp32.

    Returns:
        History with per-epoch ``loss``, ``accuracy``, ``val_loss``, ``val_accuracy``.
    """
    _check_model(model)
    with (contextlib.nullcontext() if precision is None else precision_block(precision)):
        return _fit(model, X, y, epochs, batch_size, optimizer, loss, lr, validation_split, validation_data,
                    shuffle, callbacks, seed, progress, l1, l2, device, distributed)


def _fit(model: Any, X: Any, y: Any, epochs: int, batch_size: int, optimizer: Any, loss: Union[str, LossFn],
         lr: Optional[float], validation_split: float, validation_data: Optional[Tuple[Any, Any]],
         shuffle: bool, callbacks: Optional[Iterable[Callback]], seed: Optional[int],
         progress: Optional[bool], l1: float, l2: float, device: str, distributed: Optional[bool]) -> History:
    epochs, batch_size, l1, l2, user_callbacks = _check_fit_options(
        epochs, batch_size, validation_split, l1, l2, lr, shuffle, seed, callbacks)
    show_progress = _progress_enabled(progress)
    loss_kind, loss_fn = _resolve_loss(loss)
    data = _FitData(X, y, loss_kind, validation_split, validation_data)
    device = _place_model(device, model)
    optimizer = _resolve_optimizer(optimizer, model, lr)
    params = list(model.parameters())
    dp = _distributed.fit_session(distributed, model, optimizer, params,  # None: one process
                                  batches=None if data.source is None else len(data.source))
    if dp is not None:
        seed = dp.agree_seed(seed)
        show_progress = show_progress and dp.is_root
        user_callbacks = dp.callbacks(user_callbacks)
        data.x_val, data.y_val = dp.shard_validation(data.x_val, data.y_val)
    batches = data.batches(loss_kind, batch_size, shuffle, seed, device, None if dp is None else dp.shard)
    validation = data.validation(device)

    history = History()
    callbacks = CallbackList([history] + ([ProgressBar()] if show_progress else []) + user_callbacks)
    callbacks.set_run(model, optimizer, {
        "epochs": epochs, "samples": getattr(batches, "n", None),
        "batch_size": getattr(batches, "batch_size", None),
        "validation_samples": 0 if validation is None else len(validation[0]),
        "optimizer": type(optimizer).__name__, "loss": loss_kind, "device": device})
    step = _TrainStep(model, optimizer, loss_fn, loss_kind, lambda: _weight_penalty(params, l1, l2))
    step.with_accuracy = data.with_accuracy
    if dp is not None:
        step.after_backward, step.ranks = dp.gradients_ready, dp.size
    callbacks.on_train_begin({})
    logs: Dict[str, float] = {}
    for epoch in range(epochs):
        callbacks.on_epoch_begin(epoch, {})
        logs = step.run_epoch(batches, callbacks)
        if validation is not None:
            val_loss, val_acc = _evaluate_arrays(model, validation[0], validation[1], loss_fn, loss_kind,
                                                 max(batch_size, 256), bool(step.with_accuracy))
            logs["val_loss"] = val_loss
            if step.with_accuracy:
                logs["val_accuracy"] = val_acc
        if dp is not None:
            logs, _ = dp.average_logs(logs, step.seen, 0 if validation is None else len(validation[0]))
        callbacks.on_epoch_end(epoch, logs)
        stop = callbacks.stop_training
        if dp is not None:
            stop = dp.agree(stop)  # rank 0's decision everywhere
        if stop:
            break
    callbacks.on_train_end(logs)
    if dp is not None:
        dp.close()
    return history


class _TrainStep:
    """One epoch of updates: forward, loss (+ penalty), backward, step, per batch; running
    metrics go to the callbacks after each batch.

    Data-parallel: ``after_backward`` waits for the gradients averaged over the ranks, and
    ``ranks`` scales the batch sizes the callbacks see (every rank's batch has the same size)."""

    def __init__(self, model: Any, optimizer: Any, loss_fn: LossFn, loss_kind: str, penalty: Any) -> None:
        self.model, self.optimizer, self.loss_fn, self.loss_kind = model, optimizer, loss_fn, loss_kind
        self.penalty = penalty
        self.with_accuracy: Optional[bool] = None
        self.after_backward: Optional[Callable[[], None]] = None
        self.ranks = 1
        self.seen = 0

    def run_epoch(self, batches: BatchSource, callbacks: CallbackList) -> Dict[str, float]:
        self.model.train()
        total_loss, correct, seen = 0.0, 0, 0
        logs: Dict[str, float] = {}
        for i, (xb, yb) in enumerate(batches):
            if self.with_accuracy is None:
                self.with_accuracy = _has_accuracy(yb, self.loss_kind)
            self.optimizer.zero_grad()
            out = self.model(Tensor(xb))
            batch_loss = self.loss_fn(out, yb)
            penalty = self.penalty()
            if penalty is not None:
                batch_loss = batch_loss + penalty
            batch_loss.backward()
            if self.after_backward is not None:
                self.after_backward()
            self.optimizer.step()
            total_loss += float(batch_loss.item()) * len(xb)
            if self.with_accuracy:
                correct += _correct(out.data, yb, self.loss_kind)
            seen += len(xb)
            logs = {"loss": total_loss / seen}
            if self.with_accuracy:
                logs["accuracy"] = correct / seen
            callbacks.on_train_batch_end(i, dict(logs, size=len(xb) * self.ranks))
        self.seen = seen
        return logs


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
    chunks: List[np.ndarray] = []
    with _inference(model):
        for start in range(0, len(x), batch_size):
            out = model(Tensor(x[start:start + batch_size])).data
            if proba:
                out = ops.softmax(out, axis=-1)
            chunks.append(to_host(out))
    return np.concatenate(chunks, axis=0)


def _to_model_device(model: Any, arr: np.ndarray) -> Any:
    """``arr`` on the device of the model's first parameter (host when it has none)."""
    params = list(model.parameters())
    return to_device(arr, device_name(params[0].data)) if params else arr
