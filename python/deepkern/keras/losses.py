"""Keras loss names and classes, and how the model trains each one on deepkern's kernels.

A softmax output with (sparse) categorical cross-entropy, or a sigmoid output with binary
cross-entropy, is never trained by taking the log of the probabilities: the model hands its
pre-activation outputs (logits) to the fused, numerically stable kernels -- ``dk.ops``'s
log-softmax/cross-entropy, or the log-sigmoid form of binary cross-entropy -- and applies the
softmax/sigmoid only in ``predict``. ``from_logits=True`` says the outputs already are logits.
"""
from __future__ import annotations

from typing import Any, Dict, Optional, Union

__all__ = ["Loss", "SparseCategoricalCrossentropy", "CategoricalCrossentropy", "BinaryCrossentropy",
           "MeanSquaredError", "get", "serialize", "fuses_head"]


class Loss:
    """Base class: which loss, and whether the model's outputs are logits."""

    #: Keras's string name of the loss
    name = ""
    #: the output activation whose probabilities this loss reads (fused away in training)
    head: Optional[str] = None

    def __init__(self, from_logits: bool = False) -> None:
        self.from_logits = bool(from_logits)

    def get_config(self) -> Dict[str, Any]:
        return {"from_logits": self.from_logits}

    def __repr__(self) -> str:
        return f"{type(self).__name__}(from_logits={self.from_logits})"


class SparseCategoricalCrossentropy(Loss):
    """Cross-entropy against integer class labels ``(N,)``."""

    name = "sparse_categorical_crossentropy"
    head = "softmax"


class CategoricalCrossentropy(Loss):
    """Cross-entropy against one-hot targets ``(N, classes)`` (trained as their class indices)."""

    name = "categorical_crossentropy"
    head = "softmax"


class BinaryCrossentropy(Loss):
    """Binary cross-entropy against 0/1 targets, for a sigmoid output."""

    name = "binary_crossentropy"
    head = "sigmoid"


class MeanSquaredError(Loss):
    """Mean squared error between outputs and targets."""

    name = "mean_squared_error"

    def __init__(self) -> None:
        super().__init__(from_logits=False)

    def get_config(self) -> Dict[str, Any]:
        return {}


_BY_NAME = {
    "sparse_categorical_crossentropy": SparseCategoricalCrossentropy,
    "categorical_crossentropy": CategoricalCrossentropy,
    "binary_crossentropy": BinaryCrossentropy,
    "mean_squared_error": MeanSquaredError,
    "mse": MeanSquaredError,
}


def get(identifier: Union[str, Loss, Dict[str, Any]]) -> Loss:
    """A loss from its Keras name, a config dict (from :func:`serialize`) or an instance."""
    if isinstance(identifier, Loss):
        return identifier
    if isinstance(identifier, str):
        cls = _BY_NAME.get(identifier.lower())
        if cls is None:
            raise ValueError(f"loss: expected one of {', '.join(_BY_NAME)} or a deepkern.keras.losses "
                             f"instance, got {identifier!r}")
        return cls()
    if isinstance(identifier, dict) and identifier.get("class_name") in {c.__name__ for c in _BY_NAME.values()}:
        cls = next(c for c in _BY_NAME.values() if c.__name__ == identifier["class_name"])
        return cls(**identifier.get("config", {}))
    raise TypeError(f"loss: expected a name or a deepkern.keras.losses instance, got {type(identifier).__name__}")


def serialize(loss: Loss) -> Dict[str, Any]:
    return {"class_name": type(loss).__name__, "config": loss.get_config()}


# ------------------------------------------------------------------------ training
def fuses_head(loss: Loss, last_activation: Optional[str]) -> bool:
    """Whether training hands the loss the last layer's pre-activation outputs (logits): True
    when that layer's softmax/sigmoid is the one the loss reads (the fused, stable kernels then
    apply it), False for MSE and ``from_logits=True``.

    Raises ValueError for combinations that would mean taking the log of something that is
    not a probability (e.g. cross-entropy without a softmax output and without from_logits).
    """
    if isinstance(loss, MeanSquaredError):
        return False
    if loss.from_logits:
        if last_activation is not None:
            raise ValueError(f"{loss.name} with from_logits=True needs a last layer without activation "
                             f"(logits), but it has activation={last_activation!r}")
        return False
    if last_activation == loss.head:
        return True
    raise ValueError(
        f"{loss.name} reads probabilities from a {loss.head} output, but the last layer has "
        f"activation={last_activation!r}; use activation={loss.head!r} on the last layer, or a "
        f"linear last layer with losses.{type(loss).__name__}(from_logits=True)")
