#!/usr/bin/env bash
# Runs emulation tests against the kernels (csrc/) of another commit, each test in its own pytest
# process (an old kernel may crash the process), and prints one PASS/FAIL line per test.
#   tests/cuda_emu/against_commit.sh COMMIT [-k expression [test files]]
#   (defaults: emul; tests/test_cuda_emu.py tests/test_cuda_emu_bugs.py)
# The tests are this checkout's; only the kernels come from COMMIT (DEEPKERN_EMU_CSRC).
set -uo pipefail
cd "$(dirname "$0")/../.."
commit="${1:?usage: against_commit.sh COMMIT [-k expression]}"
expr="${2:-emul}"
read -r -a files <<<"${3:-tests/test_cuda_emu.py tests/test_cuda_emu_bugs.py}"
tmp="$(mktemp -d)"
trap 'rm -rf "$tmp"' EXIT
git archive "$commit" csrc | tar -x -C "$tmp"
export DEEPKERN_EMU_CSRC="$tmp/csrc" PYTHONPATH="python${PYTHONPATH:+:$PYTHONPATH}"
python tests/cuda_emu/build.py lib >/dev/null || { echo "the kernels of $commit do not build"; exit 1; }
mapfile -t ids < <(python -m pytest -q --collect-only -k "$expr" "${files[@]}" | grep '::')
for id in "${ids[@]}"; do
  if python -m pytest -q -x -k "$expr" "$id" >"$tmp/log" 2>&1; then
    echo "PASS $id"
  else
    why="$(grep -E '^E ' "$tmp/log" | head -n 1 | cut -c1-110)"
    grep -q 'Fatal Python error\|Segmentation fault\|Aborted' "$tmp/log" && why="crashed: $(grep -m1 -E 'Fatal Python error|cuda_emu:' "$tmp/log" | cut -c1-100)"
    echo "FAIL $id  ${why}"
  fi
done
