"""Keras's preprocessing namespace: ``preprocessing.image.ImageDataGenerator``."""
from __future__ import annotations

from . import image

__all__ = ["image"]
