#!/usr/bin/env bash
# GPU verification for a machine with a CUDA GPU and no network access:
#   1. builds and installs deepkern with the CUDA module (pip, no build isolation),
#   2. runs the GPU tests, then again under compute-sanitizer's memcheck,
#   3. times the kernels against cuBLAS/cuDNN/PyTorch and trains the seed CNN (gpu_bench.py).
# Usage: benchmarks/gpu_check.sh [report.md]     (default benchmarks/gpu_check.md)
# Environment: DEEPKERN_CUDA_ARCHS=90-real builds for one architecture only (faster);
#              EDITABLE=1 installs with -e; SKIP_SANITIZER=1 skips the memcheck pass.
# Needs: nvcc (CUDACXX or /usr/local/cuda), cmake, ninja, scikit-build-core, pybind11, numpy,
# pytest and CuPy installed beforehand; PyTorch (CUDA build) is optional, for the comparisons.
set -euo pipefail
cd "$(dirname "$0")/.."
report="${1:-benchmarks/gpu_check.md}"
logdir="$(mktemp -d)"
status=0

section() { printf '\n=== %s ===\n' "$1"; }

section "GPU"
if ! command -v nvidia-smi >/dev/null 2>&1 || ! nvidia-smi -L; then
  echo "no NVIDIA GPU visible: nothing to check" >&2
  exit 2
fi

section "build (CUDA on)"
if [ -z "${CUDACXX:-}" ] && [ -x /usr/local/cuda/bin/nvcc ]; then
  export CUDACXX=/usr/local/cuda/bin/nvcc
fi
export PATH="${PATH}:/usr/local/cuda/bin"
install_args=(--no-build-isolation --no-deps -C cmake.define.DEEPKERN_CUDA=ON)
if [ -n "${DEEPKERN_CUDA_ARCHS:-}" ]; then
  install_args+=(-C "cmake.define.DEEPKERN_CUDA_ARCHS=${DEEPKERN_CUDA_ARCHS}")
fi
start=$(date +%s)
if [ "${EDITABLE:-0}" = "1" ]; then
  python -m pip install "${install_args[@]}" -e . 2>&1 | tee "$logdir/build.log"
else
  python -m pip install "${install_args[@]}" . 2>&1 | tee "$logdir/build.log"
fi
echo "build took $(( $(date +%s) - start )) s"
# Import from the installed package, not the source tree, and require the CUDA backend.
python - <<'PY'
import sys
import deepkern as dk
from deepkern import backends
from deepkern._info import format_info
print(format_info(dk.info()))
if not backends.available("cuda"):
    sys.exit(f"the cuda backend is not usable: {backends.reason_unavailable('cuda')}")
PY

section "GPU tests"
if ! python -m pytest -q -rs tests/test_gpu.py tests/test_gpu_fallbacks.py 2>&1 | tee "$logdir/tests.log"; then
  status=1
fi

section "GPU tests under compute-sanitizer memcheck"
sanitizer="$(command -v compute-sanitizer || true)"
if [ "${SKIP_SANITIZER:-0}" = "1" ]; then
  echo "skipped (SKIP_SANITIZER=1)"
elif [ -z "$sanitizer" ]; then
  echo "compute-sanitizer not found: memcheck pass skipped" | tee "$logdir/memcheck.log"
else
  # Without CuPy's pool every array is its own allocation, so memcheck sees exact bounds.
  if ! DEEPKERN_GPU_TEST_NO_POOL=1 "$sanitizer" --tool memcheck --error-exitcode 86 \
      python -m pytest -q -x tests/test_gpu.py 2>&1 | tee "$logdir/memcheck.log"; then
    status=1
  fi
  grep -E "ERROR SUMMARY" "$logdir/memcheck.log" || true
fi

section "timings"
if ! python benchmarks/gpu_bench.py --out "$report"; then
  status=1
fi

section "summary"
{
  echo
  echo "## Tests"
  echo
  echo '```'
  tail -n 5 "$logdir/tests.log"
  echo '```'
  if [ -f "$logdir/memcheck.log" ]; then
    echo
    echo "## compute-sanitizer memcheck"
    echo
    echo '```'
    grep -E "ERROR SUMMARY|passed|failed|skipped" "$logdir/memcheck.log" | tail -n 5 || true
    echo '```'
  fi
} >> "$report"
echo "report: $report (logs in $logdir)"
exit "$status"
