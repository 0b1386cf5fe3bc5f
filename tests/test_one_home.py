"""One home per idea: the int-or-pair rule and the window geometry live in ``_validate`` and every
front door (ops, nn, keras) answers the same mistake with the same error."""
from __future__ import annotations

import io
import re
import tokenize
from pathlib import Path

import numpy as np
import pytest

import deepkern as dk
from deepkern import _validate
from deepkern.keras import layers

PACKAGE = Path(__file__).resolve().parents[1] / "python" / "deepkern"

FRONT_DOORS = {
    "ops": lambda k: dk.ops.max_pool2d(np.ones((1, 1, 4, 4), np.float32), k),
    "nn.Conv2d": lambda k: dk.nn.Conv2d(1, 2, k),
    "nn.MaxPool2d": lambda k: dk.nn.MaxPool2d(k),
    "keras.Conv2D": lambda k: layers.Conv2D(2, k),
    "keras.MaxPooling2D": lambda k: layers.MaxPooling2D(k),
}


@pytest.mark.parametrize("door", sorted(FRONT_DOORS))
@pytest.mark.parametrize("bad, error", [(1.5, TypeError), ((2, "3"), TypeError), ((1, 2, 3), TypeError),
                                        (0, ValueError), ((2, -1), ValueError)])
def test_the_same_pair_mistake_gets_the_same_error_everywhere(door, bad, error):
    with pytest.raises(error, match="expected"):
        FRONT_DOORS[door](bad)


def _code_lines(path: Path):
    """(line number, the line's code without strings and comments)."""
    lines: dict = {}
    with io.open(path, encoding="utf-8") as f:
        for tok in tokenize.generate_tokens(f.readline):
            if tok.type not in (tokenize.STRING, tokenize.COMMENT):
                lines.setdefault(tok.start[0], []).append(tok.string)
    return [(n, " ".join(parts)) for n, parts in sorted(lines.items())]


def test_window_geometry_is_written_once():
    # (size + 2*padding - kernel) // stride + 1, in any spelling, only in _validate.window_shape
    formula = re.compile(r"-\s*[\w.\[\]\s]+\)\s*//\s*[\w.\[\]\s]+\+\s*1\b")
    found = [f"{p.relative_to(PACKAGE)}:{i}" for p in sorted(PACKAGE.rglob("*.py")) if p.name != "_validate.py"
             for i, line in _code_lines(p) if formula.search(line)]
    assert not found, f"window geometry written again (use _validate.window_shape): {found}"
    assert _validate.window_shape(28, 28, (3, 3), (1, 1), (0, 0)) == (26, 26)
    assert _validate.window_shape(7, 9, (2, 3), (2, 2), (1, 0)) == (4, 4)
    assert dk.nn.Conv2d(1, 1, 3, stride=2, padding=1).output_size(28, 28) == (14, 14)
