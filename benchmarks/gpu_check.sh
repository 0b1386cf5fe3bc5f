#!/usr/bin/env bash
# One prepared call for a short GPU slot (budget: 10 minutes; about 6 expected on an H200):
#   preconditions -> GPU -> build (CUDA module for this GPU's architecture only) -> imports ->
#   test collection -> GPU tests -> compute-sanitizer memcheck (cuda backend tests) ->
#   racecheck (one matmul, conv and softmax call) -> gpu_bench.py --quick (one table vs
#   cuBLAS / cuDNN / PyTorch CUDA).
# Every stage runs under its own `timeout` (cut to what is left of a 570 s budget), and the summary
# is rewritten as each stage ends, so an overrun keeps what finished. The tree is tested in place (tools/devbuild.sh layout: the modules are
# built into build/gpu-check and copied next to python/deepkern); nothing is pip-installed.
#
#   benchmarks/gpu_check.sh [--check] [OUT_DIR]      (default OUT_DIR: benchmarks/gpu_check)
#
# --check: for a machine without a GPU. Walks every stage up to the first that needs the device
#   (preconditions, build with the narrowed architecture list, imports, test collection) so that
#   the GPU slot is not spent on script errors. The architecture is DEEPKERN_CUDA_ARCHS or 90.
# Environment: DEEPKERN_CUDA_ARCHS overrides the detected architecture (e.g. "90");
#   GPU_CHECK_JOBS build parallelism (default: all cores); GPU_CHECK_BUILD_LIMIT and
#   GPU_CHECK_BUDGET (whole run) in seconds.
# Needs: cmake >= 3.24, ninja, nvcc (CUDACXX, PATH or /usr/local/cuda), pybind11, numpy, pytest,
#   CuPy (GPU stages); compute-sanitizer for the sanitizer stages; PyTorch (CUDA) for its columns.
set -uo pipefail
cd "$(dirname "$0")/.."
check_only=0
if [ "${1:-}" = "--check" ]; then check_only=1; shift; fi
out="${1:-benchmarks/gpu_check}"
mkdir -p "$out"
summary="$out/summary.md"
export PYTHONPATH="$PWD/python${PYTHONPATH:+:$PYTHONPATH}"
export PATH="$PATH:/usr/local/cuda/bin"
[ -z "${CUDACXX:-}" ] && command -v nvcc >/dev/null 2>&1 && export CUDACXX="$(command -v nvcc)"
jobs="${GPU_CHECK_JOBS:-$(nproc)}"
# a 16-core GPU machine builds one architecture in about 2 minutes; a small --check machine takes longer
build_limit="${GPU_CHECK_BUILD_LIMIT:-$( [ $check_only = 1 ] && echo 1500 || echo 180)}"
# every stage's timeout is cut to what is left of this budget: the whole run fits a 10-minute slot
budget="${GPU_CHECK_BUDGET:-$( [ $check_only = 1 ] && echo 3000 || echo 570)}"
t0=$(date +%s)
status=0
rows=()

write_summary() {
  {
    echo "# deepkern gpu_check ($( [ $check_only = 1 ] && echo "--check, no GPU" || echo "GPU run"))"
    echo
    echo "$(date -u '+%Y-%m-%d %H:%M UTC') on $(hostname); logs in $out/"
    echo
    echo "| stage | result | seconds | note |"
    echo "| --- | --- | --- | --- |"
    printf '%s\n' "${rows[@]}"
    if [ -f "$out/bench.md" ]; then echo; cat "$out/bench.md"; fi
  } >"$summary"
}

# stage NAME LIMIT_S COMMAND...: runs COMMAND (a program, or a function of this script) under
# timeout, logs to $out/NAME.log, adds a summary row. Returns COMMAND's status.
stage() {
  local name="$1" limit="$2"; shift 2
  local start rc note left
  start=$(date +%s)
  left=$(( budget - (start - t0) ))
  if [ "$left" -lt 10 ]; then skip "$name" "no time left in the ${budget}s budget"; status=1; return 1; fi
  [ "$limit" -gt "$left" ] && limit="$left"
  printf '\n=== %s (limit %ss) ===\n' "$name" "$limit"
  if declare -F "$1" >/dev/null; then set -- bash -c "$*"; fi  # functions are exported below
  timeout --kill-after=10 "$limit" "$@" 2>&1 | tee "$out/$name.log"
  rc=${PIPESTATUS[0]}
  note="$(grep -E 'passed|failed|ERROR SUMMARY|RACECHECK SUMMARY|^error|^ERROR' "$out/$name.log" | tail -n 1 | tr '|' '/' | cut -c1-120)"
  case $rc in
    0) rows+=("| $name | ok | $(( $(date +%s) - start )) | $note |") ;;
    124|137) rows+=("| $name | TIMEOUT | $(( $(date +%s) - start )) | over ${limit}s |"); status=1 ;;
    *) rows+=("| $name | FAILED ($rc) | $(( $(date +%s) - start )) | $note |"); status=1 ;;
  esac
  write_summary
  return "$rc"
}

skip() { rows+=("| $1 | skipped | 0 | $2 |"); write_summary; echo "=== $1: skipped ($2)"; }

version_ge() { [ "$(printf '%s\n%s\n' "$2" "$1" | sort -V | head -n 1)" = "$2" ]; }

preconditions() {
  local ok=0 v
  v="$(cmake --version 2>/dev/null | head -n 1 | awk '{print $3}')"
  if [ -z "$v" ]; then echo "cmake: not found (need >= 3.24)"; ok=1
  elif ! version_ge "$v" 3.24; then echo "cmake $v: need >= 3.24 (pip install 'cmake>=3.24')"; ok=1
  else echo "cmake $v: ok"; fi
  command -v ninja >/dev/null && echo "ninja: ok" || { echo "ninja: not found (pip install ninja)"; ok=1; }
  if [ -z "${CUDACXX:-}" ]; then echo "nvcc: not found (set CUDACXX or PATH)"; ok=1
  else echo "nvcc: $("$CUDACXX" --version | grep -o 'release [0-9.]*')"; fi
  python -c "import pytest, numpy, pybind11" 2>/dev/null && echo "pytest, numpy, pybind11: ok" \
    || { echo "python packages: need pytest, numpy and pybind11"; ok=1; }
  if [ "$check_only" = 0 ]; then
    python -c "import cupy" 2>/dev/null && echo "cupy: ok" || { echo "cupy: not importable (pip install cupy-cuda12x or -13x)"; ok=1; }
    local driver toolkit
    driver="$(nvidia-smi 2>/dev/null | grep -o 'CUDA Version: [0-9.]*' | awk '{print $3}')"
    toolkit="$("$CUDACXX" --version 2>/dev/null | grep -o 'release [0-9.]*' | awk '{print $2}')"
    if [ -z "$driver" ]; then echo "driver: nvidia-smi reports no CUDA version"; ok=1
    elif ! version_ge "$driver" "$toolkit"; then
      echo "driver supports CUDA $driver but nvcc is $toolkit: kernels built by it cannot load (need a newer driver)"; ok=1
    else echo "driver CUDA $driver >= toolkit $toolkit: ok"; fi
  fi
  command -v compute-sanitizer >/dev/null && echo "compute-sanitizer: ok" \
    || echo "compute-sanitizer: not found (the sanitizer stages will be skipped)"
  return $ok
}

# Writes the architecture list to build for (this GPU's only: a short build) into $out/archs.
detect_arch() {
  local archs="${DEEPKERN_CUDA_ARCHS:-}"
  if [ -z "$archs" ] && [ "$check_only" = 1 ]; then archs=90; fi
  if [ -z "$archs" ]; then
    nvidia-smi --query-gpu=name,compute_cap,driver_version,memory.total --format=csv || return 1
    archs="$(nvidia-smi --query-gpu=compute_cap --format=csv,noheader | head -n 1 | tr -d ' .')"
    [ -n "$archs" ] || { echo "no GPU found by nvidia-smi"; return 1; }
  fi
  echo "$archs" >"$out/archs"
  echo "building for $archs (real code and PTX)"
}

build() {
  cmake -S . -B build/gpu-check -G Ninja -DCMAKE_BUILD_TYPE=Release -DDEEPKERN_CUDA=ON \
    -DDEEPKERN_CUDA_ARCHS="$(cat "$out/archs")" -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" || return 1
  cmake --build build/gpu-check -j "$jobs" || return 1
  ls build/gpu-check/_cuda*.so >/dev/null 2>&1 || { echo "error: _cuda was not built (nvcc not found by CMake?)"; return 1; }
  for so in build/gpu-check/_cpu*.so build/gpu-check/_cuda*.so; do
    cp "$so" "python/deepkern/.$(basename "$so").tmp$$" && mv -f "python/deepkern/.$(basename "$so").tmp$$" "python/deepkern/$(basename "$so")"
  done
  if command -v cuobjdump >/dev/null; then cuobjdump --list-ptx build/gpu-check/_cuda*.so | head -n 3; fi
}

imports() {
  python - "$check_only" <<'PY'
import sys
import deepkern as dk
from deepkern import _cuda, backends
from deepkern._info import format_info
print(format_info(dk.info()))
print("device_query:", _cuda.device_query())
if sys.argv[1] == "0" and not backends.available("cuda"):
    sys.exit(f"error: the cuda backend is not usable: {backends.reason_unavailable('cuda')}")
PY
  python benchmarks/gpu_bench.py --help >/dev/null
}

RACE_SCRIPT='
import cupy, numpy as np
from deepkern import backends, ops
backends.set_backend("cuda")
r = lambda *s: cupy.random.standard_normal(s, dtype=cupy.float32)
ops.matmul(r(200, 70), r(70, 260), bias=r(260), activation="relu")
x, w = r(2, 8, 13, 13), r(16, 8, 3, 3)
y = ops.conv2d(x, w, padding=1)
ops.conv2d_backward(r(*y.shape), x, w, padding=1, bias=True)
ops.softmax(r(3, 3000), axis=1)
ops.cross_entropy(r(40, 10), cupy.arange(40) % 10)
cupy.cuda.Device().synchronize()
print("racecheck calls done")
'

export -f preconditions detect_arch build imports version_ge
export check_only out jobs

run_stages() {
  stage preconditions 15 preconditions || return
  stage gpu 15 detect_arch || return
  stage build "$build_limit" build || return
  stage imports 30 imports || return
  stage collect 30 python -m pytest -q --collect-only -p no:cacheprovider tests/test_gpu.py \
    tests/test_gpu_fallbacks.py tests/test_gpu_bugfixes.py || return
  if [ "$check_only" = 1 ]; then
    skip tests "--check: the next stages need a GPU"
    return
  fi
  stage tests 75 python -m pytest -q -rs -p no:cacheprovider tests/test_gpu.py tests/test_gpu_fallbacks.py \
    tests/test_gpu_bugfixes.py
  # batch norm (cuda and cupy against the reference), buffers moved by Module.to, dropout drawn on the GPU
  stage batchnorm 45 python -m pytest -q -rs -p no:cacheprovider \
    tests/test_batchnorm.py::test_gpu_backends_match_the_reference \
    tests/test_batchnorm.py::test_module_to_cuda_moves_buffers_and_runs_there \
    tests/test_new_layers.py::test_dropout_draws_gpu_masks_on_the_gpu
  if command -v compute-sanitizer >/dev/null; then
    # without CuPy's pool each array is its own allocation: memcheck sees exact bounds
    DEEPKERN_GPU_TEST_NO_POOL=1 stage memcheck 100 compute-sanitizer --tool memcheck --error-exitcode 86 \
      python -m pytest -q -x -p no:cacheprovider tests/test_gpu.py -k "not cupy and not large_k"
    stage racecheck 45 compute-sanitizer --tool racecheck --racecheck-report hazard --error-exitcode 86 \
      python -c "$RACE_SCRIPT"
  else
    skip memcheck "compute-sanitizer not found"
    skip racecheck "compute-sanitizer not found"
  fi
  stage bench 130 python benchmarks/gpu_bench.py --quick --out "$out/bench.md"
}

write_summary
run_stages
write_summary
echo
cat "$summary"
exit "$status"
