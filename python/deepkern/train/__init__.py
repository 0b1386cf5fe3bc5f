"""Training: ``fit`` / ``evaluate`` / ``predict``, ``History``, callbacks, checkpoints, plots.

Keras's workflow on deepkern's PyTorch-like modules::

    model = dk.models.CNN()
    history = dk.train.fit(model, x_train, y_train, epochs=5, batch_size=64,
                           optimizer="adam", validation_split=0.1,
                           callbacks=[dk.train.EarlyStopping(patience=2, restore_best_weights=True)])
    test_loss, test_acc = dk.train.evaluate(model, x_test, y_test)
    dk.train.plot_history(history, "history.png")
    dk.train.save(model, "model.npz")

Modules: :mod:`.loop` (fit, evaluate, predict), :mod:`.batches` (what counts as data and how
it is batched), :mod:`.callbacks` (History, progress, early stopping, checkpoints per epoch),
:mod:`.checkpoint` (save, load), :mod:`.plots` (plot_history).
"""
from __future__ import annotations

from .batches import BatchSource, is_batch_source
from .callbacks import (Callback, CallbackList, EarlyStopping, EpochLogger, History, ModelCheckpoint, ProgressBar,
                        in_notebook, progress_bar_class)
from .checkpoint import CHECKPOINT_FORMAT, CHECKPOINT_VERSION, load, save
from .loop import _penalty_grads, evaluate, fit, predict  # noqa: F401  (_penalty_grads: old name)
from .plots import plot_history

__all__ = ["fit", "evaluate", "predict", "History", "Callback", "CallbackList", "EarlyStopping", "ModelCheckpoint",
           "EpochLogger", "ProgressBar", "in_notebook", "progress_bar_class", "BatchSource", "is_batch_source", "save",
           "load", "plot_history", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]
