"""Loss modules: CrossEntropyLoss (softmax + negative log-likelihood, fused) and MSELoss."""
from __future__ import annotations

from typing import Any

from ..autograd import Tensor
from . import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss"]


class CrossEntropyLoss(Module):
    """``loss(logits, labels)``: mean cross-entropy of logits (N, C) against integer labels (N,).

    Takes logits, not probabilities: the softmax is part of the fused kernel.
    """

    def forward(self, logits: Tensor, labels: Any) -> Tensor:
        return F.cross_entropy(logits, labels)


class MSELoss(Module):
    """``loss(pred, target)``: mean (or, with reduction="sum", summed) squared error."""

    def __init__(self, reduction: str = "mean") -> None:
        super().__init__()
        if reduction not in ("mean", "sum"):
            raise ValueError(f"reduction: expected 'mean' or 'sum', got {reduction!r}")
        self.reduction = reduction

    def forward(self, pred: Tensor, target: Any) -> Tensor:
        return F.mse_loss(pred, target, self.reduction)

    def extra_repr(self) -> str:
        return f"reduction={self.reduction!r}"


class BCEWithLogitsLoss(Module):
    """``loss(logits, targets)``: mean binary cross-entropy of ``sigmoid(logits)`` against targets
    in [0, 1] of the same shape, computed stably from the logits (the sigmoid is part of the loss)."""

    def forward(self, logits: Tensor, targets: Any) -> Tensor:
        return F.binary_cross_entropy_with_logits(logits, targets)
