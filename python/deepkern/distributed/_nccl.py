"""NCCL for CuPy arrays: the same ``start_allreduce``/``test`` interface as the MPI communicator.

Rank 0 creates NCCL's unique id and broadcasts it over MPI; every rank then joins one NCCL
communicator on the GPU chosen by its rank on the node (local rank modulo the GPUs there).
Allreduces run on a dedicated stream, ordered after the work already queued on the current
stream; the handle is a CUDA event, so waiting polls it with the same deadline as MPI.

Unverified here: the development machine has no GPU (the tests skip without one).
"""
from __future__ import annotations

from typing import Any, Sequence, Tuple

from . import _world

__all__ = ["nccl_available", "NcclCommunicator"]


def nccl_available() -> Tuple[bool, str]:
    """(True, "") when CuPy with NCCL and a GPU are usable, else (False, the reason)."""
    try:
        import cupy
        from cupy.cuda import nccl  # noqa: F401  (CuPy built without NCCL raises here)
    except Exception as exc:  # ImportError, or CUDA libraries missing
        return False, f"CuPy with NCCL is not importable ({type(exc).__name__}: {exc})"
    try:
        count = cupy.cuda.runtime.getDeviceCount()
    except Exception as exc:
        return False, f"no usable CUDA device ({type(exc).__name__}: {exc})"
    if count < 1:
        return False, "no CUDA device"
    return True, ""


def _local_rank() -> int:
    """Rank among the processes of this node (from MPI's shared-memory split)."""
    mpi = _world._World.mpi
    node = _world._comm().Split_type(mpi.COMM_TYPE_SHARED)
    try:
        return node.Get_rank()
    finally:
        node.Free()


class NcclCommunicator:
    """Sums CuPy float32 buffers over the ranks with ``ncclAllReduce``; needs ``init()`` first."""

    def __init__(self) -> None:
        ok, reason = nccl_available()
        if not ok:
            raise RuntimeError(f"NCCL communicator: {reason}")
        import cupy
        from cupy.cuda import nccl

        self._cupy, self._nccl = cupy, nccl
        self.device = _local_rank() % cupy.cuda.runtime.getDeviceCount()
        cupy.cuda.Device(self.device).use()
        uid = nccl.get_unique_id() if _world.rank() == 0 else None
        uid = _world.bcast_object(uid, what="NCCL unique id broadcast")
        self.comm = nccl.NcclCommunicator(_world.world_size(), uid, _world.rank())
        self.stream = cupy.cuda.Stream(non_blocking=True)

    def start_allreduce(self, buffer: Any) -> Any:
        cupy = self._cupy
        produced = cupy.cuda.Event(disable_timing=True)
        produced.record(cupy.cuda.get_current_stream())  # the gradient copies into the buffer
        self.stream.wait_event(produced)
        self.comm.allReduce(buffer.data.ptr, buffer.data.ptr, buffer.size, self._nccl.NCCL_FLOAT32,
                            self._nccl.NCCL_SUM, self.stream.ptr)
        done = cupy.cuda.Event(disable_timing=True)
        done.record(self.stream)
        return done

    def test(self, handles: Sequence[Any]) -> bool:
        return all(event.done for event in handles)

    def bcast_(self, buffer: Any, root: int = 0) -> Any:
        """Overwrite a CuPy buffer with rank ``root``'s (waited for with the deadline)."""
        self.comm.bcast(buffer.data.ptr, buffer.size, self._nccl.NCCL_FLOAT32, root, self.stream.ptr)
        done = self._cupy.cuda.Event(disable_timing=True)
        done.record(self.stream)
        _world.wait(lambda: done.done, "NCCL broadcast")
        return buffer
