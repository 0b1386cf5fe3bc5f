"""Devices for arrays: "cpu" (NumPy) and "cuda[:N]" (CuPy on CUDA GPU N).

The one owner of "which device is this array" and "move this array": Tensor.to, Module.to,
the optimizers' state, fit(device=...), the CLI and the benchmarks all ask here. Asking for
"cuda" where no GPU backend is usable raises ``RuntimeError("no usable GPU: ...")`` naming why,
never a silent CPU fallback. "cuda:N" keeps its index: the copy lands on GPU N.
"""
from __future__ import annotations

from types import ModuleType
from typing import Any, List, Optional, Tuple

import numpy as np

from . import backends
from ._validate import is_gpu_array

__all__ = ["gpu_available", "gpu_unavailable_reason", "gpu_array_module", "array_module",
           "normalize_device", "parse_device", "canonical_device", "device_name", "device_of", "to_device",
           "move", "to_host", "xp_of",
           "is_gpu_array"]


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


def parse_device(device: Any) -> Tuple[str, Optional[int]]:
    """("cpu", None), ("cuda", None) or ("cuda", N) for "cpu", "cuda"/"gpu", "cuda:N"
    (TypeError for a non-string, ValueError for another name)."""
    if not isinstance(device, str):
        raise TypeError(f"device: expected a string such as 'cpu' or 'cuda', got {type(device).__name__}")
    name = device.strip().lower()
    if name == "cpu":
        return "cpu", None
    if name in ("cuda", "gpu"):
        return "cuda", None
    if name.startswith("cuda:") and name[5:].isdigit():
        return "cuda", int(name[5:])
    raise ValueError(f"device: expected 'cpu' or 'cuda' (or 'cuda:N'), got {device!r}")


def canonical_device(device: Any) -> str:
    """ "cpu", "cuda" or "cuda:N": the spelling checked and lower-cased, the GPU index kept."""
    kind, index = parse_device(device)
    return kind if index is None else f"{kind}:{index}"


def normalize_device(device: Any) -> str:
    """ "cpu" or "cuda" for the spellings "cpu", "cuda", "cuda:0", "gpu" (TypeError/ValueError otherwise)."""
    return parse_device(device)[0]


def device_of(array: Any) -> str:
    """ "cuda" for CuPy (CUDA array interface) arrays, "cpu" for NumPy arrays."""
    return "cuda" if is_gpu_array(array) else "cpu"


def device_name(array: Any) -> str:
    """ "cpu" for host arrays, "cuda:N" for an array on GPU N (what moves it back exactly)."""
    if not is_gpu_array(array):
        return "cpu"
    gpu = getattr(array, "device", None)
    return f"cuda:{gpu.id}" if hasattr(gpu, "id") else "cuda"


def xp_of(array: Any) -> ModuleType:
    """The array module (numpy or cupy) that owns ``array``."""
    if is_gpu_array(array):
        import cupy  # only reached when a cupy array exists, so cupy is importable
        return cupy
    return np


def array_module(array: Any) -> ModuleType:
    """numpy for CPU arrays, cupy for GPU arrays."""
    return gpu_array_module() if device_of(array) == "cuda" else np


def to_host(array: Any) -> np.ndarray:
    """A NumPy array with the values of ``array`` (a copy from the GPU; the array itself on the CPU)."""
    if is_gpu_array(array):
        return array.get()
    return np.asarray(array)


def to_device(array: Any, device: str) -> Any:
    """The array on ``device`` ("cpu" or "cuda[:N]"); the same object when it is already there.

    Dtype and layout are kept. "cuda:N" places the copy on GPU N.
    """
    target, index = parse_device(device)
    here = device_of(array)
    if target == "cpu":
        if here == "cpu":
            return array
        return array.get()  # cupy.ndarray -> numpy.ndarray (synchronises the stream)
    cupy = gpu_array_module()
    if here == "cuda" and (index is None or array.device.id == index):
        return array
    if index is None:
        return cupy.asarray(array)
    count = cupy.cuda.runtime.getDeviceCount()
    if index >= count:
        raise ValueError(f"device: {device!r} does not exist ({count} GPU(s) visible)")
    with cupy.cuda.Device(index):
        return cupy.asarray(array)


def move(array: Any, device: str) -> Any:
    """:func:`to_device`, C-contiguous (what ``ops`` requires of every array it is given)."""
    # the common case first, without parsing the name
    if device == "cpu" and isinstance(array, np.ndarray) and array.flags.c_contiguous:
        return array
    out = to_device(array, device)
    if out.flags.c_contiguous:
        return out
    return xp_of(out).ascontiguousarray(out)
