"""Keras-named optimizer settings that become ``dk.optim`` optimizers when the model compiles.

Keras creates an optimizer before the model's weights exist, so these classes only hold the
settings (Keras's argument names and defaults); :meth:`Optimizer.build` makes the matching
``dk.optim.SGD`` / ``Adam`` / ``RMSprop`` over the model's parameters.

    model.compile(optimizer=optimizers.Adam(learning_rate=1e-3), loss="sparse_categorical_crossentropy")
"""
from __future__ import annotations

import math
from typing import Any, Dict, Iterable, Optional, Union

import numpy as np

from .. import optim

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop", "get"]


def _number(value: Any, name: str, low: float = 0.0, high: Optional[float] = None) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {value!r}")
    v = float(value)
    if not math.isfinite(v) or v < low or (high is not None and v >= high):
        bound = f" and < {high:g}" if high is not None else ""
        raise ValueError(f"{name}: expected a finite number >= {low:g}{bound}, got {value!r}")
    return v


class Optimizer:
    """Base class: settings plus :meth:`build`. ``learning_rate`` (or Keras 2's ``lr``)."""

    def __init__(self, learning_rate: float, lr: Optional[float] = None) -> None:
        if lr is not None:  # the name Keras used before 2.3
            learning_rate = lr
        self.learning_rate = _number(learning_rate, "learning_rate")
        if self.learning_rate == 0:
            raise ValueError("learning_rate: expected a positive number, got 0")

    def build(self, params: Iterable[Any]) -> optim.Optimizer:
        """The ``dk.optim`` optimizer with these settings over ``params``."""
        raise NotImplementedError

    def get_config(self) -> Dict[str, Any]:
        return {"learning_rate": self.learning_rate}

    def __repr__(self) -> str:
        settings = ", ".join(f"{k}={v!r}" for k, v in self.get_config().items())
        return f"{type(self).__name__}({settings})"


class SGD(Optimizer):
    """Gradient descent with optional (Nesterov) momentum: Keras's ``SGD(learning_rate=0.01, momentum=0.0)``."""

    def __init__(self, learning_rate: float = 0.01, momentum: float = 0.0, nesterov: bool = False,
                 lr: Optional[float] = None) -> None:
        super().__init__(learning_rate, lr)
        self.momentum = _number(momentum, "momentum", 0.0, 1.0)
        self.nesterov = bool(nesterov)

    def build(self, params: Iterable[Any]) -> optim.Optimizer:
        return optim.SGD(params, lr=self.learning_rate, momentum=self.momentum, nesterov=self.nesterov)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "momentum": self.momentum, "nesterov": self.nesterov}


class Adam(Optimizer):
    """Adam with Keras's defaults: ``learning_rate=0.001, beta_1=0.9, beta_2=0.999, epsilon=1e-7``."""

    def __init__(self, learning_rate: float = 0.001, beta_1: float = 0.9, beta_2: float = 0.999,
                 epsilon: float = 1e-7, lr: Optional[float] = None) -> None:
        super().__init__(learning_rate, lr)
        self.beta_1 = _number(beta_1, "beta_1", 0.0, 1.0)
        self.beta_2 = _number(beta_2, "beta_2", 0.0, 1.0)
        self.epsilon = _number(epsilon, "epsilon")

    def build(self, params: Iterable[Any]) -> optim.Optimizer:
        return optim.Adam(params, lr=self.learning_rate, betas=(self.beta_1, self.beta_2), eps=self.epsilon)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "beta_1": self.beta_1, "beta_2": self.beta_2, "epsilon": self.epsilon}


class RMSprop(Optimizer):
    """RMSprop with Keras's defaults: ``learning_rate=0.001, rho=0.9, epsilon=1e-7``
    (``rho`` is the decay of the squared-gradient average, dk.optim's ``alpha``)."""

    def __init__(self, learning_rate: float = 0.001, rho: float = 0.9, epsilon: float = 1e-7,
                 lr: Optional[float] = None) -> None:
        super().__init__(learning_rate, lr)
        self.rho = _number(rho, "rho", 0.0, 1.0)
        self.epsilon = _number(epsilon, "epsilon")

    def build(self, params: Iterable[Any]) -> optim.Optimizer:
        return optim.RMSprop(params, lr=self.learning_rate, alpha=self.rho, eps=self.epsilon)

    def get_config(self) -> Dict[str, Any]:
        return {**super().get_config(), "rho": self.rho, "epsilon": self.epsilon}


_BY_NAME = {"sgd": SGD, "adam": Adam, "rmsprop": RMSprop}


def get(identifier: Union[str, Optimizer, Dict[str, Any]]) -> Optimizer:
    """An optimizer from a name (``"adam"``, ``"sgd"``, ``"rmsprop"``, Keras's defaults), a
    config dict ``{"class_name": ..., "config": {...}}`` or an instance."""
    if isinstance(identifier, Optimizer):
        return identifier
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is None:
            raise ValueError(f"optimizer: expected one of {', '.join(_BY_NAME)} or an optimizer, got {identifier!r}")
        return cls()
    if isinstance(identifier, dict) and "class_name" in identifier:
        cls = _BY_NAME.get(str(identifier["class_name"]).lower())
        if cls is None:
            raise ValueError(f"optimizer: unknown class {identifier['class_name']!r}")
        return cls(**identifier.get("config", {}))
    raise TypeError(f"optimizer: expected a name, a config dict or a deepkern.keras.optimizers "
                    f"instance, got {type(identifier).__name__}")
