"""The cache of large output buffers behind the C++ backend: reuse without aliasing."""
from __future__ import annotations

import numpy as np
import pytest

from deepkern import backends
import deepkern as dk

from .conftest import assert_close, randn

pytestmark = pytest.mark.skipif(not backends.available("cpu"), reason="the C++ module is not built")


@pytest.fixture
def cache():
    from deepkern import _cpu
    before = _cpu.host_cache_info()["limit_bytes"]
    _cpu.set_host_cache_limit(64 << 20)
    _cpu.empty_host_cache()
    yield _cpu
    _cpu.set_host_cache_limit(before)


def test_freed_outputs_are_reused_and_results_stay_correct(cache, rng):
    dk.set_backend("cpu")
    x = randn(rng, 300, 1000)           # 1.2 MB: above the cache's minimum size
    y = dk.ops.relu(x)
    start = cache.host_cache_info()
    del y                                # goes back to the cache
    assert cache.host_cache_info()["cached_bytes"] >= x.nbytes
    z = dk.ops.relu(-x)                  # same size: served from the cache
    info = cache.host_cache_info()
    assert info["hits"] == start["hits"] + 1
    assert_close(z, np.maximum(-x, 0), rtol=0, atol=0, what="relu from a recycled buffer")


def test_live_outputs_never_share_memory(cache, rng):
    x = randn(rng, 256, 1024)
    outs = [dk.ops.relu(x + i) for i in range(4)]
    for i, a in enumerate(outs):
        for b in outs[i + 1:]:
            assert not np.shares_memory(a, b)
    for i, out in enumerate(outs):
        assert_close(out, np.maximum(x + i, 0), rtol=0, atol=0, what=f"output {i}")


def test_limit_zero_turns_caching_off_and_empty_releases(cache, rng):
    x = randn(rng, 300, 1000)
    del_me = dk.ops.relu(x)
    del del_me
    assert cache.host_cache_info()["cached_bytes"] > 0
    cache.empty_host_cache()
    assert cache.host_cache_info()["cached_bytes"] == 0
    cache.set_host_cache_limit(0)
    tmp = dk.ops.relu(x)
    del tmp
    assert cache.host_cache_info()["cached_bytes"] == 0


def test_small_outputs_bypass_the_cache(cache, rng):
    x = randn(rng, 7, 13)
    start = cache.host_cache_info()
    for _ in range(5):
        dk.ops.relu(x)
    info = cache.host_cache_info()
    assert (info["hits"], info["misses"], info["cached_bytes"]) == (start["hits"], start["misses"], 0)
