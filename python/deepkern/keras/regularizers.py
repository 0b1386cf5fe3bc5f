"""Weight penalties for ``kernel_regularizer=`` / ``bias_regularizer=``: ``l1``, ``l2``, ``l1_l2``.

A regularizer maps a weight Parameter to a differentiable scalar penalty (built with
``dk.optim.l1_penalty`` / ``l2_penalty``); the model adds every layer's penalty to the loss it
trains on, as Keras does, so the reported ``loss`` includes it.
"""
from __future__ import annotations

import math
from typing import Any, Dict, Optional, Union

import numpy as np

from .. import optim
from ..autograd import Tensor

__all__ = ["Regularizer", "L1L2", "L1", "L2", "l1", "l2", "l1_l2", "get", "serialize"]


def _factor(value: Any, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number >= 0, got {value!r}")
    if not math.isfinite(value) or value < 0:
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


class Regularizer:
    """Base class: ``regularizer(weight) -> scalar Tensor`` added to the loss."""

    def __call__(self, weight: Tensor) -> Tensor:
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        return {}


class L1L2(Regularizer):
    """``l1 * sum|w| + l2 * sum w^2`` (Keras's definition: no factor 1/2 on the L2 term)."""

    def __init__(self, l1: float = 0.0, l2: float = 0.0) -> None:
        self.l1 = _factor(l1, "l1")
        self.l2 = _factor(l2, "l2")

    def __call__(self, weight: Tensor) -> Tensor:
        penalty = None
        if self.l1:
            penalty = optim.l1_penalty([weight], self.l1)
        if self.l2:
            term = optim.l2_penalty([weight], self.l2)
            penalty = term if penalty is None else penalty + term
        if penalty is None:  # both zero: a constant 0 that still joins the graph harmlessly
            penalty = optim.l2_penalty([weight], 0.0)
        return penalty

    def get_config(self) -> Dict[str, Any]:
        return {"l1": self.l1, "l2": self.l2}

    def __repr__(self) -> str:
        return f"L1L2(l1={self.l1:g}, l2={self.l2:g})"


def L1(l1: float = 0.01) -> L1L2:  # noqa: N802 - Keras's class-like name
    """``l1 * sum|w|``."""
    return L1L2(l1=l1)


def L2(l2: float = 0.01) -> L1L2:  # noqa: N802 - Keras's class-like name
    """``l2 * sum w^2``."""
    return L1L2(l2=l2)


def l1(l: float = 0.01) -> L1L2:  # noqa: E741 - Keras's argument name
    """``l * sum|w|`` (Keras's ``regularizers.l1(0.01)``)."""
    return L1L2(l1=l)


def l2(l: float = 0.01) -> L1L2:  # noqa: E741 - Keras's argument name
    """``l * sum w^2`` (Keras's ``regularizers.l2(0.01)``)."""
    return L1L2(l2=l)


def l1_l2(l1: float = 0.01, l2: float = 0.01) -> L1L2:
    """Both penalties (Keras's ``regularizers.l1_l2``)."""
    return L1L2(l1=l1, l2=l2)


def get(identifier: Union[None, str, Dict[str, Any], Regularizer]) -> Optional[Regularizer]:
    """A regularizer from None, a name (``"l1"``, ``"l2"``, ``"l1_l2"``: factor 0.01), a config
    dict (from :func:`serialize`) or an instance."""
    if identifier is None or isinstance(identifier, Regularizer):
        return identifier
    if isinstance(identifier, str):
        makers = {"l1": l1, "l2": l2, "l1_l2": l1_l2}
        if identifier.lower() not in makers:
            raise ValueError(f"regularizer: expected one of {', '.join(makers)}, got {identifier!r}")
        return makers[identifier.lower()]()
    if isinstance(identifier, dict):
        config = identifier.get("config", identifier)
        return L1L2(**{k: config[k] for k in ("l1", "l2") if k in config})
    raise TypeError(f"regularizer: expected None, a name, a config dict or a Regularizer, "
                    f"got {type(identifier).__name__}")


def serialize(regularizer: Optional[Regularizer]) -> Optional[Dict[str, Any]]:
    """JSON-ready form of a regularizer (None stays None)."""
    if regularizer is None:
        return None
    if not isinstance(regularizer, L1L2):
        raise TypeError(f"cannot serialise a {type(regularizer).__name__}; only L1L2 penalties are saved")
    return {"class_name": "L1L2", "config": regularizer.get_config()}
