"""Training callbacks: ``History``, ``ProgressBar``, ``EarlyStopping``, ``ModelCheckpoint``, ``EpochLogger``.

``fit`` calls each callback's hooks at the start and end of training, of every epoch and after
every batch; its own ``History`` and progress bar are callbacks like the user's, as in Keras.
"""
from __future__ import annotations

import difflib
import math
import os
import sys
import time
from collections import OrderedDict
from typing import Any, Callable, Dict, List, Mapping, Optional, Sequence

import numpy as np

from .._validate import is_real as _is_real
from ._common import PathLike
from .checkpoint import save

__all__ = ["History", "Callback", "CallbackList", "EarlyStopping", "ModelCheckpoint", "EpochLogger", "ProgressBar",
           "in_notebook", "progress_bar_class"]


class Callback:
    """Base class of training callbacks; override the hooks you need.

    ``fit`` sets ``model``, ``optimizer`` and ``params`` before ``on_train_begin``. ``logs`` at
    epoch end holds the epoch's metrics (``loss``, ``accuracy`` and, with validation data,
    ``val_loss``, ``val_accuracy``). Setting ``self.stop_training = True`` ends training after
    the current epoch. In data-parallel training every rank runs the callbacks (with the same
    averaged logs) except those with ``rank_zero_only = True``, which run on rank 0 alone.
    """

    rank_zero_only = False

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

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, float]] = None) -> None:
        """Called after each update with the epoch's running ``loss`` (and ``accuracy``) and the
        batch's ``size``."""


class _EpochRate:
    """Samples per second of an epoch's updates: from the epoch's start to its last batch."""

    def __init__(self) -> None:
        self.start = self.end = 0.0
        self.seen = 0

    def begin(self) -> None:
        self.start = self.end = time.perf_counter()
        self.seen = 0

    def batch(self, size: int) -> None:
        self.seen += int(size)
        self.end = time.perf_counter()

    def per_second(self) -> float:
        elapsed = self.end - self.start
        return self.seen / elapsed if elapsed > 0 else math.inf


class CallbackList:
    """The callbacks of one ``fit`` call, called in order; ``stop_training`` when any asked."""

    def __init__(self, callbacks: Sequence[Callback]) -> None:
        self.callbacks = list(callbacks)

    def set_run(self, model: Any, optimizer: Any, params: Dict[str, Any]) -> None:
        for cb in self.callbacks:
            cb.model, cb.optimizer, cb.params = model, optimizer, dict(params)
            cb.stop_training = False

    @property
    def stop_training(self) -> bool:
        return any(cb.stop_training for cb in self.callbacks)

    def on_train_begin(self, logs: Dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_train_begin(dict(logs))

    def on_train_end(self, logs: Dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_train_end(dict(logs))

    def on_epoch_begin(self, epoch: int, logs: Dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_begin(epoch, dict(logs))

    def on_epoch_end(self, epoch: int, logs: Dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_epoch_end(epoch, dict(logs))

    def on_train_batch_end(self, batch: int, logs: Dict[str, float]) -> None:
        for cb in self.callbacks:
            cb.on_train_batch_end(batch, logs)




class History(Callback):
    """Per-epoch metrics of one ``fit`` call, like Keras's ``History``.

    Attributes:
        history: ``{"loss": [...], "accuracy": [...], "val_loss": [...], "val_accuracy": [...]}``
            (the ``val_*`` keys only when fit had validation data); ``loss`` includes the
            L1/L2 penalty when one was set, ``val_loss`` is the data loss alone.
        epoch: the 0-based indices of the epochs that ran.
        samples_per_second: training throughput of each epoch (forward, backward, update; the
            validation pass excluded).
        params: the settings of the run (epochs, batch_size, samples, validation samples, ...).
    """

    def __init__(self) -> None:
        super().__init__()
        self.history: Dict[str, List[float]] = OrderedDict()
        self.epoch: List[int] = []
        self.samples_per_second: List[float] = []
        self._rate = _EpochRate()

    # as a callback (fit adds one first, so it records before the others see the epoch)
    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        self._rate.begin()

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, float]] = None) -> None:
        self._rate.batch((logs or {}).get("size", 0))

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        self._record(epoch, logs or {}, self._rate.per_second())

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


def _resolve_mode(mode: str, monitor: str, owner: str) -> str:
    if mode not in ("auto", "min", "max"):
        raise ValueError(f"{owner}: mode must be 'auto', 'min' or 'max', got {mode!r}")
    if mode == "auto":
        return "max" if "acc" in monitor else "min"
    return mode


def _monitored(logs: Optional[Mapping[str, float]], monitor: str, owner: str) -> float:
    logs = logs or {}
    if monitor not in logs:
        validation = monitor.startswith("val_")
        same_kind = [key for key in logs if key.startswith("val_") == validation]
        close = difflib.get_close_matches(monitor, same_kind, n=1)
        if validation and not same_kind:
            hint = " (validation metrics need fit() validation_split or validation_data)"
        else:
            hint = f"; did you mean {close[0]!r}?" if close else ""
        raise ValueError(f"{owner} monitors {monitor!r}, which is not among the available metrics: "
                         f"{', '.join(logs) or 'none'}{hint}")
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

    rank_zero_only = True  # data-parallel: one writer

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

    rank_zero_only = True

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



def in_notebook() -> bool:
    """True inside a Jupyter (IPython kernel) session, whose output shows progress bars."""
    return "ipykernel" in sys.modules


def progress_bar_class() -> Any:
    """tqdm's notebook widget in Jupyter when ipywidgets is importable, else the plain text bar.

    (``tqdm.auto`` in a notebook without ipywidgets warns "IProgress not found" and falls back
    to the text bar; choosing it here gives the same bar without the warning.)
    """
    if in_notebook():
        try:
            import ipywidgets  # noqa: F401 - only asking whether the widget can be drawn
            from tqdm.notebook import tqdm
            return tqdm
        except ImportError:
            pass
    from tqdm.std import tqdm
    return tqdm


def _progress_enabled(progress: Optional[bool]) -> bool:
    if progress is None:
        isatty = getattr(sys.stdout, "isatty", None)
        return bool(isatty and isatty()) or in_notebook()
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


class ProgressBar(Callback):
    """A tqdm bar per epoch (samples done, running loss and accuracy; at the end the epoch's
    metrics and samples/s). ``fit(progress=True)`` adds one; by default only on a terminal."""

    def __init__(self) -> None:
        super().__init__()
        self._bar: Any = None
        self._rate = _EpochRate()

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        bar = progress_bar_class()
        self._bar = bar(total=self.params.get("samples"), desc=f"Epoch {epoch + 1}/{self.params.get('epochs')}",
                        unit="samples", unit_scale=False, leave=True, file=sys.stdout, **_bar_size())
        self._rate.begin()

    def on_train_batch_end(self, batch: int, logs: Optional[Dict[str, float]] = None) -> None:
        logs = logs or {}
        self._rate.batch(logs.get("size", 0))
        if self._bar is None:
            return
        self._bar.update(int(logs.get("size", 0)))
        postfix = {"loss": f"{logs.get('loss', math.nan):.4f}"}
        if "accuracy" in logs:
            postfix["acc"] = f"{logs['accuracy']:.4f}"
        self._bar.set_postfix(postfix, refresh=False)

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        if self._bar is None:
            return
        postfix = {k.replace("accuracy", "acc"): f"{v:.4f}" for k, v in (logs or {}).items()}
        postfix["samples/s"] = f"{self._rate.per_second():,.0f}"
        self._bar.set_postfix(postfix, refresh=True)
        self._bar.close()
        self._bar = None

    def on_train_end(self, logs: Optional[Dict[str, float]] = None) -> None:
        if self._bar is not None:  # a stop or an exception left one open
            self._bar.close()
            self._bar = None
