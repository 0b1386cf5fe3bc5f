"""scikit-learn wrappers: ``wrappers.scikit_learn.KerasClassifier``."""
from __future__ import annotations

from . import scikit_learn

__all__ = ["scikit_learn"]
