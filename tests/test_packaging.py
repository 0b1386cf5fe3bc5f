"""Packaging: one version source, strict pytest, lint configured."""
from __future__ import annotations

import importlib.metadata
import re
from pathlib import Path

import deepkern as dk
from deepkern import _version

ROOT = Path(__file__).resolve().parents[1]
PYPROJECT = (ROOT / "pyproject.toml").read_text(encoding="utf-8")


def test_the_version_is_written_once():
    project = PYPROJECT.split("[project]", 1)[1].split("\n[", 1)[0]
    assert re.search(r'^dynamic\s*=\s*\["version"\]', project, re.M)
    assert not re.search(r"^version\s*=", project, re.M), "the version lives in python/deepkern/_version.py"
    assert 'input = "python/deepkern/_version.py"' in PYPROJECT
    assert dk.__version__ == _version.__version__ and dk.info()["version"] == _version.__version__
    try:
        dist = importlib.metadata.distribution("deepkern")
    except importlib.metadata.PackageNotFoundError:
        return
    if Path(dist.locate_file("deepkern/__init__.py")).resolve() == Path(dk.__file__).resolve():
        assert dist.version == dk.__version__   # the installed metadata came from the same file


def test_pytest_is_strict_and_ruff_configured():
    assert "--strict-markers" in PYPROJECT and "--strict-config" in PYPROJECT
    assert "[tool.ruff]" in PYPROJECT and "[tool.ruff.lint]" in PYPROJECT
