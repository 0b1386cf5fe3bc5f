"""``deepkern.torch.utils.data``: ``Dataset``, ``TensorDataset`` and ``DataLoader`` as in PyTorch.

``DataLoader`` batches any map-style dataset (``__getitem__`` + ``__len__``), shuffling with the
generator ``torch.manual_seed`` seeds. Datasets that can fetch a whole batch at once define
``_batch(indices)`` (``TensorDataset`` slices its tensors; ``torchvision.datasets.MNIST``
applies its transforms to the whole batch); others are fetched item by item and stacked.
"""
from __future__ import annotations

import math
from typing import Any, Callable, Iterator, List, Optional, Sequence

import numpy as np

from ...autograd import Tensor as _CoreTensor
from ...nn import init as _init
from .._tensor import Tensor

__all__ = ["Dataset", "TensorDataset", "DataLoader", "default_collate"]


class Dataset:
    """Map-style dataset: subclasses define ``__getitem__(index)`` and ``__len__()``."""

    def __getitem__(self, index: int) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define __getitem__")

    def __len__(self) -> int:
        raise NotImplementedError(f"{type(self).__name__} must define __len__")


def _as_tensor(x: Any) -> Tensor:
    if isinstance(x, Tensor):
        return x
    t = Tensor(x.data if isinstance(x, _CoreTensor) else x)
    return t


class TensorDataset(Dataset):
    """Samples are the ``i``-th rows of the given tensors (all of the same length)."""

    def __init__(self, *tensors: Any) -> None:
        if not tensors:
            raise ValueError("TensorDataset: expected at least one tensor")
        self.tensors = tuple(_as_tensor(t) for t in tensors)
        n = len(self.tensors[0])
        for i, t in enumerate(self.tensors):
            if len(t) != n:
                raise ValueError(f"tensors[{i}]: has {len(t)} rows, tensors[0] has {n}")

    def __getitem__(self, index: int) -> tuple:
        return tuple(t[index] for t in self.tensors)

    def __len__(self) -> int:
        return len(self.tensors[0])

    def _batch(self, indices: np.ndarray) -> tuple:
        return tuple(Tensor._wrap(t.data.view(np.ndarray)[indices]) for t in self.tensors)


def _stack(items: List[Any]) -> Any:
    first = items[0]
    if isinstance(first, _CoreTensor):
        return Tensor._wrap(np.stack([np.asarray(t.data) for t in items]))
    if isinstance(first, np.ndarray):
        return Tensor(np.stack(items))
    if isinstance(first, (bool, np.bool_)):
        return Tensor._wrap(np.asarray(items, dtype=np.bool_))
    if isinstance(first, (int, np.integer)):
        return Tensor._wrap(np.asarray(items, dtype=np.int64))
    if isinstance(first, (float, np.floating)):
        return Tensor(np.asarray(items, dtype=np.float32))
    if isinstance(first, (tuple, list)):
        return type(first)(_stack(list(field)) for field in zip(*items))
    raise TypeError(f"default_collate: cannot batch samples of type {type(first).__name__}")


def default_collate(batch: Sequence[Any]) -> Any:
    """Stack a list of samples field by field: tensors/arrays along a new axis 0, ints to int64."""
    return _stack(list(batch))


class DataLoader:
    """Iterate a dataset in mini-batches.

    Args:
        dataset: a map-style dataset.
        batch_size: samples per batch (the last one may be smaller unless ``drop_last``).
        shuffle: a fresh permutation every epoch (from the ``torch.manual_seed`` generator).
        drop_last: skip the final incomplete batch.
        collate_fn: turns a list of samples into a batch (default :func:`default_collate`).
        num_workers: accepted for compatibility; loading happens in the calling thread.
    """

    def __init__(self, dataset: Any, batch_size: Optional[int] = 1, shuffle: bool = False,
                 drop_last: bool = False, collate_fn: Optional[Callable[[List[Any]], Any]] = None,
                 num_workers: int = 0, **_: Any) -> None:
        if isinstance(batch_size, bool) or not isinstance(batch_size, (int, np.integer)) or batch_size < 1:
            raise ValueError(f"batch_size: expected a positive int, got {batch_size!r}")
        self.dataset = dataset
        self.batch_size = int(batch_size)
        self.shuffle = bool(shuffle)
        self.drop_last = bool(drop_last)
        self.collate_fn = collate_fn

    def __len__(self) -> int:
        n = len(self.dataset)
        return n // self.batch_size if self.drop_last else math.ceil(n / self.batch_size)

    def __iter__(self) -> Iterator[Any]:
        n = len(self.dataset)
        order = _init.get_generator().permutation(n) if self.shuffle else np.arange(n)
        fast = self.collate_fn is None and hasattr(self.dataset, "_batch")
        for b in range(len(self)):
            indices = order[b * self.batch_size:(b + 1) * self.batch_size]
            if fast:
                yield self.dataset._batch(indices)
            else:
                collate = self.collate_fn or default_collate
                yield collate([self.dataset[int(i)] for i in indices])
