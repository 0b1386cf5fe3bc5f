"""The package stays readable: no module over 700 lines, no function over 120 (docstring included)."""
from __future__ import annotations

import ast
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "deepkern"
MODULE_LINES = 700
FUNCTION_LINES = 120


def test_modules_and_functions_stay_small():
    too_long = []
    for path in sorted(PACKAGE.rglob("*.py")):
        source = path.read_text(encoding="utf-8")
        lines = source.count("\n") + 1
        name = path.relative_to(PACKAGE.parent)
        if lines > MODULE_LINES:
            too_long.append(f"{name}: {lines} lines (split it by idea)")
        for node in ast.walk(ast.parse(source, filename=str(path))):
            if isinstance(node, (ast.FunctionDef, ast.AsyncFunctionDef)):
                span = node.end_lineno - node.lineno + 1
                if span > FUNCTION_LINES:
                    too_long.append(f"{name}:{node.lineno} {node.name}(): {span} lines")
    assert not too_long, "over the size limits:\n" + "\n".join(too_long)
