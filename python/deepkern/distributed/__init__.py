"""Data-parallel training over MPI (mpi4py), and over NCCL for CuPy arrays.

Install the extra (``pip install 'deepkern[mpi]'``: mpi4py and MPICH) and launch the same
script on every rank; ``dk.train.fit``, the Keras facade's ``model.fit`` and ``deepkern train``
then train data-parallel by themselves::

    mpiexec -n 2 deepkern train --model cnn
    mpiexec -n 4 python my_training_script.py        # fit(...) inside, unchanged

What happens (Horovod's recipe): at start every rank checks it built the same model and takes
rank 0's weights and optimizer state; each epoch every rank trains on its own shard of the
same permutation (see :mod:`._sharding` for the remainder rule); after each backward the
gradients are averaged over the ranks, in buckets that start their allreduce while backward
is still running (:class:`GradientReducer`); metrics are averaged over the ranks, and only
rank 0 shows progress, writes checkpoints and plots. ``batch_size`` is per rank. In ``fit``
the bucket size is ``DEEPKERN_DIST_BUCKET_MB`` (default 2) and ``DEEPKERN_DIST_OVERLAP=0``
selects the simple path (every allreduce after backward), for comparison;
``DEEPKERN_DIST_PROGRESS=1`` adds a thread that advances the allreduces during backward.

Faults: an uncaught exception on any rank aborts the whole job (``MPI_Abort``) after printing
its traceback, and every collective gives up after ``DEEPKERN_DIST_TIMEOUT`` seconds (default
300) with :class:`DistributedTimeoutError`, so no rank waits for ever on a dead one.

Custom loops use the pieces directly::

    import deepkern.distributed as dist
    dist.init()
    dist.check_same_model(model); dist.broadcast_parameters(model)
    reducer = dist.GradientReducer(model.parameters())
    sampler = dist.DistributedSampler(len(x), seed=0)
    for epoch in range(epochs):
        sampler.set_epoch(epoch)
        for idx in batches_of(sampler.indices()):
            opt.zero_grad(); loss_fn(model(x[idx]), y[idx]).backward()
            reducer.synchronize(); opt.step()
"""
from __future__ import annotations

from ._nccl import NcclCommunicator, nccl_available
from ._reducer import DEFAULT_BUCKET_MB, GradientReducer, MpiCommunicator
from ._sharding import DistributedSampler, rank_seed, shard, shard_indices
from ._training import (FitSession, broadcast_optimizer_state, broadcast_parameters, check_same_model,
                        describe, fit_session, launched, mean_over_ranks, rank_view, root_output)
from ._world import (DEFAULT_TIMEOUT, DistributedTimeoutError, abort, allreduce_, barrier, bcast_, bcast_object,
                     init, is_initialized, is_root, launched_under_mpi, rank, timeout, world_size)

__all__ = ["init", "is_initialized", "launched_under_mpi", "launched", "rank", "world_size", "is_root",
           "timeout", "abort", "barrier", "allreduce_", "bcast_", "bcast_object", "DistributedTimeoutError",
           "DEFAULT_TIMEOUT", "broadcast_parameters", "broadcast_optimizer_state", "check_same_model",
           "GradientReducer", "MpiCommunicator", "DEFAULT_BUCKET_MB", "NcclCommunicator", "nccl_available",
           "DistributedSampler", "shard_indices", "shard", "rank_seed", "FitSession", "fit_session",
           "root_output", "rank_view", "mean_over_ranks", "describe"]
