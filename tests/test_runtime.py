"""The CPU kernels' thread pool: thread controls, threadpoolctl, fork safety, reproducible
reductions whatever the thread count, and many Python threads calling kernels at once."""
from __future__ import annotations

import multiprocessing
import os
import subprocess
import sys
import threading
from pathlib import Path

import numpy as np
import pytest

import deepkern as dk

_cpu = pytest.importorskip("deepkern._cpu", reason="the C++ module is not built")

PYTHON_DIR = str(Path(dk.__file__).resolve().parent.parent)


@pytest.fixture
def restore_threads():
    before = dk.get_num_threads()
    yield
    dk.set_num_threads(before)


def test_set_num_threads_round_trip(restore_threads):
    for n in (1, 3, 2, 7):
        dk.set_num_threads(n)
        assert dk.get_num_threads() == n
        assert dk.info()["cpu"]["threads"] == n
    assert dk.info()["cpu"]["parallel_runtime"] == "deepkern-pool"


@pytest.mark.parametrize("bad", [0, -2])
def test_set_num_threads_rejects_non_positive(restore_threads, bad):
    with pytest.raises(ValueError, match="positive"):
        dk.set_num_threads(bad)


def test_set_num_threads_rejects_non_int(restore_threads):
    with pytest.raises(TypeError):
        dk.set_num_threads(2.0)


def _threads_in_child(**env: str) -> int:
    clean = {k: v for k, v in os.environ.items() if k not in ("DEEPKERN_NUM_THREADS", "OMP_NUM_THREADS")}
    clean.update(env, PYTHONPATH=PYTHON_DIR)
    out = subprocess.run([sys.executable, "-c", "import deepkern as dk; print(dk.get_num_threads())"],
                         env=clean, capture_output=True, text=True, check=True, timeout=120)
    return int(out.stdout.strip())


def test_thread_count_from_environment():
    assert _threads_in_child(OMP_NUM_THREADS="3") == 3
    assert _threads_in_child(OMP_NUM_THREADS="5,2") == 5   # nested-level lists: the first level
    assert _threads_in_child(DEEPKERN_NUM_THREADS="4", OMP_NUM_THREADS="3") == 4
    assert _threads_in_child() == len(os.sched_getaffinity(0))


def test_threadpoolctl_limit_reaches_the_kernels(restore_threads):
    threadpoolctl = pytest.importorskip("threadpoolctl")
    if not hasattr(threadpoolctl, "register"):
        pytest.skip("threadpoolctl < 3.5 takes no custom controllers")
    dk.set_num_threads(3)
    ours = [d for d in threadpoolctl.threadpool_info() if d["internal_api"] == "deepkern"]
    assert len(ours) == 1 and ours[0]["num_threads"] == 3
    with threadpoolctl.threadpool_limits(1):
        assert dk.get_num_threads() == 1
    assert dk.get_num_threads() == 3
    with threadpoolctl.threadpool_limits(limits=2, user_api="openmp"):
        assert dk.get_num_threads() == 2
    assert dk.get_num_threads() == 3


# ------------------------------------------------------------------ reproducible reductions
def _inputs(seed: int = 0):
    rng = np.random.default_rng(seed)
    f = lambda *s: rng.standard_normal(s).astype(np.float32)  # noqa: E731
    return {
        # a seed-CNN-like layer (many chunks of image groups) and a 1x1 layer (direct columns)
        "conv": (f(48, 32, 13, 13), f(64, 32, 3, 3), f(48, 64, 11, 11)),
        "conv1x1": (f(20, 16, 9, 9), f(24, 16, 1, 1), f(20, 24, 9, 9)),
        "matmul": (f(300, 200), f(200, 150), f(300, 150)),
        "logits": (f(6000, 10), rng.integers(0, 10, 6000).astype(np.int64)),
    }


def _reductions(data):
    out = []
    for name in ("conv", "conv1x1"):
        x, w, gy = data[name]
        out.extend(_cpu.conv2d_backward(gy, x, w, (1, 1), (0, 0), True, True))
    a, b, g = data["matmul"]
    out.extend(r for r in _cpu.matmul_backward(g, a, b, None, False, False, True) if r is not None)
    logits, labels = data["logits"]
    out.append(np.float32(_cpu.cross_entropy(logits, labels)))
    out.append(_cpu.cross_entropy_backward(logits, labels, 1.0))
    return [np.asarray(r) for r in out]


def test_reductions_bit_identical_across_thread_counts(restore_threads):
    data = _inputs()
    dk.set_num_threads(1)
    reference = _reductions(data)
    for threads in (2, 3, 4, 1, 2, 16):   # 16 on a small machine: most workers start late or never
        dk.set_num_threads(threads)
        for _ in range(2):
            got = _reductions(data)
            for i, (r, g) in enumerate(zip(reference, got)):
                assert np.array_equal(r, g), f"result {i} differs with {threads} threads"


def test_many_python_threads_call_kernels_at_once(restore_threads):
    dk.set_num_threads(2)
    data = _inputs(1)
    reference = _reductions(data)
    failures, barrier = [], threading.Barrier(8)

    def worker():
        barrier.wait()
        for _ in range(4):
            got = _reductions(data)
            if not all(np.array_equal(r, g) for r, g in zip(reference, got)):
                failures.append("mismatch")

    threads = [threading.Thread(target=worker) for _ in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(timeout=300)
    assert not any(t.is_alive() for t in threads), "a kernel call hung"
    assert not failures


@pytest.mark.parametrize("threads", [2, 16])
def test_pool_runs_each_chunk_once_across_back_to_back_jobs(threads):
    # A worker preempted between reading a finished job's claim word and the next job's chunk
    # count used to claim a chunk of the new job under the old epoch: run twice, counted twice,
    # the caller returning while it still ran (a rare SIGSEGV in CI). Many short jobs with more
    # workers than cores give that preemption many chances; the stall back-off is off so that
    # every job goes to the pool. A child process, so that a hang fails instead of blocking.
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR, DEEPKERN_NUM_THREADS=str(threads), DEEPKERN_STALL_BACKOFF="0")
    code = "from deepkern import _cpu; print(_cpu._pool_selftest(100000, seed=%d))" % threads
    try:
        out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired:   # a chunk counted twice: `done` passed the chunk count
        pytest.fail("the pool hung: a job's caller never saw all its chunks done")
    assert out.returncode == 0, out.stderr
    assert int(out.stdout.strip()) == 0, "chunks run twice or unfinished when their job returned"


@pytest.mark.parametrize("yield_us", ["1000", "0"])
def test_idle_workers_go_to_sleep(yield_us):
    # After a job the workers poll, then yield their core while watching for the next job
    # (DEEPKERN_YIELD_US), then sleep: an idle process must not keep burning a core. Measured as
    # the process's CPU time over 0.5 s of idleness after a burst of products (4 threads, so
    # 3 workers): polling for ever would cost ~1.5 s of CPU, the bound is 0.15 s.
    env = dict(os.environ, PYTHONPATH=PYTHON_DIR, DEEPKERN_NUM_THREADS="4", DEEPKERN_YIELD_US=yield_us)
    code = (
        "import time, numpy as np\n"
        "from deepkern import ops\n"
        "a = np.ones((256, 256), np.float32)\n"
        "for _ in range(50): ops.matmul(a, a)\n"
        "t0 = time.process_time(); time.sleep(0.5)\n"
        "print(time.process_time() - t0)\n")
    out = subprocess.run([sys.executable, "-c", code], env=env, capture_output=True, text=True, timeout=120)
    assert out.returncode == 0, out.stderr
    assert float(out.stdout.strip()) < 0.15, "idle workers kept a core busy"


def test_kernel_exception_in_a_chunk_propagates(restore_threads):
    dk.set_num_threads(2)
    x = np.ones((64, 3, 8, 8), np.float32)
    with pytest.raises(Exception):
        _cpu.conv2d(x, np.ones((4, 5, 3, 3), np.float32), None, (1, 1), (0, 0))  # channel mismatch
    # the pool still works afterwards
    assert np.allclose(_cpu.relu(np.full(1 << 18, -1.0, np.float32)), 0.0)


# ------------------------------------------------------------------ fork
def _train_a_little():
    dk.manual_seed(0)
    model = dk.nn.Sequential(dk.nn.Conv2d(1, 8, 3), dk.nn.ReLU(), dk.nn.Flatten(), dk.nn.Linear(8 * 26 * 26, 10))
    opt = dk.optim.Adam(model.parameters(), lr=1e-3)
    loss_fn = dk.nn.CrossEntropyLoss()
    rng = np.random.default_rng(0)
    x = rng.random((64, 1, 28, 28), dtype=np.float32)
    y = rng.integers(0, 10, 64).astype(np.int64)
    for _ in range(3):
        opt.zero_grad()
        loss = loss_fn(model(dk.Tensor(x)), y)
        loss.backward()
        opt.step()


def _child_product(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    a = rng.standard_normal((256, 300)).astype(np.float32)
    b = rng.standard_normal((300, 200)).astype(np.float32)
    x = rng.standard_normal((32, 4, 16, 16)).astype(np.float32)
    w = rng.standard_normal((8, 4, 3, 3)).astype(np.float32)
    return (np.asarray(_cpu.matmul(a, b, None, False, False, False)),
            np.asarray(_cpu.conv2d_backward(np.ones((32, 8, 14, 14), np.float32), x, w, (1, 1), (0, 0),
                                             True, True)[1]))


@pytest.mark.skipif(sys.platform != "linux", reason="fork start method")
def test_fork_pool_after_training(restore_threads):
    dk.set_num_threads(2)
    _train_a_little()                       # the parent's pool has started its workers
    expected = [_child_product(s) for s in range(4)]
    with multiprocessing.get_context("fork").Pool(2) as pool:
        got = pool.map_async(_child_product, range(4)).get(timeout=120)   # a hang fails here
    for (m_ref, gw_ref), (m, gw) in zip(expected, got):
        assert np.array_equal(m_ref, m)
        assert np.array_equal(gw_ref, gw)
    assert np.array_equal(_child_product(0)[0], expected[0][0])   # and the parent still runs kernels
