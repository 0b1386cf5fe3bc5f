"""Backend registry and selection.

CPU arrays use ``cpu`` (the C++ module), else ``numba``, else ``numpy``; GPU arrays use
``cuda`` (the CUDA module), else ``cupy``. ``set_backend`` / ``DEEPKERN_BACKEND`` force one;
a forced backend that cannot load is an error, never a silent fallback.

Every backend module exposes the ops listed in ``backends/_contract.py`` (see ``backends/numpy.py``,
the reference), taking arguments already validated and normalised by ``deepkern.ops``; an op a
backend lacks gets the fallback the contract declares when the backend loads.
"""
from __future__ import annotations

import importlib
import logging
import os
from types import ModuleType
from typing import Dict, Optional

import numpy as np

from .._validate import is_gpu_array
from . import _contract

log = logging.getLogger("deepkern.backends")

CPU_BACKENDS = ("cpu", "numba", "numpy")
GPU_BACKENDS = ("cuda", "cupy")
ALL_BACKENDS = CPU_BACKENDS + GPU_BACKENDS

_loaded: Dict[str, ModuleType] = {}
_errors: Dict[str, str] = {}
_forced: Dict[str, Optional[str]] = {"cpu": None, "gpu": None}


def load(name: str) -> ModuleType:
    """Import a backend module, raising ``RuntimeError`` with the reason if it is unusable."""
    if name not in ALL_BACKENDS:
        raise ValueError(f"unknown backend {name!r}; expected one of {', '.join(ALL_BACKENDS)}")
    if name in _loaded:
        return _loaded[name]
    try:
        module = importlib.import_module(f"deepkern.backends.{name}")
        reason = module.unavailable_reason() if hasattr(module, "unavailable_reason") else None
    except ImportError as exc:  # a missing compiled module or optional dependency
        reason = f"{type(exc).__name__}: {exc}"
    if reason:
        _errors[name] = reason
        raise RuntimeError(f"deepkern backend {name!r} is not available: {reason}")
    _contract.complete(module, name, name in GPU_BACKENDS, load)
    _loaded[name] = module
    return module


def available(name: str) -> bool:
    try:
        load(name)
        return True
    except RuntimeError:
        return False


def reason_unavailable(name: str) -> Optional[str]:
    return None if available(name) else _errors.get(name)


def set_backend(name: Optional[str]) -> None:
    """Force a backend for CPU arrays (cpu, numba, numpy) or GPU arrays (cuda, cupy).

    ``None`` restores automatic selection for both. A backend that cannot load raises now.
    """
    if name is None or name == "auto":
        _forced["cpu"] = _forced["gpu"] = None
        return
    load(name)  # raises with the reason if unusable
    _forced["gpu" if name in GPU_BACKENDS else "cpu"] = name
    log.debug("backend forced: %s", name)


def get_backend(device: str = "cpu") -> str:
    """Name of the backend that runs arrays of this device kind ("cpu" or "gpu"/"cuda")."""
    kind = "gpu" if device in ("gpu", "cuda") else "cpu"
    return _select(kind).__name__.rsplit(".", 1)[-1]


_auto_cache: Dict[str, ModuleType] = {}


def _select(kind: str) -> ModuleType:
    forced = _forced[kind]
    if forced is not None:
        return load(forced)
    if kind in _auto_cache:
        return _auto_cache[kind]
    order = GPU_BACKENDS if kind == "gpu" else CPU_BACKENDS
    for name in order:
        if available(name):
            log.debug("%s arrays use backend %s", kind, name)
            _auto_cache[kind] = _loaded[name]
            return _loaded[name]
    details = "; ".join(f"{n}: {_errors.get(n, '?')}" for n in order)
    raise RuntimeError(f"no usable deepkern backend for {kind.upper()} arrays ({details})")


def for_array(x) -> ModuleType:
    """The backend module for this array's device."""
    if type(x) is np.ndarray and _forced["cpu"] is None:   # every op asks: the usual answer without calls
        module = _auto_cache.get("cpu")
        if module is not None:
            return module
    return _select("gpu" if is_gpu_array(x) else "cpu")


def _apply_environment() -> None:
    name = os.environ.get("DEEPKERN_BACKEND", "").strip().lower()
    if name and name != "auto":
        # Raise at import: a user who forced a backend must not get another one silently.
        set_backend(name)


_apply_environment()
