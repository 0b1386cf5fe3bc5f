#!/usr/bin/env bash
# Incremental developer build: compiles the extension modules into build/dev-<name> and puts
# them next to the Python sources, so `PYTHONPATH=python pytest` tests the source tree.
#   tools/devbuild.sh [name] [extra cmake args...]
# name defaults to "main"; the CUDA module is off unless you pass -DDEEPKERN_CUDA=ON.
# DEEPKERN_DEV_TARGET=/tmp/mytree copies python/ there first and installs the modules into
# that copy instead, so work in progress never replaces the shared in-tree module.
# Modules are replaced by rename, never overwritten in place (a running process keeps its mapping).
set -euo pipefail
cd "$(dirname "$0")/.."
name="${1:-main}"; shift || true
dir="build/dev-$name"
cmake -S . -B "$dir" -G Ninja -DCMAKE_BUILD_TYPE=Release -DDEEPKERN_CUDA=OFF \
  -Dpybind11_DIR="$(python -m pybind11 --cmakedir)" "$@" >/dev/null
cmake --build "$dir" -j 2
dest=python/deepkern
if [ -n "${DEEPKERN_DEV_TARGET:-}" ]; then
  mkdir -p "$DEEPKERN_DEV_TARGET"
  cp -r python/deepkern "$DEEPKERN_DEV_TARGET/"
  dest="$DEEPKERN_DEV_TARGET/deepkern"
fi
for so in "$dir"/_cpu*.so "$dir"/_cuda*.so; do
  [ -e "$so" ] || continue
  cp "$so" "$dest/.$(basename "$so").tmp$$"
  mv -f "$dest/.$(basename "$so").tmp$$" "$dest/$(basename "$so")"
done
echo "built into $dir and installed into $dest"
