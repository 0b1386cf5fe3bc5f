#!/usr/bin/env bash
# CI: data-parallel training over MPI. Installs the [mpi] extra's packages (mpi4py, mpich) into
# the active environment without rebuilding deepkern, then runs the distributed tests: the
# single-process ones and the launch/fault/CLI ones (which start mpiexec -n 2 themselves), and
# tests/mpi as one job of 2 ranks. One thread per rank: the runner has 2 cores.
set -euo pipefail
cd "$(dirname "$0")/.."

echo "== install the [mpi] extra (requirements from pyproject.toml)"
mapfile -t requirements < <(python - <<'PY'
import tomllib
with open("pyproject.toml", "rb") as f:
    print("\n".join(tomllib.load(f)["project"]["optional-dependencies"]["mpi"]))
PY
)
pip install "${requirements[@]}" >/dev/null

export OMP_NUM_THREADS=1 DEEPKERN_NUM_THREADS=1 DEEPKERN_DIST_TIMEOUT=120
echo "== distributed tests (one process, and mpiexec launched by the tests)"
pytest -q tests/test_distributed.py tests/test_distributed_launch.py

echo "== distributed tests on 2 ranks (mpiexec -n 2 pytest tests/mpi)"
timeout 600 mpiexec -n 2 python -m pytest -q -p no:cacheprovider tests/mpi
