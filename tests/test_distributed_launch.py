"""Data-parallel runs launched with ``mpiexec -n 2`` in a subprocess: the CLI, and faults (a rank
that raises, is killed, or stalls must bring the job down with a clear error, never hang).

Skipped where mpi4py or mpiexec is missing (the plain CI install); .ci/mpi.sh installs the
[mpi] extra and runs them. The subprocess timeouts only guard against a hang.
"""
from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap

import pytest

import deepkern

pytest.importorskip("mpi4py")
MPIEXEC = shutil.which("mpiexec", path=os.path.dirname(sys.executable) + os.pathsep + os.environ.get("PATH", ""))
pytestmark = pytest.mark.skipif(MPIEXEC is None, reason="mpiexec not found (pip install 'deepkern[mpi]')")

HANG_GUARD_S = 120

FAULTY_FIT = textwrap.dedent("""
    import os, signal, sys, time
    import numpy as np
    import deepkern as dk
    from deepkern import distributed as dist

    mode = sys.argv[1]

    class Fault(dk.train.Callback):
        def on_epoch_end(self, epoch, logs=None):
            if dist.rank() != 1 or epoch != 0:
                return
            if mode == "raise":
                raise ValueError("boom on rank 1")
            if mode == "kill":
                os.kill(os.getpid(), signal.SIGKILL)
            if mode == "stall":
                time.sleep(600)

    x = np.random.default_rng(0).standard_normal((64, 6)).astype(np.float32)
    y = (x[:, 0] > 0).astype(np.int64)
    dk.manual_seed(0)
    dk.train.fit(dk.models.MLP(6, (4,), 2), x, y, epochs=50, batch_size=8, progress=False,
                 callbacks=[Fault()])
    print("rank", dist.rank(), "finished")
""")


def _launch(args, cwd, timeout_env=None):
    env = dict(os.environ, OMP_NUM_THREADS="1", DEEPKERN_NUM_THREADS="1")
    # the ranks import the deepkern under test, whatever the working directory
    package_root = os.path.dirname(os.path.dirname(deepkern.__file__))
    env["PYTHONPATH"] = os.pathsep.join([package_root] + [p for p in [env.get("PYTHONPATH")] if p])
    if timeout_env is not None:
        env["DEEPKERN_DIST_TIMEOUT"] = str(timeout_env)
    proc = subprocess.run([MPIEXEC, "-n", "2", sys.executable] + args, cwd=cwd, env=env,
                          capture_output=True, text=True, timeout=HANG_GUARD_S)
    return proc.returncode, proc.stdout + proc.stderr


@pytest.fixture
def faulty(tmp_path):
    path = tmp_path / "faulty_fit.py"
    path.write_text(FAULTY_FIT)
    return str(path)


def test_a_rank_that_raises_aborts_every_rank(faulty, tmp_path):
    code, out = _launch([faulty, "raise"], tmp_path, timeout_env=60)
    assert code != 0, out
    assert "ValueError: boom on rank 1" in out
    assert "deepkern.distributed: rank 1 of 2 failed" in out and "aborting all ranks" in out
    assert "finished" not in out


def test_a_killed_rank_ends_the_job(faulty, tmp_path):
    code, out = _launch([faulty, "kill"], tmp_path, timeout_env=20)
    assert code != 0, out
    # MPICH's launcher reports the dead rank and ends the others; elsewhere the deadline does
    assert "BAD TERMINATION" in out or "did not complete within 20 s" in out, out
    assert "finished" not in out


def test_a_stalled_rank_times_out_the_others(faulty, tmp_path):
    code, out = _launch([faulty, "stall"], tmp_path, timeout_env=3)
    assert code != 0, out
    assert "DistributedTimeoutError" in out and "did not complete within 3 s" in out
    assert "rank 0 of 2" in out


def test_cli_trains_on_two_ranks(tmp_path):
    code, out = _launch(["-m", "deepkern.cli", "train", "--model", "mlp", "--epochs", "1", "--limit", "400",
                         "--no-progress"], tmp_path)
    assert code == 0, out
    assert "batch 32 per rank (64 in all), data parallel on 2 ranks (MPI)" in out
    assert out.count("test accuracy:") == 1  # rank 0 alone reports
    assert "on 2 ranks" in out.split("training:")[-1]
    assert (tmp_path / "deepkern-mlp.npz").exists() and (tmp_path / "deepkern-mlp-history.png").exists()
