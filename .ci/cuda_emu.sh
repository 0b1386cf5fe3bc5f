#!/usr/bin/env bash
# CI: the CUDA kernels (csrc/cuda) on the CPU emulator, no GPU needed (tests/cuda_emu/README.md):
# every kernel path against the NumPy reference, the regression tests of issue 13's kernel bugs,
# and the ThreadSanitizer subset (no race, and a race found once a barrier is deleted).
set -euo pipefail
cd "$(dirname "$0")/.."
echo "== CUDA kernels on the CPU emulator (+ ThreadSanitizer subset)"
python -m pytest -q -k emul tests/test_cuda_emu.py tests/test_cuda_emu_bugs.py tests/test_batchnorm_emu.py "$@"
