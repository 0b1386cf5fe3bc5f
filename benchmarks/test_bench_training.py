"""One Adam training step of the seed networks: MLP (batch 100) and CNN (batch 128),
deepkern vs the layered NumPy trainer vs PyTorch."""
from __future__ import annotations

import itertools

import pytest

from deepkern import bench

from .conftest import THREADS

MODELS = [("mlp", 100), ("cnn", 128)]


def _step(impl, kind, torch_module):
    if impl == "deepkern":
        try:
            return bench.deepkern_train_step(kind)
        except bench.BenchError as exc:
            pytest.skip(str(exc))
    if impl == "numpy":
        return bench.numpy_train_step(kind)
    if torch_module is None:
        pytest.skip("torch is not installed")
    return bench.torch_train_step(torch_module, kind)


@pytest.mark.parametrize("impl", bench.IMPLS)
@pytest.mark.parametrize("kind,batch", MODELS, ids=[m for m, _ in MODELS])
def test_train_step(benchmark, torch_module, kind, batch, impl):
    step = _step(impl, kind, torch_module)
    data = bench.train_data(kind, batch)
    batches = itertools.cycle(data)
    step(*data[0])   # warm-up (allocations, first-call set-up)
    benchmark.group = f"train {kind} batch {batch}"
    benchmark.extra_info.update(batch=batch, threads=THREADS)
    benchmark(lambda: step(*next(batches)))
