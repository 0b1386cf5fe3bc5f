#!/usr/bin/env bash
# Incremental developer build: compiles the extension modules into build/dev-<name> and
# copies them into python/deepkern, so `PYTHONPATH=python pytest` tests the source tree.
#   tools/devbuild.sh [name] [extra cmake args...]   (name defaults to "main"; CUDA off unless -DDEEPKERN_CUDA=ON)
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-main}"; shift || true
dir="build/dev-$name"
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDEEPKERN_CUDA=OFF \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" "$@" >/dev/null
cmake --build "$dir" -j 2
cp "$dir"/_cpu*.so python/deepkern/
if ls "$dir"/_cuda*.so >/dev/null 2>&1; then cp "$dir"/_cuda*.so python/deepkern/; fi
echo "built into $dir and copied to python/deepkern/"
