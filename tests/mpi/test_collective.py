"""deepkern.distributed across real ranks: run as ``mpiexec -n 2 python -m pytest tests/mpi``
(.ci/mpi.sh). In a plain ``pytest`` run (one process) every test here skips.

Every rank runs the same tests in the same order, so each test's collectives match up; a test
that fails on one rank only is caught by the other rank's collective deadline.
"""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern import distributed as dist
from deepkern.autograd.tensor import _POST_ACCUMULATE_HOOKS

pytestmark = pytest.mark.skipif(not dist.launched_under_mpi(),
                                reason="needs several MPI ranks: mpiexec -n 2 python -m pytest tests/mpi")


@pytest.fixture(scope="module", autouse=True)
def world():
    dist.init()
    yield


def _data(n=96, features=12, seed=0):
    rng = np.random.default_rng(seed)
    x = rng.standard_normal((n, features)).astype(np.float32)
    return x, (x[:, 0] + x[:, 1] > 0).astype(np.int64)


def _same_everywhere(value) -> bool:
    """True when every rank holds the same value as rank 0 (pickled comparison)."""
    reference = dist.bcast_object(value)
    flags = np.zeros(dist.world_size(), dtype=np.int64)
    flags[dist.rank()] = int(repr(reference) == repr(value))
    return bool(dist.allreduce_(flags).all())


def test_rank_and_size():
    assert dist.world_size() >= 2 and 0 <= dist.rank() < dist.world_size()
    total = dist.allreduce_(np.array([dist.rank()], dtype=np.int64))
    assert int(total[0]) == sum(range(dist.world_size()))


def test_broadcast_parameters_and_optimizer_state():
    dk.manual_seed(100 + dist.rank())  # every rank starts from different weights
    model = dk.models.MLP(12, (8,), 2)
    opt = dk.optim.Adam(model.parameters(), lr=1e-3 * (1 + dist.rank()))
    dist.broadcast_parameters(model)
    assert _same_everywhere({k: v.tolist() for k, v in model.state_dict().items()})
    dist.broadcast_optimizer_state(opt)
    assert opt.lr == pytest.approx(1e-3)


def test_check_same_model_names_the_rank_and_parameter():
    dist.check_same_model(dk.models.MLP(12, (8,), 2))
    model = dk.models.MLP(12, (8 if dist.rank() == 0 else 9,), 2)
    with pytest.raises(ValueError, match=r"rank 1 built a different model than rank 0: parameter "
                                         r"'layers.0.weight' has shape \(9, 12\) here but \(8, 12\) on rank 0"):
        dist.check_same_model(model)


@pytest.mark.parametrize("overlap", [True, False])
def test_reducer_averages_rank_gradients(overlap):
    dk.manual_seed(0)
    model = dk.models.MLP(12, (16, 16), 3)
    reducer = dist.GradientReducer(model.parameters(), bucket_mb=0.001, overlap=overlap)
    x, y = _data(8, seed=dist.rank())
    dk.nn.functional.cross_entropy(model(dk.Tensor(x)), y % 3).backward()
    local = [p.grad.copy() for p in model.parameters()]
    reducer.synchronize()
    for mine, p in zip(local, model.parameters()):
        total = dist.allreduce_(mine.copy())
        np.testing.assert_allclose(p.grad, total / dist.world_size(), rtol=1e-6, atol=1e-7)
    reducer.close()


def test_two_ranks_with_half_batches_match_one_rank():
    """Deterministic mode: B/2 per rank on 2 ranks reaches the weights of batch B on 1 rank
    (to fp32 rounding of the order of the sums) after several steps."""
    x, y = _data(96)
    per_rank = 8

    def train(distributed, batch):
        dk.manual_seed(3)
        model = dk.models.MLP(12, (16,), 2)
        dk.train.fit(model, x, y, epochs=2, batch_size=batch, optimizer="sgd", lr=0.2, progress=False,
                     seed=11, distributed=distributed)
        return model

    together = train(True, per_rank)
    alone = train(False, per_rank * dist.world_size())  # the same permutation, whole batches
    steps = 2 * (96 // (per_rank * dist.world_size()))
    assert steps >= 10
    for (name, a), (_, b) in zip(together.named_parameters(), alone.named_parameters()):
        np.testing.assert_allclose(a.data, b.data, rtol=1e-5, atol=1e-6, err_msg=name)


def test_fit_metrics_checkpoints_and_early_stopping_agree(tmp_path_factory):
    folder = dist.bcast_object(str(tmp_path_factory.mktemp("ckpt")))
    x, y = _data(120, seed=dist.rank())  # different data per rank: the logs must still agree
    dk.manual_seed(1)
    model = dk.models.MLP(12, (8,), 2)
    stopper = dk.train.EarlyStopping("val_loss", patience=1, min_delta=10.0)  # stops after epoch 2
    saver = dk.train.ModelCheckpoint(f"{folder}/m-{{epoch}}.npz")
    history = dk.train.fit(model, x, y, epochs=5, batch_size=10, validation_split=0.25, progress=False,
                           callbacks=[stopper, saver])
    assert len(history.epoch) == 2 and stopper.stopped_epoch == 1
    assert _same_everywhere(history.history)
    assert _same_everywhere({k: v.tolist() for k, v in model.state_dict().items()})
    assert (saver.last_saved is not None) == dist.is_root()
    assert not any(id(p) in _POST_ACCUMULATE_HOOKS for p in model.parameters())  # fit removed its hooks


def test_keras_fit_is_data_parallel():
    from deepkern.keras import layers, models
    x, y = _data(64, seed=dist.rank())
    dk.manual_seed(2)
    model = models.Sequential([layers.Dense(8, activation="relu", input_shape=(12,)),
                               layers.Dense(2, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x, y, epochs=2, batch_size=8, verbose=0)
    assert _same_everywhere(history.history)
    assert _same_everywhere([w.tolist() for w in model.get_weights()])


def test_batch_sources_must_have_equal_lengths():
    x, y = _data(32 if dist.rank() == 0 else 40)
    dk.manual_seed(0)
    model = dk.models.MLP(12, (4,), 2)
    with pytest.raises(ValueError, match="different numbers of batches"):
        dk.train.fit(model, dk.data.BatchIterator(x, y, batch_size=8, seed=0), None, epochs=1, progress=False)
    assert not any(id(p) in _POST_ACCUMULATE_HOOKS for p in model.parameters())  # refused before any hook


def test_nccl_allreduce_of_cupy_arrays():
    """The NCCL path (one GPU per rank); skips where CuPy with NCCL or a GPU is missing."""
    ok, reason = dist.nccl_available()
    if not ok:
        pytest.skip(f"NCCL path not testable here: {reason}")
    import cupy
    comm = dist.NcclCommunicator()
    buf = cupy.full(1000, dist.rank() + 1, dtype=cupy.float32)
    handle = comm.start_allreduce(buf)
    dist._world.wait(lambda: comm.test([handle]), "NCCL test allreduce")
    expected = sum(range(1, dist.world_size() + 1))
    assert float(buf.get()[0]) == expected and float(buf.get()[-1]) == expected
    w = dk.nn.Parameter(cupy.full(4, dist.rank() + 1.0, dtype=cupy.float32))
    reducer = dist.GradientReducer([w], comm)
    (w * 1.0).sum().backward()  # gradient of ones on every rank
    reducer.synchronize()
    np.testing.assert_allclose(w.grad.get(), np.ones(4, dtype=np.float32))
    reducer.close()
