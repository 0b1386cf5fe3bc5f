#!/usr/bin/env bash
# Run the pytest-benchmark suites with NumPy's OpenBLAS on the kernel it picks for this CPU:
# OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE are dropped for this process only (OpenBLAS reads them when
# NumPy is imported). Extra arguments go to pytest, e.g. benchmarks/run.sh -k matmul
set -euo pipefail
here="$(cd "$(dirname "${BASH_SOURCE[0]}")" && pwd)"
exec env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE python -m pytest "$here" --benchmark-only "$@"
