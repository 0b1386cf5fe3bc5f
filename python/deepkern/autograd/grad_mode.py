"""Whether operations record the graph: a per-thread switch (PyTorch's rule).

``no_grad()`` in one thread never changes another's: a predict thread under ``no_grad`` beside a
training loop leaves the loop recording. Each new thread starts with recording on.
"""
from __future__ import annotations

import contextlib
import threading
from typing import Any, List

__all__ = ["no_grad", "enable_grad", "is_grad_enabled", "set_grad_enabled"]


class _State(threading.local):
    # threading.local runs __init__ once per thread on first access: every thread starts enabled
    def __init__(self) -> None:
        self.enabled = True


_state = _State()


def is_grad_enabled() -> bool:
    """True while operations record the graph in this thread (outside ``no_grad``)."""
    return _state.enabled


def set_grad_enabled(enabled: bool) -> None:
    """Turn recording on or off for the calling thread."""
    _state.enabled = bool(enabled)


class _GradMode(contextlib.ContextDecorator):
    """Context manager (and decorator) setting whether this thread's operations record the graph."""

    def __init__(self, enabled: bool) -> None:
        self._enabled = enabled
        # one stack per thread: the same decorated function may run in several threads at once
        self._saved = threading.local()

    def _stack(self) -> List[bool]:
        stack = getattr(self._saved, "stack", None)
        if stack is None:
            stack = self._saved.stack = []
        return stack

    def __enter__(self) -> "_GradMode":
        self._stack().append(_state.enabled)
        _state.enabled = self._enabled
        return self

    def __exit__(self, *exc: Any) -> None:
        _state.enabled = self._stack().pop()


def no_grad() -> _GradMode:
    """``with dk.no_grad(): ...`` runs without recording the graph (results never need grad)."""
    return _GradMode(False)


def enable_grad() -> _GradMode:
    """Re-enable recording inside a ``no_grad`` block."""
    return _GradMode(True)
