"""Which samples each rank trains on, and per-rank random streams.

The rule, used by ``fit`` and by :class:`DistributedSampler` alike: every rank holds the same
order of the ``n`` sample indices (the same permutation, drawn from the shared seed, each
epoch); rank ``r`` of ``N`` takes positions ``r, r + N, r + 2N, ...``.

**Remainder**: the last ``n % N`` positions of the order are left out, so every rank has
exactly ``n // N`` samples and takes the same number of steps (each step is a collective,
so the counts must match). As the permutation changes every epoch, a different handful of
at most ``N - 1`` samples sits out each epoch; no sample is dropped for good. With
``shuffle=False`` the order is ``0 .. n-1`` and the same samples sit out every epoch.

Batch ``k`` of every rank together is then exactly batch ``k`` of a single process whose
batch is ``N`` times larger (the interleaved positions ``N*k*b .. N*(k+1)*b - 1`` of the same
order), which is what makes 2 ranks with batch ``B/2`` reproduce 1 rank with batch ``B``.
"""
from __future__ import annotations

from typing import Any, Iterator, Optional, Tuple

import numpy as np

from . import _world

__all__ = ["shard_indices", "DistributedSampler", "shard", "rank_seed"]


def _rank_and_size(rank: Optional[int], world_size: Optional[int]) -> Tuple[int, int]:
    size = _world.world_size() if world_size is None else int(world_size)
    r = _world.rank() if rank is None else int(rank)
    if size < 1 or not 0 <= r < size:
        raise ValueError(f"rank must be in [0, world_size) and world_size >= 1, got rank {r}, world_size {size}")
    return r, size


def shard_indices(order: Any, rank: Optional[int] = None, world_size: Optional[int] = None) -> Any:
    """This rank's positions of ``order`` (a 1-D index array): ``order[r:n - n % N:N]``."""
    r, size = _rank_and_size(rank, world_size)
    usable = len(order) - len(order) % size
    return order[r:usable:size]


class DistributedSampler:
    """Each rank's sample indices for one epoch, like PyTorch's ``DistributedSampler``.

    ``set_epoch(e)`` before each epoch; iterating yields this rank's ``n // world_size``
    indices of the epoch's permutation (drawn from ``(seed, epoch)``, identical on every rank).
    See the module docstring for the remainder rule.
    """

    def __init__(self, n: int, rank: Optional[int] = None, world_size: Optional[int] = None,
                 seed: int = 0, shuffle: bool = True) -> None:
        if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 0:
            raise ValueError(f"n must be an int >= 0, got {n!r}")
        if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
            raise ValueError(f"seed must be an int >= 0 (the same on every rank), got {seed!r}")
        self.n = int(n)
        self.rank, self.world_size = _rank_and_size(rank, world_size)
        self.seed = int(seed)
        self.shuffle = bool(shuffle)
        self.epoch = 0

    def set_epoch(self, epoch: int) -> None:
        self.epoch = int(epoch)

    def indices(self) -> np.ndarray:
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.n) if self.shuffle
                 else np.arange(self.n))
        return shard_indices(order, self.rank, self.world_size)

    def __iter__(self) -> Iterator[int]:
        return iter(self.indices().tolist())

    def __len__(self) -> int:
        return self.n // self.world_size


def shard(*arrays: Any, rank: Optional[int] = None, world_size: Optional[int] = None) -> Tuple[Any, ...]:
    """This rank's fixed share of each array (the same rule on the unshuffled order), e.g. to
    build a per-rank augmenting flow: ``gen.flow(*shard(x, y), seed=rank_seed(0))``."""
    if not arrays:
        raise ValueError("shard: give at least one array")
    n = len(arrays[0])
    if any(len(a) != n for a in arrays):
        raise ValueError(f"shard: the arrays have different lengths {[len(a) for a in arrays]}")
    return tuple(shard_indices(a, rank, world_size) for a in arrays)


def rank_seed(seed: int, rank: Optional[int] = None) -> int:
    """A seed for this rank's own random stream (augmentation, dropout) derived from the shared
    ``seed``: different on every rank, reproducible from run to run."""
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or seed < 0:
        raise ValueError(f"seed must be an int >= 0, got {seed!r}")
    r = _world.rank() if rank is None else int(rank)
    return int(np.random.SeedSequence([int(seed), r]).generate_state(1)[0])
