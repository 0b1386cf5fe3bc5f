"""The benchmark behind ``deepkern bench``; it lives in :mod:`deepkern._bench` (this name stays importable)."""
from __future__ import annotations

from ._bench import *  # noqa: F403
from ._bench import __all__  # noqa: F401
