#!/usr/bin/env bash
# CI job: the full Fashion-MNIST from the Debian package dataset-fashion-mnist (60,000 / 10,000 IDX
# files under /usr/share/datasets/fashion-mnist), read by every front end; the test fails instead of
# skipping when the files are missing. Needs root (or sudo) for apt-get; reuses the venv of .ci/run
# when it is active, else the python3 on PATH must have deepkern installed.
set -euo pipefail
cd "$(dirname "$0")/.."

if [ ! -d /usr/share/datasets/fashion-mnist ]; then
  SUDO=""
  [ "$(id -u)" -ne 0 ] && SUDO="sudo"
  $SUDO apt-get update -qq
  $SUDO apt-get install -y -qq dataset-fashion-mnist
fi

DEEPKERN_REQUIRE_FASHION=1 python -m pytest -q tests/test_data_full.py tests/test_examples.py -k "fashion"
