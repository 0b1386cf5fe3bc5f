"""Gradient averaging in buckets, overlapped with backward.

The parameters are grouped, in reverse registration order (the order backward produces their
gradients), into buckets of about ``bucket_mb`` megabytes. Each bucket owns one flat float32
buffer: its parameters' gradients side by side, then one flag per parameter (1 when this rank
has a gradient for it). With ``overlap=True`` a post-accumulate hook on every parameter copies
its finished gradient into the bucket; when a bucket is complete its non-blocking allreduce
starts while backward goes on with earlier layers. :meth:`GradientReducer.synchronize` (before
the optimizer step) starts what is left, waits for everything with the collective deadline,
and sets each ``.grad`` to the average over the ranks. ``overlap=False`` is the simple path:
every bucket starts in ``synchronize``, after backward.

MPI advances a non-blocking collective only while some thread is inside an MPI call. With
``progress_thread`` a small thread tests the started allreduces every 0.5 ms during backward
(the kernels release the GIL): on the seed CNN ~82% of the gradient bytes then finish reducing
before backward returns (0% without it) and the wait in the step shrinks, but on the 2-core
development machine no step got faster and the 2 ms MLP step got 2-7x slower in the quieter
runs (the training thread blocking on the GIL or the lock behind it), so it is opt-in
(benchmarks/RESULTS.md, "Data-parallel training over MPI").

Buckets start strictly in index order on every rank (a later bucket that completes first
waits for the earlier ones), because MPI matches non-blocking collectives by issue order.
"""
from __future__ import annotations

import os
import threading
import time
from typing import Any, Dict, List, Optional, Sequence

import numpy as np

from .._device import xp_of
from ..autograd import Tensor
from . import _world

__all__ = ["GradientReducer", "MpiCommunicator", "DEFAULT_BUCKET_MB"]

#: Default bucket size in megabytes (``bucket_mb``).
DEFAULT_BUCKET_MB = 2.0


class MpiCommunicator:
    """Sums host (NumPy) buffers over the MPI world with ``Iallreduce``."""

    # MPI advances a non-blocking collective only inside MPI calls: someone must keep testing
    needs_progress = True

    def start_allreduce(self, buffer: np.ndarray) -> Any:
        return _world._comm().Iallreduce(_world._World.mpi.IN_PLACE, buffer, op=_world._World.mpi.SUM)

    def test(self, handles: Sequence[Any]) -> bool:
        return bool(_world._World.mpi.Request.Testall(list(handles)))


class _Poller:
    """A daemon thread that tests the allreduces started during backward every ``interval``
    seconds, so they advance while the kernels (which release the GIL) compute earlier layers;
    without it a bucket started early would wait for the next hook or for ``synchronize``.
    Starting and testing go through one lock, so MPI is never entered by two threads at once."""

    def __init__(self, communicator: Any, interval: float = 5e-4) -> None:
        self.communicator = communicator
        self.interval = interval
        self.lock = threading.Lock()
        self._handles: List[Any] = []
        self._wake = threading.Event()
        self._closed = False
        self._thread = threading.Thread(target=self._run, name="deepkern-allreduce-progress", daemon=True)
        self._thread.start()

    def start(self, buffer: Any) -> Any:
        with self.lock:
            handle = self.communicator.start_allreduce(buffer)
            self._handles.append(handle)
            self._wake.set()
        return handle

    def release(self) -> None:
        """Stop testing (synchronize takes over the handles)."""
        with self.lock:
            self._handles = []
            self._wake.clear()

    def _run(self) -> None:
        while True:
            self._wake.wait()
            if self._closed:
                return
            with self.lock:
                if self._handles and self.communicator.test(self._handles):
                    self._handles = []
                    self._wake.clear()
            time.sleep(self.interval)

    def close(self) -> None:
        self._closed = True
        self._wake.set()
        self._thread.join()


class _Bucket:
    def __init__(self, params: List[Tensor], index: int) -> None:
        self.index = index
        self.params = params
        self.offsets = np.cumsum([0] + [p.size for p in params]).tolist()
        self.numel = self.offsets[-1]
        xp = xp_of(params[0].data)
        # gradients, then one presence flag per parameter
        self.buffer = xp.zeros(self.numel + len(params), dtype=np.float32)
        self.filled = [False] * len(params)
        self.count = 0
        self.handle: Any = None

    def put(self, slot: int, grad: Any) -> None:
        begin, end = self.offsets[slot], self.offsets[slot + 1]
        self.buffer[begin:end] = grad.reshape(-1)
        self.buffer[self.numel + slot] = 1.0
        if not self.filled[slot]:
            self.filled[slot] = True
            self.count += 1

    @property
    def complete(self) -> bool:
        return self.count == len(self.params)

    def fill_missing(self) -> None:
        """Zeros (and a 0 flag) for parameters without a gradient on this rank."""
        for slot, filled in enumerate(self.filled):
            if not filled:
                self.buffer[self.offsets[slot]:self.offsets[slot + 1]] = 0.0
                self.buffer[self.numel + slot] = 0.0

    def unpack(self, scale: float) -> None:
        """Average (sum / ranks) and hand each parameter a view of it as its gradient; a parameter
        that no rank had a gradient for keeps ``grad = None``."""
        self.buffer *= np.float32(scale)
        flags = self.buffer[self.numel:]
        flags = flags.get() if hasattr(flags, "get") else flags
        for slot, p in enumerate(self.params):
            if flags[slot] > 0:
                p.grad = self.buffer[self.offsets[slot]:self.offsets[slot + 1]].reshape(p.shape)
        self.filled = [False] * len(self.params)
        self.count = 0
        self.handle = None


class GradientReducer:
    """Averages the gradients of ``params`` over the ranks of ``communicator``.

    Args:
        params: the parameters, in registration order (``model.parameters()``); the same on every rank.
        communicator: an object with ``start_allreduce(buffer) -> handle`` (an in-place sum over
            the ranks) and ``test(handles) -> bool``; default: MPI over the initialised world.
        world_size: the number of ranks (default: the MPI world's).
        bucket_mb: bucket size in megabytes (a parameter larger than that gets a bucket alone).
        overlap: start each bucket from backward's gradient hooks (True) or only in
            :meth:`synchronize` (False, the simple path).
        progress_thread: with overlap and a communicator that ``needs_progress`` (MPI), test the
            started allreduces from a thread during backward (default: off unless
            ``DEEPKERN_DIST_PROGRESS=1``); without it they advance only in :meth:`synchronize`.

    ``wait_seconds`` and ``steps`` accumulate the time :meth:`synchronize` spent waiting (the
    communication not hidden behind backward) and the number of steps; ``hidden_bytes`` the
    gradient bytes whose allreduce had already finished when :meth:`synchronize` was called.
    """

    def __init__(self, params: Sequence[Tensor], communicator: Any = None, world_size: Optional[int] = None,
                 bucket_mb: float = DEFAULT_BUCKET_MB, overlap: bool = True,
                 progress_thread: Optional[bool] = None) -> None:
        self.params = list(params)
        if not self.params:
            raise ValueError("params: no parameters to average")
        if not isinstance(bucket_mb, (int, float)) or isinstance(bucket_mb, bool) or not bucket_mb > 0:
            raise ValueError(f"bucket_mb must be a positive number, got {bucket_mb!r}")
        self.communicator = communicator if communicator is not None else MpiCommunicator()
        self.world_size = _world.world_size() if world_size is None else int(world_size)
        self.overlap = bool(overlap)
        self.buckets = self._make_buckets(float(bucket_mb) * 1e6)
        self._where: Dict[int, tuple] = {}
        for bucket in self.buckets:
            for slot, p in enumerate(bucket.params):
                self._where[id(p)] = (bucket, slot)
        self._next = 0  # index of the next bucket to start
        self._removers = ([p.register_post_accumulate_grad_hook(self._on_gradient) for p in self.params]
                          if self.overlap else [])
        if progress_thread is None:
            progress_thread = os.environ.get("DEEPKERN_DIST_PROGRESS", "0").strip() in ("1", "true", "yes", "on")
        wanted = self.overlap and progress_thread and getattr(self.communicator, "needs_progress", False)
        self._poller = _Poller(self.communicator) if wanted else None
        self.wait_seconds = 0.0
        self.steps = 0
        self.hidden_bytes = 0

    def _make_buckets(self, limit_bytes: float) -> List[_Bucket]:
        buckets: List[_Bucket] = []
        current: List[Tensor] = []
        size = 0
        for p in reversed(self.params):
            if current and size + 4 * p.size > limit_bytes:
                buckets.append(_Bucket(current, len(buckets)))
                current, size = [], 0
            current.append(p)
            size += 4 * p.size
        buckets.append(_Bucket(current, len(buckets)))
        return buckets

    @property
    def bucket_sizes(self) -> List[int]:
        """Bytes of gradient per bucket, in the order they are reduced."""
        return [4 * b.numel for b in self.buckets]

    # -- during backward -------------------------------------------------------------------
    def _on_gradient(self, p: Tensor) -> None:
        bucket, slot = self._where[id(p)]
        if bucket.handle is not None:
            raise RuntimeError("a second backward ran before the averaged gradients were collected: call "
                               "synchronize() (done by fit) between backward passes")
        bucket.put(slot, p.grad)
        self._start_ready()

    def _start_ready(self) -> None:
        while self._next < len(self.buckets) and self.buckets[self._next].complete:
            self._start(self.buckets[self._next])

    def _start(self, bucket: _Bucket) -> None:
        if self._poller is not None:
            bucket.handle = self._poller.start(bucket.buffer)
        else:
            bucket.handle = self.communicator.start_allreduce(bucket.buffer)
        self._next += 1

    # -- before the optimizer step ---------------------------------------------------------
    def synchronize(self) -> float:
        """Finish averaging this step's gradients (each ``.grad`` becomes the mean over the
        ranks); returns the seconds spent here."""
        start = time.perf_counter()
        if self._poller is not None:
            self._poller.release()
        self.hidden_bytes += sum(4 * b.numel for b in self.buckets[:self._next]
                                 if self.communicator.test([b.handle]))
        if not self.overlap:
            for bucket in self.buckets:
                for slot, p in enumerate(bucket.params):
                    if p.grad is not None:
                        bucket.put(slot, p.grad)
        for bucket in self.buckets[self._next:]:
            bucket.fill_missing()
            self._start(bucket)
        handles = [b.handle for b in self.buckets]
        _world.wait(lambda: self.communicator.test(handles),
                    f"gradient allreduce ({len(self.buckets)} buckets, {sum(self.bucket_sizes) / 1e6:.2f} MB)")
        scale = 1.0 / self.world_size
        for bucket in self.buckets:
            bucket.unpack(scale)
        self._next = 0
        elapsed = time.perf_counter() - start
        self.wait_seconds += elapsed
        self.steps += 1
        return elapsed

    def close(self) -> None:
        """Remove the gradient hooks (the parameters train alone again)."""
        for remove in self._removers:
            remove()
        self._removers = []
        if self._poller is not None:
            self._poller.close()
            self._poller = None
