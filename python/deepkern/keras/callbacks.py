"""Keras-style callbacks on top of ``dk.train``'s callback machinery.

``fit`` hands every callback the Keras model as ``self.model``, so Keras idioms work:
``self.model.stop_training = True`` inside ``on_epoch_end`` ends training after that epoch.
Metric names follow the model's ``compile(metrics=...)``; ``"acc"`` and ``"accuracy"`` are
interchangeable when naming what to monitor.
"""
from __future__ import annotations

import os
from typing import Any, Dict, Optional, Union

from .. import train
from ..train.callbacks import _monitored

__all__ = ["Callback", "History", "EarlyStopping", "ModelCheckpoint", "LambdaCallback",
           "LearningRateScheduler"]

Callback = train.Callback
History = train.History


def _canonical(monitor: str) -> str:
    """Keras 1's ``acc`` spelled ``accuracy`` (the logs may use either; see :func:`_aliased`)."""
    if monitor in ("acc", "val_acc"):
        return monitor.replace("acc", "accuracy")
    return monitor


def _aliased(logs: Optional[Dict[str, float]], monitor: str) -> Dict[str, float]:
    """The epoch logs, with ``monitor`` filled from its other spelling (``acc``/``accuracy``,
    which ``compile(metrics=[...])`` chose) when only that one is there."""
    logs = dict(logs or {})
    if monitor not in logs:
        other = monitor[:-len("uracy")] if monitor.endswith("accuracy") else None
        if other is not None and other in logs:
            logs[monitor] = logs[other]
    return logs


class EarlyStopping(train.EarlyStopping):
    """Stop when ``monitor`` stops improving (Keras's arguments and meaning).

    Args:
        monitor: ``"val_loss"`` (default), ``"val_accuracy"``, ``"loss"``, ...
        min_delta: smallest change counted as an improvement.
        patience: epochs without improvement before stopping.
        verbose: 1 prints a line when training stops early.
        mode: ``"auto"``, ``"min"`` or ``"max"``.
        restore_best_weights: put back the best epoch's weights at the end.
    """

    def __init__(self, monitor: str = "val_loss", min_delta: float = 0.0, patience: int = 0,
                 verbose: int = 0, mode: str = "auto", restore_best_weights: bool = False) -> None:
        super().__init__(monitor=_canonical(monitor), patience=patience, min_delta=min_delta,
                         mode=mode, restore_best_weights=restore_best_weights)
        self.verbose = int(verbose)

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        super().on_epoch_end(epoch, _aliased(logs, self.monitor))

    def on_train_end(self, logs: Optional[Dict[str, float]] = None) -> None:
        super().on_train_end(logs)
        if self.verbose and self.stopped_epoch is not None:
            print(f"Epoch {self.stopped_epoch + 1}: early stopping")


class ModelCheckpoint(train.Callback):
    """Save the whole Keras model (``model.save``) after epochs.

    Args:
        filepath: where to write; ``str.format`` fields from the epoch (1-based) and logs
            are filled in, e.g. ``"model-{epoch:02d}-{val_loss:.3f}.npz"``.
        monitor, mode: what ``save_best_only`` compares (as in :class:`EarlyStopping`).
        save_best_only: write only when ``monitor`` improved.
        save_weights_only: write only the weights (``model.save_weights``).
        verbose: 1 prints a line per save.
    """

    rank_zero_only = True  # data-parallel: one writer

    def __init__(self, filepath: Union[str, "os.PathLike[str]"], monitor: str = "val_loss",
                 verbose: int = 0, save_best_only: bool = False, save_weights_only: bool = False,
                 mode: str = "auto") -> None:
        super().__init__()
        self.filepath = os.fspath(filepath)
        self.monitor = _canonical(monitor)
        self.verbose = int(verbose)
        self.save_best_only = bool(save_best_only)
        self.save_weights_only = bool(save_weights_only)
        if mode not in ("auto", "min", "max"):
            raise ValueError(f"mode: expected 'auto', 'min' or 'max', got {mode!r}")
        self.mode = ("max" if "acc" in self.monitor else "min") if mode == "auto" else mode
        self.best: Optional[float] = None

    def on_train_begin(self, logs: Optional[Dict[str, float]] = None) -> None:
        self.best = None

    def on_epoch_end(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        logs = _aliased(logs, self.monitor)
        if self.save_best_only:
            value = _monitored(logs, self.monitor, "ModelCheckpoint")
            if self.best is not None and not (value < self.best if self.mode == "min" else value > self.best):
                return
            self.best = value
        path = self.filepath.format(epoch=epoch + 1, **logs) if "{" in self.filepath else self.filepath
        if self.save_weights_only:
            self.model.save_weights(path)
        else:
            self.model.save(path)
        if self.verbose:
            print(f"Epoch {epoch + 1}: saved model to {path}")


class LambdaCallback(train.Callback):
    """A callback from plain functions: ``LambdaCallback(on_epoch_end=lambda epoch, logs: ...)``."""

    def __init__(self, on_epoch_begin: Any = None, on_epoch_end: Any = None,
                 on_train_begin: Any = None, on_train_end: Any = None) -> None:
        super().__init__()
        for name, fn in (("on_epoch_begin", on_epoch_begin), ("on_epoch_end", on_epoch_end),
                         ("on_train_begin", on_train_begin), ("on_train_end", on_train_end)):
            if fn is not None:
                if not callable(fn):
                    raise TypeError(f"{name}: expected a callable, got {type(fn).__name__}")
                setattr(self, name, fn)


class LearningRateScheduler(train.Callback):
    """Set the learning rate before each epoch: ``schedule(epoch, lr) -> new lr`` (Keras's
    signature; ``epoch`` counts from 0, ``lr`` is the current rate)."""

    def __init__(self, schedule: Any, verbose: int = 0) -> None:
        super().__init__()
        if not callable(schedule):
            raise TypeError(f"schedule: expected a callable (epoch, lr) -> lr, got {type(schedule).__name__}")
        self.schedule = schedule
        self.verbose = verbose

    def on_epoch_begin(self, epoch: int, logs: Optional[Dict[str, float]] = None) -> None:
        lr = float(self.schedule(epoch, float(self.optimizer.lr)))
        self.optimizer.lr = lr  # the optimizer validates it (a finite, non-negative number)
        if self.verbose:
            print(f"Epoch {epoch + 1}: LearningRateScheduler setting learning rate to {lr:g}.")
