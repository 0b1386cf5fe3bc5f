"""The typed stubs of the compiled modules list exactly the functions the built modules have.

After adding a binding function, regenerate with ``PYTHONPATH=python python tools/gen_stubs.py``.
"""
from __future__ import annotations

import ast
import importlib
import importlib.util
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PACKAGE = ROOT / "python" / "deepkern"


def _generator():
    spec = importlib.util.spec_from_file_location("gen_stubs", ROOT / "tools" / "gen_stubs.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def stub_functions(path: Path) -> list:
    tree = ast.parse(path.read_text(encoding="utf-8"), filename=str(path))
    return sorted({node.name for node in tree.body if isinstance(node, ast.FunctionDef)})


@pytest.mark.parametrize("name", ["_cpu", "_cuda"])
def test_stub_lists_exactly_the_module_functions(name):
    try:
        module = importlib.import_module(f"deepkern.{name}")
    except ImportError:
        pytest.skip(f"deepkern.{name} is not built here")
    stub = PACKAGE / f"{name}.pyi"
    assert stub.exists(), f"{stub.name} is missing: run tools/gen_stubs.py"
    built = _generator().functions(module)
    listed = stub_functions(stub)
    assert listed == built, (f"{stub.name} is out of date (missing {sorted(set(built) - set(listed))}, "
                             f"extra {sorted(set(listed) - set(built))}): run tools/gen_stubs.py")


def test_the_generator_renders_what_it_reads():
    class Fake:
        __name__ = "deepkern._fake"

        @staticmethod
        def scale(x, factor=2.0):
            """scale(x: object, factor: typing.SupportsFloat | typing.SupportsIndex = 2.0) -> numpy.ndarray

            Multiply by factor
            """

    text = _generator().render(Fake)
    tree = ast.parse(text)
    assert [node.name for node in tree.body if isinstance(node, ast.FunctionDef)] == ["scale"]
    assert "factor: float = 2.0" in text and '"""Multiply by factor"""' in text
