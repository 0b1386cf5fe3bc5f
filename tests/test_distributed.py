"""deepkern.distributed pieces that need no MPI: the gradient hook, sharding, bucketing and
averaging (with an in-process stand-in for the other ranks), the model-difference messages.

The collective behaviour is tested under ``mpiexec -n 2`` by tests/mpi/ (.ci/mpi.sh), and the
launch, CLI and fault behaviour by tests/test_distributed_launch.py.
"""
from __future__ import annotations

import threading
import time

import numpy as np
import pytest

import deepkern as dk
from deepkern import distributed as dist
from deepkern.distributed import _training
from deepkern.distributed._reducer import GradientReducer


# ---------------------------------------------------------------------------- the gradient hook
def test_post_accumulate_hook_sees_the_complete_gradient_of_a_shared_leaf():
    w = dk.Tensor(np.array([1.0, 2.0], dtype=np.float32), requires_grad=True)
    seen = []
    remove = w.register_post_accumulate_grad_hook(lambda t: seen.append(t.grad.copy()))
    ((w * 3.0).sum() + (w * 4.0).sum()).backward()  # two contributions, one call with their sum
    assert len(seen) == 1
    np.testing.assert_array_equal(seen[0], [7.0, 7.0])
    remove()
    w.grad = None
    (w * 2.0).sum().backward()
    assert len(seen) == 1  # removed


def test_post_accumulate_hooks_fire_last_layer_first_and_only_for_leaves():
    dk.manual_seed(0)
    model = dk.models.MLP(6, (5, 4), 3)
    order = []
    removers = [p.register_post_accumulate_grad_hook(lambda t, name=name: order.append(name))
                for name, p in model.named_parameters()]
    x = np.random.default_rng(0).standard_normal((4, 6)).astype(np.float32)
    dk.nn.functional.cross_entropy(model(dk.Tensor(x)), np.array([0, 1, 2, 0])).backward()
    for remove in removers:
        remove()
    names = [name for name, _ in model.named_parameters()]
    assert sorted(order) == sorted(names)
    # backward reaches the output layer's parameters first: what lets buckets start early
    assert order.index("layers.4.weight") < order.index("layers.2.weight") < order.index("layers.0.weight")
    out = model(dk.Tensor(x))
    with pytest.raises(RuntimeError, match="only leaves"):
        out.register_post_accumulate_grad_hook(lambda t: None)


# ---------------------------------------------------------------------------- sharding
@pytest.mark.parametrize("n, size", [(10, 3), (12, 4), (7, 2), (5, 5)])
def test_shards_are_disjoint_equal_and_drop_only_the_remainder(n, size):
    order = np.random.default_rng(n).permutation(n)
    shards = [dist.shard_indices(order, r, size) for r in range(size)]
    assert {len(s) for s in shards} == {n // size}
    together = np.concatenate(shards)
    assert len(set(together.tolist())) == len(together)
    assert set(together.tolist()) == set(order[:n - n % size].tolist())


def test_rank_batches_together_are_the_single_process_batch():
    order = np.random.default_rng(3).permutation(48)
    per_rank, size = 4, 3
    shards = [dist.shard_indices(order, r, size) for r in range(size)]
    for k in range(48 // (per_rank * size)):
        joint = np.concatenate([s[k * per_rank:(k + 1) * per_rank] for s in shards])
        big = order[k * per_rank * size:(k + 1) * per_rank * size]
        assert sorted(joint.tolist()) == sorted(big.tolist())


def test_distributed_sampler_same_permutation_per_epoch_on_every_rank():
    samplers = [dist.DistributedSampler(11, rank=r, world_size=2, seed=5) for r in range(2)]
    epochs = []
    for epoch in range(2):
        for s in samplers:
            s.set_epoch(epoch)
        a, b = (list(s) for s in samplers)
        assert len(a) == len(b) == len(samplers[0]) == 5 and not set(a) & set(b)
        epochs.append(a + b)
    assert epochs[0] != epochs[1]
    again = dist.DistributedSampler(11, rank=0, world_size=2, seed=5)
    assert list(again) == epochs[0][:5]
    with pytest.raises(ValueError, match="rank"):
        dist.DistributedSampler(4, rank=2, world_size=2)


def test_rank_seed_and_shard():
    assert dist.rank_seed(0, rank=0) != dist.rank_seed(0, rank=1)
    assert dist.rank_seed(7, rank=1) == dist.rank_seed(7, rank=1)
    x, y = np.arange(10), np.arange(10) * 2
    xs, ys = dist.shard(x, y, rank=1, world_size=3)
    np.testing.assert_array_equal(xs, [1, 4, 7])
    np.testing.assert_array_equal(ys, [2, 8, 14])
    # a per-rank augmenting flow: disjoint samples, different transforms
    gen = dk.data.ImageDataGenerator(width_shift_range=0.2)
    images = np.random.default_rng(0).random((8, 1, 6, 6)).astype(np.float32)
    flows = [gen.flow(*dist.shard(images, np.arange(8), rank=r, world_size=2), batch_size=4,
                      shuffle=False, seed=dist.rank_seed(0, rank=r)) for r in range(2)]
    (xa, ya), (xb, yb) = (next(iter(f)) for f in flows)
    assert not set(ya.tolist()) & set(yb.tolist())


# ---------------------------------------------------------------------------- the reducer
class FakeRanks:
    """Stands in for ``peers`` other ranks that hold ``peer_grads`` (or the same buffer)."""

    def __init__(self, peer_buffers=None):
        self.peer_buffers = peer_buffers or {}
        self.started = []

    def start_allreduce(self, buffer):
        self.started.append(len(buffer))
        buffer += self.peer_buffers.get(len(self.started) - 1, buffer.copy())
        return len(self.started)

    def test(self, handles):
        return True


def _grads(model, seed=0):
    x = np.random.default_rng(seed).standard_normal((5, 8)).astype(np.float32)
    for p in model.parameters():
        p.grad = None
    dk.nn.functional.cross_entropy(model(dk.Tensor(x)), np.array([0, 1, 2, 1, 0])).backward()
    return {name: p.grad.copy() for name, p in model.named_parameters()}


@pytest.mark.parametrize("overlap", [True, False])
def test_reducer_buckets_in_reverse_order_and_averages(overlap):
    dk.manual_seed(0)
    model = dk.models.MLP(8, (16, 16), 3)
    expected = _grads(model)
    fake = FakeRanks()
    # 16*16 floats = 1,024 bytes: a bucket limit of 1.2 kB gives several buckets
    reducer = GradientReducer(model.parameters(), fake, world_size=2, bucket_mb=0.0012, overlap=overlap)
    params = model.parameters()
    assert reducer.buckets[0].params[0] is params[-1]  # reverse registration order
    assert len(reducer.buckets) > 2
    assert sum(reducer.bucket_sizes) == 4 * sum(p.size for p in params)
    _grads(model)
    assert len(fake.started) == (len(reducer.buckets) if overlap else 0)  # started during backward
    reducer.synchronize()
    assert len(fake.started) == len(reducer.buckets)
    for name, p in model.named_parameters():  # (g + g) / 2 == g
        np.testing.assert_allclose(p.grad, expected[name], rtol=1e-6, atol=1e-7)
    reducer.close()
    fake.started.clear()
    _grads(model)
    assert fake.started == []  # hooks removed


def test_reducer_handles_a_gradient_missing_on_some_ranks():
    w = dk.nn.Parameter(np.ones(3, dtype=np.float32))
    unused = dk.nn.Parameter(np.ones(2, dtype=np.float32))
    # the peer has a gradient of 4 for w and one of 6 for the parameter this rank did not use
    peer = {0: np.array([6.0, 6.0, 4.0, 4.0, 4.0, 1.0, 1.0], dtype=np.float32)}
    reducer = GradientReducer([w, unused], FakeRanks(peer), world_size=2, overlap=True)
    (w * 2.0).sum().backward()
    reducer.synchronize()
    np.testing.assert_allclose(w.grad, [3.0, 3.0, 3.0])  # (2 + 4) / 2
    np.testing.assert_allclose(unused.grad, [3.0, 3.0])   # (0 + 6) / 2
    w.grad = None
    unused.grad = None
    alone = GradientReducer([w, unused], FakeRanks({0: np.array([0, 0, 2, 2, 2, 0, 0], np.float32)}),
                            world_size=2, overlap=False)
    (w * 2.0).sum().backward()
    alone.synchronize()
    assert unused.grad is None  # no rank had one: the optimizer skips it, as without MPI
    reducer.close()
    alone.close()


class PolledRanks(FakeRanks):
    """An allreduce that completes after the progress thread has tested it 3 times (or the
    waiting main thread 100 times: without the thread the test fails instead of hanging)."""

    needs_progress = True

    def __init__(self):
        super().__init__()
        self.polls = 0
        self.main_polls = 0

    def test(self, handles):
        if threading.current_thread() is threading.main_thread():
            self.main_polls += 1
        else:
            self.polls += 1
        return self.polls >= 3 or self.main_polls > 100


def test_reducer_progress_thread_completes_allreduces_during_backward():
    dk.manual_seed(0)
    model = dk.models.MLP(8, (16,), 3)
    fake = PolledRanks()
    reducer = GradientReducer(model.parameters(), fake, world_size=2, overlap=True, progress_thread=True)
    _grads(model)
    deadline = time.monotonic() + 10
    while fake.polls < 3 and time.monotonic() < deadline:  # backward's later layers would run here
        time.sleep(0.005)
    reducer.synchronize()
    assert reducer.hidden_bytes == sum(reducer.bucket_sizes)  # finished before synchronize
    reducer.close()
    assert not any(t.name == "deepkern-allreduce-progress" and t.is_alive() for t in threading.enumerate())
    default = GradientReducer(model.parameters(), PolledRanks(), world_size=2)  # opt-in: no thread
    assert not any(t.name == "deepkern-allreduce-progress" for t in threading.enumerate())
    default.close()


def test_reducer_refuses_two_backwards_without_synchronize():
    w = dk.nn.Parameter(np.ones(3, dtype=np.float32))
    reducer = GradientReducer([w], FakeRanks(), world_size=2)
    (w * 2.0).sum().backward()
    with pytest.raises(RuntimeError, match="synchronize"):
        (w * 2.0).sum().backward()
    reducer.close()
    with pytest.raises(ValueError, match="bucket_mb"):
        GradientReducer([w], FakeRanks(), world_size=2, bucket_mb=0)


# ---------------------------------------------------------------------------- start-up checks
def test_first_difference_names_the_parameter():
    ref = [("0.weight", (4, 3)), ("0.bias", (4,))]
    assert _training._first_difference(ref, ref) is None
    msg = _training._first_difference([("0.weight", (5, 3)), ("0.bias", (4,))], ref)
    assert "'0.weight' has shape (5, 3) here but (4, 3) on rank 0" in msg
    msg = _training._first_difference([("0.weight", (4, 3))], ref)
    assert "1 parameters here but 2 on rank 0" in msg and "'0.bias'" in msg
    msg = _training._first_difference([("1.weight", (4, 3)), ("0.bias", (4,))], ref)
    assert "parameter 0 is '1.weight' here but '0.weight' on rank 0" in msg


def test_launch_detection_and_single_process_default(monkeypatch):
    for name in ("PMI_SIZE", "OMPI_COMM_WORLD_SIZE", "MV2_COMM_WORLD_SIZE"):
        monkeypatch.delenv(name, raising=False)
    assert not dist.launched_under_mpi()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "1")
    assert not dist.launched_under_mpi()
    monkeypatch.setenv("OMPI_COMM_WORLD_SIZE", "4")
    assert dist.launched_under_mpi()
    monkeypatch.delenv("OMPI_COMM_WORLD_SIZE")
    model = dk.models.MLP(4, (3,), 2)
    assert dist.fit_session(None, model, None, model.parameters()) is None
    with pytest.raises(TypeError, match="distributed"):
        dist.fit_session("yes", model, None, model.parameters())
    assert dist.rank() == 0 and dist.world_size() == 1 and dist.is_root()


def test_nccl_reports_why_it_is_unavailable():
    ok, reason = dist.nccl_available()
    if ok:
        pytest.skip("a GPU with NCCL is present (tests/mpi tests the NCCL path)")
    assert reason

