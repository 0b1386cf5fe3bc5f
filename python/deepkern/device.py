"""Devices for arrays; the implementation lives in :mod:`deepkern._device` (this name stays importable)."""
from __future__ import annotations

from ._device import *  # noqa: F403  (the public names, re-exported)
from ._device import __all__  # noqa: F401
