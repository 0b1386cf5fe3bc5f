"""Front ends that mirror other frameworks' older APIs: ``compat.v1`` is TensorFlow 1's graph API."""
from __future__ import annotations

from . import v1

__all__ = ["v1"]
