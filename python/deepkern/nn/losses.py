"""Loss modules: CrossEntropyLoss (softmax + negative log-likelihood, fused) and MSELoss."""
from __future__ import annotations

from typing import Any

from ..autograd import Tensor
from . import functional as F
from .module import Module

__all__ = ["CrossEntropyLoss", "MSELoss"]


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
