"""``deepkern.torchvision.transforms``: ``Compose``, ``ToTensor``, ``Normalize``, ``Lambda``.

They take and return NumPy arrays / ``deepkern.torch`` tensors (no PIL). ``ToTensor`` and
``Normalize`` also work on a whole batch at once (leading axes are kept), which the datasets use
to transform a mini-batch in one call.
"""
from __future__ import annotations

from typing import Any, Callable, Sequence

import numpy as np

from ..autograd import Tensor as _CoreTensor
from ..torch._tensor import Tensor

__all__ = ["Compose", "ToTensor", "Normalize", "Lambda"]


class Compose:
    """Apply ``transforms`` in order."""

    def __init__(self, transforms: Sequence[Callable[[Any], Any]]) -> None:
        self.transforms = list(transforms)

    def __call__(self, x: Any) -> Any:
        for t in self.transforms:
            x = t(x)
        return x

    @property
    def batchable(self) -> bool:
        """True when every step has ``batch`` (then datasets transform whole batches at once)."""
        return all(hasattr(t, "batch") for t in self.transforms)

    def batch(self, images: Any) -> Any:
        for t in self.transforms:
            images = t.batch(images)
        return images


class ToTensor:
    """uint8 image ``(H, W)`` or ``(H, W, C)`` in 0-255 -> float32 tensor ``(C, H, W)`` in [0, 1].

    A batch ``(N, H, W)`` of grayscale images becomes ``(N, 1, H, W)``.
    """

    def __call__(self, pic: Any) -> Tensor:
        a = np.asarray(pic.data if isinstance(pic, _CoreTensor) else pic)
        scale = np.float32(1.0 / 255.0) if a.dtype == np.uint8 else np.float32(1.0)
        out = a.astype(np.float32) * scale
        if a.ndim == 2:
            out = out[..., None, :, :]            # grayscale: add the channel axis
        elif a.ndim == 3:
            out = np.moveaxis(out, -1, 0)         # (H, W, C) -> (C, H, W)
        return Tensor._wrap(np.ascontiguousarray(out))

    def batch(self, images: np.ndarray) -> Tensor:
        """``(N, H, W)`` uint8 -> ``(N, 1, H, W)`` float32 in [0, 1]."""
        a = np.asarray(images)
        scale = np.float32(1.0 / 255.0) if a.dtype == np.uint8 else np.float32(1.0)
        return Tensor._wrap(np.ascontiguousarray(a.astype(np.float32)[:, None] * scale))


class Normalize:
    """``(x - mean[c]) / std[c]`` per channel of a ``(C, H, W)`` (or ``(N, C, H, W)``) tensor."""

    def __init__(self, mean: Sequence[float], std: Sequence[float]) -> None:
        self.mean = np.asarray(mean, np.float32).reshape(-1, 1, 1)
        self.std = np.asarray(std, np.float32).reshape(-1, 1, 1)
        if np.any(self.std == 0):
            raise ValueError(f"std: must be non-zero, got {list(np.ravel(std))}")

    def __call__(self, x: Any) -> Tensor:
        a = np.asarray(x.data if isinstance(x, _CoreTensor) else x, np.float32)
        return Tensor._wrap(np.ascontiguousarray((a - self.mean) / self.std, dtype=np.float32))

    batch = __call__


class Lambda:
    """Apply a user function."""

    def __init__(self, fn: Callable[[Any], Any]) -> None:
        self.fn = fn

    def __call__(self, x: Any) -> Any:
        return self.fn(x)
