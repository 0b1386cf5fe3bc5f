#!/usr/bin/env bash
# CI: ruff over the whole tree (configuration in pyproject.toml [tool.ruff]).
set -euo pipefail
cd "$(dirname "$0")/.."
command -v ruff >/dev/null 2>&1 || python -m pip install 'ruff>=0.4' >/dev/null
ruff check .
