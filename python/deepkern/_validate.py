"""Argument checks shared by ``deepkern.ops`` and the layers above it.

Every check raises ``TypeError`` (wrong kind of thing) or ``ValueError`` (right kind,
wrong value) and names the argument, so a bad call fails before any kernel runs.
"""
from __future__ import annotations

import math
from collections import OrderedDict
from typing import Any, Dict, Tuple

import numpy as np

# The C++ and CUDA kernels index dimensions with 32-bit ints (offsets are 64-bit):
# any single dimension, and the rows/columns of any matrix a GEMM sees, must fit.
INDEX_LIMIT = 2**31 - 1
# Integer arguments the kernels take as int64 (the optimizer step)
INT64_MAX = 2**63 - 1


def is_gpu_array(x: Any) -> bool:
    """True for CuPy arrays (or anything exposing the CUDA array interface)."""
    if type(x) is np.ndarray:   # the common case, without a failing attribute lookup
        return False
    return hasattr(x, "__cuda_array_interface__") and not isinstance(x, np.ndarray)


# float32's dtype object: the fast paths test ``x.dtype is FLOAT32`` (NumPy keeps one object per
# native dtype; any other object, even an equal one, takes the full comparison)
FLOAT32 = np.dtype(np.float32)


def check_array(x: Any, name: str, ndim: int | Tuple[int, ...] | None = None,
                dtype: Any = np.float32) -> None:
    """Require a float32 (or given dtype), C-contiguous array of the given rank."""
    # Every op checks its arrays each call: the usual case -- a plain NumPy float32 array of the
    # wanted rank, non-empty, at most INDEX_LIMIT elements (so no dimension exceeds it), C-contiguous
    # and aligned -- passes in one test. Anything else (another dtype object equal to float32, a
    # rank tuple, a subclass) takes the full checks below, which raise naming the argument.
    if (type(x) is np.ndarray and x.dtype is FLOAT32 and dtype is np.float32 and (ndim is None or x.ndim == ndim)
            and 0 < x.size <= INDEX_LIMIT and x.flags.c_contiguous and x.flags.aligned):
        return
    if not (isinstance(x, np.ndarray) or is_gpu_array(x)):
        raise TypeError(f"{name}: expected a numpy.ndarray or cupy.ndarray, got {type(x).__name__}")
    if dtype is not None and x.dtype != np.dtype(dtype):
        raise TypeError(f"{name}: expected dtype {np.dtype(dtype).name}, got {x.dtype}")
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if x.ndim not in allowed:
            want = " or ".join(str(n) for n in allowed)
            raise ValueError(f"{name}: expected a {want}-D array, got shape {tuple(x.shape)} ({x.ndim}-D)")
    for d in x.shape:
        if d > INDEX_LIMIT:
            raise ValueError(f"{name}: dimension {d} in shape {tuple(x.shape)} exceeds the kernels' "
                             f"32-bit index limit ({INDEX_LIMIT})")
    if x.size == 0:
        raise ValueError(f"{name}: expected a non-empty array, got shape {tuple(x.shape)}")
    if not x.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array (use numpy.ascontiguousarray); "
                         f"got strides {tuple(x.strides)} for shape {tuple(x.shape)}")
    if isinstance(x, np.ndarray) and not x.flags.aligned:
        raise ValueError(f"{name}: expected a buffer aligned for {x.dtype} (this one starts at an odd "
                         f"address, e.g. numpy.frombuffer with an offset); pass a copy (x.copy())")


def check_no_overlap(arrays: Dict[str, Any]) -> None:
    """In-place updates: no two of the named arrays may share memory (the result would depend on
    the order the kernel visits elements)."""
    items = list(arrays.items())
    for i, (name_a, a) in enumerate(items):
        for name_b, b in items[i + 1:]:
            if isinstance(a, np.ndarray) and isinstance(b, np.ndarray) and np.may_share_memory(a, b):
                raise ValueError(f"{name_b}: shares memory with {name_a}; in-place updates need separate arrays")
            if is_gpu_array(a) and is_gpu_array(b) and a.data.ptr < b.data.ptr + b.nbytes \
                    and b.data.ptr < a.data.ptr + a.nbytes:
                raise ValueError(f"{name_b}: shares memory with {name_a}; in-place updates need separate arrays")


def real(value: Any, name: str) -> float:
    """A real number (see is_real: not bool, str or None) as a float; TypeError naming it otherwise."""
    if not is_real(value):
        raise TypeError(f"{name}: expected a real number, got {value!r} ({type(value).__name__})")
    return float(value)


# the integer dtypes class labels may have, each with the unsigned type of its width
LABEL_DTYPES = {np.dtype(np.int64): np.dtype(np.uint64), np.dtype(np.int32): np.dtype(np.uint32)}


def check_labels(labels: Any, name: str, n: int, classes: int, check_range: bool = True) -> None:
    """Integer class labels of shape (n,), each in [0, classes).

    On the GPU the range is not read here (``labels.min()`` would make the host wait for the GPU
    on every call): the backends count bad labels on the device, see ``device_checked_loss``.
    ``check_range=False`` leaves the range on the CPU too to a backend that checks it itself
    (``ops._cross_entropy_call``).
    """
    if not (isinstance(labels, np.ndarray) or is_gpu_array(labels)):
        raise TypeError(f"{name}: expected an integer numpy.ndarray or cupy.ndarray, got {type(labels).__name__}")
    unsigned = LABEL_DTYPES.get(labels.dtype)
    if unsigned is None:
        raise TypeError(f"{name}: expected dtype int64 or int32, got {labels.dtype}")
    if labels.ndim != 1 or labels.shape[0] != n:
        raise ValueError(f"{name}: expected shape ({n},) to match the batch of logits, got {tuple(labels.shape)}")
    if not labels.flags.c_contiguous:
        raise ValueError(f"{name}: expected a C-contiguous array")
    if not check_range or is_gpu_array(labels):
        return
    # one pass: read as unsigned, a negative label is above every class count, so the largest
    # value is < classes exactly when every label is in range (the message then names the culprit)
    if int(np.maximum.reduce(labels.view(unsigned))) >= classes:
        lo, hi = int(labels.min()), int(labels.max())
        bad = lo if lo < 0 else hi
        raise ValueError(f"{name}: label {bad} is out of range for {classes} classes (expected 0 <= label < {classes})")


# GPU cross-entropy losses still to be read, with their device-side bad-label counts:
# id(loss) -> (loss, buffer (2,) = [loss, count], classes). The newest few are kept.
_DEVICE_CHECKED: "OrderedDict[int, Tuple[Any, Any, int]]" = OrderedDict()
_DEVICE_CHECKED_KEEP = 16


def device_checked_loss(loss_and_count: Any, classes: int) -> Any:
    """The 0-d loss of a (2,) buffer [loss, count of labels outside [0, classes)].

    A bad label makes the loss NaN on the device; reading the loss with ``scalar_value`` (as
    ``Tensor.item()`` and the training loop do) copies both numbers at once and raises there.
    """
    loss = loss_and_count[0:1].reshape(())
    if is_gpu_array(loss):
        _DEVICE_CHECKED[id(loss)] = (loss, loss_and_count, classes)
        while len(_DEVICE_CHECKED) > _DEVICE_CHECKED_KEEP:
            _DEVICE_CHECKED.popitem(last=False)
    return loss


def scalar_value(x: Any) -> float:
    """``x.item()`` for a single-element array; raises ValueError for a GPU loss with a bad label."""
    entry = _DEVICE_CHECKED.get(id(x))
    if entry is None or entry[0] is not x:
        return x.reshape(()).item()
    value, bad = entry[1].get().tolist()  # one copy for the loss and its label check
    if bad > 0:
        raise ValueError(f"labels: {int(bad)} label(s) out of range for {entry[2]} classes "
                         f"(expected 0 <= label < {entry[2]})")
    return value


def same_device(name_a: str, a: Any, name_b: str, b: Any) -> None:
    """ValueError naming ``name_b`` unless a and b are on one device (both CPU, or one GPU)."""
    if type(a) is np.ndarray and type(b) is np.ndarray:   # the usual case, in one test
        return
    if is_gpu_array(a) != is_gpu_array(b):
        where = lambda x: "GPU" if is_gpu_array(x) else "CPU"  # noqa: E731
        raise ValueError(f"{name_b} is on the {where(b)} but {name_a} is on the {where(a)}; "
                         f"move both to one device")
    if is_gpu_array(a) and is_gpu_array(b):
        da, db = getattr(a, "device", None), getattr(b, "device", None)
        if da is not None and db is not None and da != db:
            raise ValueError(f"{name_b} is on {db} but {name_a} is on {da}")


def pair(value: Any, name: str, minimum: int) -> Tuple[int, int]:
    """An int or a pair of ints, each >= minimum, as a tuple."""
    if isinstance(value, (bool, np.bool_)):
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    if isinstance(value, (int, np.integer)):
        items = (int(value), int(value))
    elif isinstance(value, (tuple, list)) and len(value) == 2 and all(
            isinstance(v, (int, np.integer)) and not isinstance(v, (bool, np.bool_)) for v in value):
        items = (int(value[0]), int(value[1]))
    else:
        raise TypeError(f"{name}: expected an int or a pair of ints, got {value!r}")
    for v in items:
        if v < minimum:
            raise ValueError(f"{name}: expected values >= {minimum}, got {value!r}")
        if v > INDEX_LIMIT:
            raise ValueError(f"{name}: {v} exceeds the kernels' 32-bit index limit ({INDEX_LIMIT})")
    return items


def check_axis(axis: Any, ndim: int, name: str = "axis") -> int:
    if isinstance(axis, (bool, np.bool_)) or not isinstance(axis, (int, np.integer)):
        raise TypeError(f"{name}: expected an int, got {axis!r}")
    if not -ndim <= axis < ndim:
        raise ValueError(f"{name}: {axis} is out of range for a {ndim}-D array")
    return int(axis) % ndim


def window_shape(h: int, w: int, kernel: Tuple[int, int], stride: Tuple[int, int],
                 padding: Tuple[int, int]) -> Tuple[int, int]:
    """(OH, OW) of a conv/pool window over (h, w): (h + 2*ph - kh) // sh + 1 (either may be < 1
    for a too-small input; :func:`window_output` is the checked form)."""
    return ((h + 2 * padding[0] - kernel[0]) // stride[0] + 1,
            (w + 2 * padding[1] - kernel[1]) // stride[1] + 1)


def window_output(size: int, kernel: int, stride: int, padding: int, what: str) -> int:
    """Output length of a sliding window; refuses windows larger than the padded input."""
    padded = size + 2 * padding
    if padded > INDEX_LIMIT:
        raise ValueError(f"{what}: the padded input ({size} + 2*{padding} = {padded}) exceeds the kernels' "
                         f"32-bit index limit ({INDEX_LIMIT})")
    if kernel > padded:
        raise ValueError(f"{what}: kernel size {kernel} is larger than the padded input "
                         f"({size} + 2*{padding} = {padded})")
    return window_shape(size, 1, (kernel, 1), (stride, 1), (padding, 0))[0]


def is_real(value: Any) -> bool:
    """A real number (int or float, NumPy's included), never a bool."""
    return isinstance(value, (int, float, np.integer, np.floating)) and not isinstance(value, (bool, np.bool_))


def positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)):
        raise TypeError(f"{name} must be an int, got {type(value).__name__}")
    if value < 1:
        raise ValueError(f"{name} must be >= 1, got {value}")
    return int(value)


def non_negative(value: Any, name: str) -> float:
    if not is_real(value) or not math.isfinite(value) or value < 0:
        raise ValueError(f"{name} must be a finite number >= 0, got {value!r}")
    return float(value)
