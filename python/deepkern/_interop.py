"""Zero-copy exchange of arrays with other libraries: DLPack and the NumPy array protocol.

``Tensor.__dlpack__`` / ``__dlpack_device__`` / ``__array__`` and ``dk.from_dlpack`` call these
helpers; they work on the raw arrays (``numpy.ndarray`` on the CPU, ``cupy.ndarray`` on a GPU),
so the memory a Tensor holds is what PyTorch, NumPy or CuPy sees -- no copy either way unless
a conversion (dtype, layout, device) makes one unavoidable, and then only where the caller
allowed it.
"""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ._validate import is_gpu_array

__all__ = ["export_dlpack", "dlpack_device", "array_protocol", "import_dlpack"]

#: DLPack's device type codes (``dlpack.h``: kDLCPU, kDLCUDA, kDLCUDAHost, kDLCUDAManaged)
_DLPACK_CPU = 1
_DLPACK_CUDA_TYPES = (2, 3, 13)


def export_dlpack(array: Any, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                  copy: Optional[bool] = None) -> Any:
    """``array.__dlpack__(...)``, passing only the keywords the caller gave (older consumers
    call ``__dlpack__()`` or ``__dlpack__(stream=...)``; older producers reject unknown keywords)."""
    kwargs = {}
    if stream is not None:
        kwargs["stream"] = stream
    if max_version is not None:
        kwargs["max_version"] = max_version
    if dl_device is not None:
        kwargs["dl_device"] = dl_device
    if copy is not None:
        kwargs["copy"] = copy
    return array.__dlpack__(**kwargs)


def dlpack_device(array: Any) -> Any:
    """``(device_type, device_id)`` as DLPack defines them (CPU is ``(1, 0)``)."""
    return array.__dlpack_device__()


def array_protocol(array: Any, dtype: Any = None, copy: Optional[bool] = None) -> np.ndarray:
    """NumPy's ``__array__(dtype, copy)`` for an array of a Tensor (NumPy 2 semantics).

    ``copy=None``: the array itself when no conversion is needed, else a converted copy;
    ``copy=True``: always a new array; ``copy=False``: the array itself, or ValueError when
    a GPU transfer or a dtype change would need a copy.
    """
    target = None if dtype is None else np.dtype(dtype)
    needs_copy = is_gpu_array(array) or (target is not None and target != array.dtype)
    if copy is False and needs_copy:
        where = "it lives on the GPU" if is_gpu_array(array) else f"{array.dtype} -> {target} converts it"
        raise ValueError(f"__array__(copy=False): the tensor cannot be shared without a copy ({where})")
    host = array.get() if is_gpu_array(array) else array
    if target is not None and target != host.dtype:
        return host.astype(target)  # a new array already
    return host.copy() if copy else host


def import_dlpack(obj: Any) -> Any:
    """The array behind any object with ``__dlpack__`` (a torch tensor, a NumPy or CuPy array,
    ...), sharing its memory: a NumPy array for CPU memory, a CuPy array for CUDA memory."""
    if not hasattr(obj, "__dlpack__"):
        raise TypeError(f"from_dlpack: expected an object with __dlpack__ (a torch tensor, a NumPy or CuPy "
                        f"array, ...), got {type(obj).__name__}")
    device_type = obj.__dlpack_device__()[0] if hasattr(obj, "__dlpack_device__") else _DLPACK_CPU
    if int(device_type) == _DLPACK_CPU:
        return np.from_dlpack(obj)
    if int(device_type) in _DLPACK_CUDA_TYPES:
        try:
            import cupy
        except ImportError:
            raise RuntimeError("from_dlpack: the object lives on a CUDA device, which needs CuPy "
                               "(pip install deepkern[cuda])") from None
        return cupy.from_dlpack(obj)
    raise ValueError(f"from_dlpack: unsupported DLPack device type {device_type} (CPU and CUDA only)")
