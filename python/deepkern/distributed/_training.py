"""Data-parallel training on top of the world: the start-up agreement (same model, rank 0's
weights and optimizer state everywhere) and the per-step and per-epoch work ``fit`` calls.

``deepkern.train`` calls into :func:`fit_session`; nothing here imports the training loop.
"""
from __future__ import annotations

import contextlib
import os
from typing import Any, Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Tuple

import numpy as np

from .._device import xp_of
from ..autograd import Tensor
from . import _world
from ._reducer import DEFAULT_BUCKET_MB, GradientReducer, MpiCommunicator
from ._sharding import shard_indices

__all__ = ["broadcast_parameters", "broadcast_optimizer_state", "check_same_model", "FitSession",
           "fit_session", "root_output"]


def _parameters(model: Any) -> List[Tuple[str, Tensor]]:
    if hasattr(model, "named_parameters"):
        return list(model.named_parameters())
    return [(f"parameters[{i}]", p) for i, p in enumerate(model)]


def broadcast_parameters(model: Any, root: int = 0) -> None:
    """Overwrite every parameter of ``model`` (a Module, or a list of parameters) with rank
    ``root``'s values, in place (optimizers keep pointing at the same buffers)."""
    params = [p for _, p in _parameters(model)]
    if not params:
        return
    host = [p.data.get() if xp_of(p.data) is not np else p.data for p in params]
    flat = np.concatenate([h.reshape(-1) for h in host]).astype(np.float32, copy=False)
    _world.bcast_(flat, root, "parameter broadcast")
    offset = 0
    for p in params:
        chunk = flat[offset:offset + p.size].reshape(p.shape)
        p.data[...] = chunk if xp_of(p.data) is np else xp_of(p.data).asarray(chunk)
        offset += p.size


def broadcast_optimizer_state(optimizer: Any, root: int = 0) -> None:
    """Give every rank rank ``root``'s optimizer state (hyperparameters, step counts, moment
    buffers), e.g. after rank 0 alone loaded a checkpoint."""
    if not hasattr(optimizer, "state_dict") or not hasattr(optimizer, "load_state_dict"):
        raise TypeError(f"optimizer: expected state_dict()/load_state_dict(), got {type(optimizer).__name__}")
    state = optimizer.state_dict() if _world.rank() == root else None
    state = _world.bcast_object(state, root, "optimizer state broadcast")
    if _world.rank() != root:
        optimizer.load_state_dict(state)


def _first_difference(mine: Sequence[Tuple[str, tuple]], reference: Sequence[Tuple[str, tuple]]) -> Optional[str]:
    for i, (ours, theirs) in enumerate(zip(mine, reference)):
        if ours[0] != theirs[0]:
            return f"parameter {i} is {ours[0]!r} here but {theirs[0]!r} on rank 0"
        if ours[1] != theirs[1]:
            return f"parameter {ours[0]!r} has shape {ours[1]} here but {theirs[1]} on rank 0"
    if len(mine) != len(reference):
        longer, who = (mine, "here") if len(mine) > len(reference) else (reference, "on rank 0")
        extra = longer[min(len(mine), len(reference))][0]
        return f"{len(mine)} parameters here but {len(reference)} on rank 0 (first extra {extra!r} {who})"
    return None


def check_same_model(model: Any) -> None:
    """Check that every rank built the same model (parameter names and shapes, in order).

    Raises ValueError on every rank, naming the lowest rank that differs from rank 0 and the
    first difference, e.g. ``rank 1 built a different model than rank 0: parameter '2.weight'
    has shape (10, 64) here but (10, 128) on rank 0``.
    """
    signature = [(name, tuple(p.shape)) for name, p in _parameters(model)]
    reference = _world.bcast_object(signature, 0, "model check")
    problem = _first_difference(signature, reference)
    # one flag per rank, summed: every rank learns which ranks differ
    flags = np.zeros(_world.world_size(), dtype=np.int64)
    flags[_world.rank()] = int(problem is not None)
    _world.allreduce_(flags, "model check")
    if not flags.any():
        return
    culprit = int(np.flatnonzero(flags)[0])
    message = _world.bcast_object(problem, culprit, "model check")
    raise ValueError(f"rank {culprit} built a different model than rank 0: {message}. Build the model the "
                     f"same way on every rank (same code, arguments and input shapes).")


class FitSession:
    """What ``fit`` needs on each rank: sharding, gradient averaging, agreed metrics and stop."""

    def __init__(self, model: Any, optimizer: Any, params: Sequence[Tensor], bucket_mb: float,
                 overlap: bool, batches: Optional[int] = None) -> None:
        self.rank, self.size = _world.rank(), _world.world_size()
        self.is_root = self.rank == 0
        if batches is not None:
            self.check_batches(batches)
        check_same_model(model)
        broadcast_parameters(model)
        if hasattr(optimizer, "state_dict") and hasattr(optimizer, "load_state_dict"):
            broadcast_optimizer_state(optimizer)
        on_gpu = bool(params) and xp_of(params[0].data) is not np
        if on_gpu:
            from ._nccl import NcclCommunicator
            communicator: Any = NcclCommunicator()
        else:
            communicator = MpiCommunicator()
        # last: the hooks it registers stay until close(), so nothing may fail after it here
        self.reducer = GradientReducer(params, communicator, self.size, bucket_mb=bucket_mb, overlap=overlap)

    def agree_seed(self, seed: Optional[int]) -> int:
        """The shuffling seed every rank uses (rank 0 draws one when ``seed`` is None)."""
        if seed is None:
            seed = int(np.random.default_rng().integers(2 ** 31))
        return int(_world.bcast_object(int(seed), 0, "seed broadcast"))

    def callbacks(self, callbacks: Iterable[Any]) -> List[Any]:
        """The callbacks this rank runs: all on rank 0; elsewhere those without ``rank_zero_only``."""
        return _for_rank(callbacks, self.is_root)

    def shard(self, order: Any) -> Any:
        """This rank's positions of the epoch's order (see ``shard_indices``)."""
        if len(order) < self.size:
            raise ValueError(f"{len(order)} training samples cannot be shared by {self.size} ranks")
        return shard_indices(order, self.rank, self.size)

    def shard_validation(self, x: Any, y: Any) -> Tuple[Any, Any]:
        """This rank's share of the validation data (every sample is evaluated once overall;
        a set smaller than the world is evaluated whole on every rank)."""
        if x is None or len(x) < self.size:
            return x, y
        # contiguous copies: the kernels refuse strided views
        return tuple(xp_of(a).ascontiguousarray(a[self.rank::self.size]) for a in (x, y))

    def check_batches(self, count: int) -> None:
        """Every rank must take the same number of steps per epoch (each step is a collective)."""
        counts = np.zeros(self.size, dtype=np.int64)
        counts[self.rank] = count
        _world.allreduce_(counts, "batch count check")
        if len(set(counts.tolist())) > 1:
            raise ValueError(f"the ranks' batch sources yield different numbers of batches per epoch "
                             f"{counts.tolist()}; give every rank an equal share (dk.distributed.shard)")

    def gradients_ready(self) -> None:
        """After backward: wait until every gradient is the average over the ranks."""
        self.reducer.synchronize()

    def average_logs(self, logs: Dict[str, float], seen: int, val_seen: int) -> Tuple[Dict[str, float], int]:
        """The epoch's metrics averaged over all samples of all ranks, identical on every rank
        (rank 0's reduced values are broadcast); returns (logs, samples seen by all ranks)."""
        keys = list(logs)
        weights = [val_seen if k.startswith("val_") else seen for k in keys]
        vector = np.array([seen, val_seen] + [logs[k] * w if w else 0.0 for k, w in zip(keys, weights)],
                          dtype=np.float64)
        _world.allreduce_(vector, "metric averaging")
        _world.bcast_(vector, 0, "metric broadcast")
        totals = {"train": vector[0], "val": vector[1]}
        averaged = {k: float(v / totals["val" if k.startswith("val_") else "train"])
                    for k, v in zip(keys, vector[2:])}
        return averaged, int(vector[0])

    def agree(self, stop: bool) -> bool:
        """Rank 0's decision, on every rank (so early stopping ends every rank at the same epoch)."""
        return bool(_world.bcast_object(bool(stop), 0, "stop decision"))

    def close(self) -> None:
        self.reducer.close()


def fit_session(distributed: Optional[bool], model: Any, optimizer: Any, params: Sequence[Tensor],
                bucket_mb: Optional[float] = None, overlap: Optional[bool] = None,
                batches: Optional[int] = None) -> Optional[FitSession]:
    """A :class:`FitSession` when training is data-parallel, else None (one process trains alone).

    ``distributed=None`` means: data-parallel when launched by ``mpiexec`` with several ranks.
    ``bucket_mb`` and ``overlap`` default to ``DEEPKERN_DIST_BUCKET_MB`` (else 2) and
    ``DEEPKERN_DIST_OVERLAP`` (``0`` selects the simple path: allreduce after backward).
    ``batches``: a batch source's batches per epoch, checked to be equal on every rank.
    """
    if distributed is None:
        distributed = launched()
    if not isinstance(distributed, bool):
        raise TypeError(f"distributed must be None, True or False, got {distributed!r}")
    if not distributed:
        return None
    _world.init()
    if bucket_mb is None:
        bucket_mb = float(os.environ.get("DEEPKERN_DIST_BUCKET_MB", "") or DEFAULT_BUCKET_MB)
    if overlap is None:
        overlap = os.environ.get("DEEPKERN_DIST_OVERLAP", "1").strip() not in ("0", "false", "no", "off")
    return FitSession(model, optimizer, params, bucket_mb, overlap, batches)


def mean_over_ranks(values: Mapping[str, float]) -> Dict[str, float]:
    """Each value's mean over the ranks, identical on every rank (rank 0's reduced values are
    broadcast); unchanged outside data-parallel training. For metrics a front end computes per
    rank (Keras's accuracy family, precision, recall): every rank weighs the same, which is
    exact for the equal training shards and within one sample for validation shards."""
    if not _world.is_initialized() or _world.world_size() == 1 or not values:
        return dict(values)
    keys = list(values)
    vector = _world.allreduce_(np.array([values[k] for k in keys], dtype=np.float64), "metric averaging")
    _world.bcast_(vector, 0, "metric broadcast")
    return {k: float(v) / _world.world_size() for k, v in zip(keys, vector)}


def _for_rank(callbacks: Iterable[Any], root: bool) -> List[Any]:
    return [cb for cb in callbacks if root or not getattr(cb, "rank_zero_only", False)]


def rank_view(distributed: Optional[bool], callbacks: Iterable[Any]) -> Tuple[bool, List[Any]]:
    """(whether this rank prints, the callbacks it runs) for a front end with its own callback
    loop (the Keras facade): under data-parallel training rank 0 alone prints and runs the
    ``rank_zero_only`` callbacks. Starts MPI when training will be data-parallel."""
    if distributed is None:
        distributed = launched()
    if not distributed:
        return True, list(callbacks)
    _world.init()
    return _world.rank() == 0, _for_rank(callbacks, _world.rank() == 0)


def launched() -> bool:
    """True when this process is one of several MPI ranks (already initialised or per the launcher)."""
    return _world.world_size() > 1 if _world.is_initialized() else _world.launched_under_mpi()


@contextlib.contextmanager
def root_output() -> Iterator[bool]:
    """``with root_output() as root:`` silences stdout on every rank but 0 (stderr stays);
    yields whether this is rank 0. Starts MPI when launched under ``mpiexec``."""
    if launched():
        _world.init()
    if _world.rank() == 0:
        yield True
        return
    with open(os.devnull, "w") as sink, contextlib.redirect_stdout(sink):
        yield False


def describe() -> str:
    """``"2 ranks (MPI)"``-style description of the world, for logs."""
    return f"{_world.world_size()} rank{'s' if _world.world_size() != 1 else ''} (MPI)"

