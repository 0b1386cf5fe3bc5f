"""``deepkern.torch.utils``: ``utils.data`` (Dataset, TensorDataset, DataLoader)."""
from __future__ import annotations

from . import data

__all__ = ["data"]
