"""The MPI world: start-up, rank and size, aborting every rank on a failure, and collectives
that give up after a deadline instead of hanging.

mpi4py is imported on first use only (importing it initialises MPI), so ``import deepkern``
never starts MPI. Every collective deepkern issues is non-blocking and waited for by polling
with a deadline (:func:`wait`), so a rank that died or stopped calling in is reported as a
:class:`DistributedTimeoutError` within ``timeout`` seconds rather than hanging for ever.
"""
from __future__ import annotations

import os
import pickle
import sys
import time
import traceback
from typing import Any, Callable, Optional, Sequence

import numpy as np

__all__ = ["DistributedTimeoutError", "init", "is_initialized", "launched_under_mpi", "rank", "world_size",
           "is_root", "timeout", "abort", "barrier", "allreduce_", "bcast_", "bcast_object"]

#: Seconds a collective may wait for the other ranks (``DEEPKERN_DIST_TIMEOUT`` overrides).
DEFAULT_TIMEOUT = 300.0
# how long wait() polls without sleeping
_SPIN_S = 0.005
ABORT_GRACE_S = 0.5  # seconds a failing rank waits, after printing its report, before MPI_Abort
# the world size each launcher exports to its processes (MPICH/Hydra, Open MPI, MVAPICH)
_SIZE_VARIABLES = ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE")


class DistributedTimeoutError(RuntimeError):
    """A collective did not complete in time: another rank failed, was killed or is stuck."""


class _World:
    comm: Any = None          # a duplicate of MPI.COMM_WORLD: deepkern's traffic never mixes with the user's
    mpi: Any = None           # the mpi4py.MPI module
    timeout: float = DEFAULT_TIMEOUT
    previous_excepthook: Optional[Callable[..., Any]] = None


def _mpi_module() -> Any:
    try:
        from mpi4py import MPI
    except ImportError as exc:
        raise ImportError("deepkern.distributed needs mpi4py and an MPI library: "
                          "pip install 'deepkern[mpi]' (mpi4py and mpich), or mpi4py over a system MPI") from exc
    return MPI


def launched_under_mpi() -> bool:
    """True when this process was started by ``mpiexec``/``mpirun`` with more than one rank
    (read from the launcher's environment, without starting MPI)."""
    for name in _SIZE_VARIABLES:
        value = os.environ.get(name, "")
        if value.isdigit():
            return int(value) > 1
    return False


def _timeout_from_env() -> float:
    raw = os.environ.get("DEEPKERN_DIST_TIMEOUT", "")
    if not raw:
        return DEFAULT_TIMEOUT
    try:
        value = float(raw)
    except ValueError:
        raise ValueError(f"DEEPKERN_DIST_TIMEOUT must be a number of seconds, got {raw!r}") from None
    if not value > 0:
        raise ValueError(f"DEEPKERN_DIST_TIMEOUT must be > 0, got {raw!r}")
    return value


def init(timeout: Optional[float] = None, abort_on_exception: bool = True) -> None:
    """Join the MPI world (idempotent). Call it in every rank; ``fit`` calls it for you.

    Args:
        timeout: seconds a collective waits for the other ranks before raising
            :class:`DistributedTimeoutError` (default ``DEEPKERN_DIST_TIMEOUT`` or 300).
        abort_on_exception: install a ``sys.excepthook`` that, after printing the traceback,
            aborts every rank (``MPI_Abort``) so the others exit at once instead of waiting.
    """
    if timeout is not None:
        if not isinstance(timeout, (int, float)) or isinstance(timeout, bool) or not timeout > 0:
            raise ValueError(f"timeout must be a positive number of seconds, got {timeout!r}")
        _World.timeout = float(timeout)
    elif _World.comm is None:
        _World.timeout = _timeout_from_env()
    if _World.comm is not None:
        return
    mpi = _mpi_module()
    _World.mpi = mpi
    _World.comm = mpi.COMM_WORLD.Dup()
    if abort_on_exception and _World.comm.Get_size() > 1 and _World.previous_excepthook is None:
        _World.previous_excepthook = sys.excepthook
        sys.excepthook = _abort_on_uncaught


def _abort_on_uncaught(exc_type: type, exc: BaseException, tb: Any) -> None:
    """sys.excepthook while distributed: report, then take every rank down."""
    previous = _World.previous_excepthook or sys.__excepthook__
    try:
        previous(exc_type, exc, tb)
    except Exception:  # a broken hook must not stop the abort
        traceback.print_exception(exc_type, exc, tb)
    abort(f"{exc_type.__name__} on this rank: {exc}")


def abort(message: str, code: int = 1) -> None:
    """Print ``message`` naming this rank to stderr and abort every rank of the job."""
    sys.stderr.write(f"deepkern.distributed: rank {rank()} of {world_size()} failed: {message}; "
                     f"aborting all ranks\n")
    sys.stderr.flush()
    sys.stdout.flush()
    # The launcher forwards each rank's output through a pipe and kills every rank on Abort: on a
    # busy machine it can do so before forwarding what this rank just wrote (seen in CI: the
    # traceback cut mid-way). A short pause lets the report through; the job ends either way.
    time.sleep(ABORT_GRACE_S)
    _World.mpi.COMM_WORLD.Abort(code)


def is_initialized() -> bool:
    return _World.comm is not None


def _comm() -> Any:
    if _World.comm is None:
        raise RuntimeError("deepkern.distributed is not initialised: call dk.distributed.init() first")
    return _World.comm


def rank() -> int:
    """This process's rank, 0 .. world_size() - 1 (0 before init(): a single process)."""
    return 0 if _World.comm is None else _World.comm.Get_rank()


def world_size() -> int:
    """Number of ranks (1 before init())."""
    return 1 if _World.comm is None else _World.comm.Get_size()


def is_root() -> bool:
    """True on rank 0, the rank that prints, checkpoints and plots."""
    return rank() == 0


def timeout() -> float:
    """Seconds a collective waits before :class:`DistributedTimeoutError`."""
    return _World.timeout


def wait(test: Callable[[], bool], what: str, seconds: Optional[float] = None) -> float:
    """Poll ``test()`` until it is True; returns the seconds waited.

    Spins for the first ``_SPIN_S`` seconds (a collective of a training step usually ends
    within a millisecond of the last rank joining, and a sleeping process can wake late on a
    busy machine), then sleeps with a growing pause of at most 1 ms so a rank waiting for a
    slow or dead peer leaves the core to others. Past the deadline raises
    DistributedTimeoutError.
    """
    start = time.perf_counter()
    if test():
        return 0.0
    limit = _World.timeout if seconds is None else seconds
    pause = 0.0
    while not test():
        now = time.perf_counter()
        if now - start > _SPIN_S:
            pause = min(1e-3, max(2e-5, pause * 2))
            time.sleep(pause)
        if now - start > limit:
            raise DistributedTimeoutError(
                f"rank {rank()} of {world_size()}: {what} did not complete within {limit:g} s; another rank "
                f"failed, was killed or is stuck (or the ranks took different numbers of steps). "
                f"Set DEEPKERN_DIST_TIMEOUT to wait longer.")
    return time.perf_counter() - start


def wait_requests(requests: Sequence[Any], what: str) -> float:
    """Wait for MPI requests with the deadline of :func:`wait`."""
    mpi = _World.mpi
    return wait(lambda: mpi.Request.Testall(list(requests)), what)


def allreduce_(array: np.ndarray, what: str = "allreduce") -> np.ndarray:
    """Sum a host array over the ranks, in place; returns it."""
    wait_requests([_comm().Iallreduce(_World.mpi.IN_PLACE, array, op=_World.mpi.SUM)], what)
    return array


def bcast_(array: np.ndarray, root: int = 0, what: str = "broadcast") -> np.ndarray:
    """Overwrite a host array with rank ``root``'s, in place; returns it."""
    wait_requests([_comm().Ibcast(array, root=root)], what)
    return array


def bcast_object(obj: Any, root: int = 0, what: str = "broadcast") -> Any:
    """Rank ``root``'s ``obj`` on every rank (pickled; for small start-up messages)."""
    payload = np.frombuffer(pickle.dumps(obj), dtype=np.uint8) if rank() == root else None
    length = bcast_(np.array([0 if payload is None else payload.size], dtype=np.int64), root, what)
    data = payload.copy() if payload is not None else np.empty(int(length[0]), dtype=np.uint8)
    bcast_(data, root, what)
    return obj if rank() == root else pickle.loads(data.tobytes())


def barrier(what: str = "barrier") -> None:
    """All ranks reach this point (with the deadline)."""
    wait_requests([_comm().Ibarrier()], what)
