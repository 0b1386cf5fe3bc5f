"""Devices for arrays: "cpu" (NumPy) and "cuda" (CuPy on a CUDA GPU).

Helpers for the layers above ``ops`` (Tensor.to, Module.to, fit(device=...), the CLI) to move
arrays and to ask for the GPU array module. Asking for "cuda" where no GPU backend is usable
raises ``RuntimeError("no usable GPU: ...")`` naming why, never a silent CPU fallback.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, List

import numpy as np

from . import backends

__all__ = ["gpu_available", "gpu_unavailable_reason", "gpu_array_module", "array_module",
           "normalize_device", "device_of", "to_device"]


def gpu_unavailable_reason() -> str:
    """Why neither GPU backend (cuda, cupy) is usable, or "" when one is."""
    reasons: List[str] = []
    for name in backends.GPU_BACKENDS:
        reason = backends.reason_unavailable(name)
        if reason is None:
            return ""
        reasons.append(f"{name}: {reason}")
    return "; ".join(reasons)


def gpu_available() -> bool:
    """True when GPU arrays can run (through the cuda or the cupy backend)."""
    return gpu_unavailable_reason() == ""


def gpu_array_module() -> ModuleType:
    """The ``cupy`` module, once a GPU backend is known to be usable; else RuntimeError."""
    reason = gpu_unavailable_reason()
    if reason:
        raise RuntimeError(f"no usable GPU: {reason}")
    import cupy  # both GPU backends need it, so it imports once one is usable

    return cupy


def normalize_device(device: Any) -> str:
    """ "cpu" or "cuda" for the spellings "cpu", "cuda", "cuda:0", "gpu" (TypeError/ValueError otherwise)."""
    if not isinstance(device, str):
        raise TypeError(f"device: expected a string such as 'cpu' or 'cuda', got {type(device).__name__}")
    name = device.strip().lower()
    if name == "cpu":
        return "cpu"
    if name in ("cuda", "gpu") or (name.startswith("cuda:") and name[5:].isdigit()):
        return "cuda"
    raise ValueError(f"device: expected 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")


def device_of(array: Any) -> str:
    """ "cuda" for CuPy (CUDA array interface) arrays, "cpu" for NumPy arrays."""
    if hasattr(array, "__cuda_array_interface__") and not isinstance(array, np.ndarray):
        return "cuda"
    return "cpu"


def array_module(array: Any) -> ModuleType:
    """numpy for CPU arrays, cupy for GPU arrays."""
    return gpu_array_module() if device_of(array) == "cuda" else np


def to_device(array: Any, device: str) -> Any:
    """The array on ``device`` ("cpu" or "cuda[:N]"); the same object when it is already there.

    Dtype and layout are kept. "cuda:N" places the copy on GPU N.
    """
    target = normalize_device(device)
    here = device_of(array)
    if target == "cpu":
        if here == "cpu":
            return array
        return array.get()  # cupy.ndarray -> numpy.ndarray (synchronises the stream)
    cupy = gpu_array_module()
    index = int(device.split(":", 1)[1]) if ":" in device else None
    if here == "cuda" and (index is None or array.device.id == index):
        return array
    if index is None:
        return cupy.asarray(array)
    count = cupy.cuda.runtime.getDeviceCount()
    if index >= count:
        raise ValueError(f"device: {device!r} does not exist ({count} GPU(s) visible)")
    with cupy.cuda.Device(index):
        return cupy.asarray(array)
