#!/usr/bin/env bash
# CI: deepkern._cpu built with AddressSanitizer + UndefinedBehaviorSanitizer (every finding is
# fatal: -fno-sanitize-recover=all), then a reduced test selection and the binding fuzzer's
# fixed-seed corpus for each SIMD variant (generic, avx2, avx512; a variant this CPU lacks is
# skipped). Python itself is not instrumented, so the ASan runtime is preloaded.
#   .ci/sanitize.sh            # ~6 minutes on 2 cores (build ~2, tests ~2.5, fuzzer ~1.5)
# Needs: the [test] extras (pytest, hypothesis), cmake, ninja, pybind11, a GCC with libasan.
set -euo pipefail
cd "$(dirname "$0")/.."

flags="-fsanitize=address,undefined -fno-sanitize-recover=all -fno-omit-frame-pointer -g"
target="$(mktemp -d)"
trap 'rm -rf "$target"' EXIT

# the build tools (CI's venv has the [test] extras; a build backend's own tools live elsewhere)
python -c "import pybind11, cmake, ninja" 2>/dev/null || python -m pip install cmake ninja pybind11 >/dev/null

echo "== build deepkern._cpu with ASan + UBSan (build/dev-sanitize)"
# a separate build folder; the module goes into a copy of python/ (the tree's own stays untouched)
DEEPKERN_DEV_TARGET="$target" tools/devbuild.sh sanitize \
  -DCMAKE_BUILD_TYPE=RelWithDebInfo -DCMAKE_INTERPROCEDURAL_OPTIMIZATION=OFF \
  -DCMAKE_CXX_FLAGS="$flags" -DCMAKE_MODULE_LINKER_FLAGS="$flags" -DCMAKE_SHARED_LINKER_FLAGS="$flags"

export PYTHONPATH="$target"
# libstdc++ too: ASan must find the real __cxa_throw when the module throws
export LD_PRELOAD="$(gcc -print-file-name=libasan.so) $(gcc -print-file-name=libstdc++.so)"
# leaks: CPython frees little at exit on purpose; allocations past 2 GiB fail (MemoryError) as
# the fuzzer's memory limit would without ASan
export ASAN_OPTIONS="detect_leaks=0:allocator_may_return_null=1:max_allocation_size_mb=2048:abort_on_error=0"
export UBSAN_OPTIONS="print_stacktrace=1:halt_on_error=1"
export DEEPKERN_BACKEND=cpu
python -c "import deepkern._cpu as c; print('sanitized module:', c.__file__)"

echo "== reduced test selection (the variant-parametrised tests cover generic, avx2, avx512)"
# test_robustness's huge-K matmul maps 16 GB of zero pages: too slow under ASan, run by plain CI
python -m pytest -q -x -p no:cacheprovider \
  tests/test_robustness.py tests/test_nan_rule.py tests/test_memory_kernels.py tests/test_host_cache.py \
  tests/test_gemm_variants.py tests/test_gemm_threaded.py tests/test_errors.py tests/test_conv_fused.py \
  tests/test_bf16.py tests/test_bf16_conv.py tests/test_bf16_winograd.py tests/test_optim_many.py \
  tests/test_bf16_fewtap.py tests/test_bf16_matmul_backward.py \
  tests/test_conv_winograd_wgrad.py \
  tests/test_conv_winograd.py tests/test_conv_small.py tests/test_conv_sparse_grad.py tests/test_conv_sparse_wgrad.py \
  -k "not k_near_the_index_limit and not numba and not numpy"

echo "== binding fuzzer, fixed seed, every SIMD variant"
for simd in generic avx2 avx512; do
  if ! python -c "from deepkern import _cpu; _cpu.set_simd_variant('$simd')" 2>/dev/null; then
    echo "simd=$simd: not supported by this CPU, skipped"
    continue
  fi
  python -m tests.fuzz.fuzz_binding --seed 0 --examples 40 --simd "$simd" --timeout 300
done
