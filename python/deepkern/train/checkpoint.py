"""Checkpoints: ``save`` / ``load`` of a model's weights and its optimizer's state as ``.npz``."""
from __future__ import annotations

import os
from typing import Any, Dict

import numpy as np

from .._device import to_host
from .._files import check_float32_values, read_npz, save_npz
from ..autograd import Tensor
from ._common import PathLike
from ._common import check_model as _check_model

__all__ = ["save", "load", "CHECKPOINT_FORMAT", "CHECKPOINT_VERSION"]


CHECKPOINT_FORMAT = "deepkern-checkpoint"
#: Layout version written by :func:`save`; :func:`load` reads this version and older.
CHECKPOINT_VERSION = 1
_FORMAT_KEY = "__format__"
_VERSION_KEY = "__version__"
_OPTIMIZER_KEY = "__optimizer__"
_MODEL_PREFIX = "model/"
_OPTIM_PREFIX = "optimizer/"


def save(model: Any, path: PathLike, optimizer: Any = None) -> str:
    """Write the model's weights (and the optimizer's state) to ``path`` as an ``.npz``.

    Written with the library's one atomic saver (``deepkern._files``): a fsync'ed temporary in
    the same directory renamed over ``path`` in one step, so an interrupted save never leaves a
    half-written checkpoint, and the temporary of a killed save is removed by the next save to
    ``path``. The file holds only plain arrays (readable with ``allow_pickle=False``) plus a
    format marker and version. Returns the path written (exactly ``path``; no extension is added).
    """
    _check_model(model)
    path = os.fspath(path)
    arrays: Dict[str, np.ndarray] = {
        _FORMAT_KEY: np.array(CHECKPOINT_FORMAT),
        _VERSION_KEY: np.array(CHECKPOINT_VERSION, dtype=np.int64),
    }
    for name, value in model.state_dict().items():
        arrays[_MODEL_PREFIX + name] = _host(value)
    if optimizer is not None:
        if not hasattr(optimizer, "state_dict"):
            raise TypeError(f"optimizer: expected an optimizer with state_dict(), got {type(optimizer).__name__}")
        arrays[_OPTIMIZER_KEY] = np.array(type(optimizer).__name__)
        for name, value in optimizer.state_dict().items():
            arrays[_OPTIM_PREFIX + name] = _host(value)
    for key, value in arrays.items():
        if value.dtype.kind not in "biufU":
            raise TypeError(f"save: entry {key!r} has dtype {value.dtype}; checkpoints hold numeric arrays only")
    return save_npz(path, arrays)


def _host(value: Any) -> np.ndarray:
    return value.numpy() if isinstance(value, Tensor) else to_host(value)


def load(model: Any, path: PathLike, optimizer: Any = None) -> Dict[str, Any]:
    """Restore weights saved by :func:`save` into ``model`` (and ``optimizer``), in place.

    Everything is checked before anything changes: a missing file raises FileNotFoundError;
    a truncated, corrupt or foreign file, a newer format version, missing/unexpected
    parameter names, shape mismatches, or optimizer state that is absent or from another
    optimizer class raise ValueError naming the file and the problem.

    Returns ``{"version": int, "optimizer": class name or None}`` describing the file.
    """
    _check_model(model)
    path = os.fspath(path)
    entries = read_npz(path, "deepkern checkpoint")
    marker = entries.get(_FORMAT_KEY)
    if marker is None or marker.dtype.kind != "U" or str(marker) != CHECKPOINT_FORMAT:
        raise ValueError(f"{path}: not a deepkern checkpoint (no {CHECKPOINT_FORMAT!r} marker; "
                         f"entries: {sorted(entries)[:6]})")
    version_entry = entries.get(_VERSION_KEY)
    if version_entry is None or version_entry.dtype.kind not in "iu" or version_entry.ndim != 0:
        raise ValueError(f"{path}: deepkern checkpoint without a valid format version")
    version = int(version_entry)
    if version > CHECKPOINT_VERSION:
        raise ValueError(f"{path}: checkpoint format version {version} is newer than this deepkern "
                         f"reads ({CHECKPOINT_VERSION}); upgrade deepkern")

    saved = {k[len(_MODEL_PREFIX):]: v for k, v in entries.items() if k.startswith(_MODEL_PREFIX)}
    own = model.state_dict()
    problems = []
    missing = [k for k in own if k not in saved]
    unexpected = [k for k in saved if k not in own]
    if missing:
        problems.append(f"missing parameters {missing}")
    if unexpected:
        problems.append(f"unexpected parameters {unexpected}")
    for name, current in own.items():
        value = saved.get(name)
        if value is None:
            continue
        if value.dtype.kind not in "iuf":
            problems.append(f"parameter {name!r} has non-numeric dtype {value.dtype}")
        elif value.shape != np.shape(current):
            problems.append(f"parameter {name!r} has shape {value.shape} in the file but "
                            f"{tuple(np.shape(current))} in the model")
    if problems:
        raise ValueError(f"{path}: checkpoint does not fit {type(model).__name__}: " + "; ".join(problems))
    check_float32_values(path, ((k, v) for k, v in entries.items()
                                if k.startswith((_MODEL_PREFIX, _OPTIM_PREFIX))))

    saved_optimizer = entries.get(_OPTIMIZER_KEY)
    optimizer_name = None if saved_optimizer is None else str(saved_optimizer)
    if optimizer is not None:
        if optimizer_name is None:
            raise ValueError(f"{path}: checkpoint holds no optimizer state (saved without optimizer=)")
        if optimizer_name != type(optimizer).__name__:
            raise ValueError(f"{path}: optimizer state is from {optimizer_name}, "
                             f"cannot load it into {type(optimizer).__name__}")
        state = {k[len(_OPTIM_PREFIX):]: v for k, v in entries.items() if k.startswith(_OPTIM_PREFIX)}
        try:
            optimizer.load_state_dict(state)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: optimizer state does not fit this {optimizer_name}: {exc}") from exc
    model.load_state_dict({name: value.astype(np.float32, copy=False) for name, value in saved.items()})
    return {"version": version, "optimizer": optimizer_name}

