"""Plots of a training ``History`` (loss and accuracy per epoch)."""
from __future__ import annotations

import os
from typing import Mapping, Optional, Sequence, Union

import numpy as np

from ._common import PathLike
from .callbacks import History

__all__ = ["plot_history"]


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

