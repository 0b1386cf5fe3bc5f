"""The backend contract (deepkern/backends/_contract.py): every backend provides each op with
the listed parameters, or the op has a fallback on the same device kind that does."""
from __future__ import annotations

import importlib
import inspect
import re
from types import ModuleType, SimpleNamespace
from typing import List, Optional

import numpy as np
import pytest

from deepkern import backends, ops
from deepkern.backends import _contract


def _module(name: str) -> Optional[ModuleType]:
    try:
        return importlib.import_module(f"deepkern.backends.{name}")
    except ImportError:  # the C++ module is not built here
        return None


def _split_top_level(text: str) -> List[str]:
    parts, depth, start = [], 0, 0
    for i, ch in enumerate(text):
        depth += ch in "([{"
        depth -= ch in ")]}"
        if ch == "," and depth == 0:
            parts.append(text[start:i])
            start = i + 1
    parts.append(text[start:])
    return [p.strip() for p in parts if p.strip()]


def _param_names(fn) -> List[str]:
    """Parameter names of a Python function or of a pybind11 function (from its docstring)."""
    try:
        return list(inspect.signature(fn).parameters)
    except (TypeError, ValueError):
        first = (fn.__doc__ or "").splitlines()[0]
        match = re.match(r"\w+\((.*)\) ->", first)
        assert match, f"cannot read the signature of {fn!r}: {first!r}"
        return [p.split(":")[0].strip() for p in _split_top_level(match.group(1))]


def _native(module: ModuleType, op: str) -> bool:
    """True when the module defines op itself (not a fallback the registry filled in)."""
    return callable(module.__dict__.get(op)) and op not in getattr(module, "FALLBACKS", {})


@pytest.mark.parametrize("name", backends.ALL_BACKENDS)
def test_every_backend_provides_each_op_or_declares_a_fallback(name):
    module = _module(name)
    if module is None:
        pytest.skip(f"backend {name} cannot be imported here")
    gpu = name in backends.GPU_BACKENDS
    kind = backends.GPU_BACKENDS if gpu else backends.CPU_BACKENDS
    for spec in _contract.OPS:
        if _native(module, spec.name):
            names = _param_names(module.__dict__[spec.name])
            assert tuple(names[:len(spec.params)]) == spec.params, (name, spec.name, names)
            continue
        target = _contract.fallback_for(spec, name, gpu)
        assert target is not None, f"{name} lacks {spec.name} and the contract declares no fallback"
        assert target in kind, f"{name}.{spec.name} falls back to {target}, a backend of the other device"
        fallback = _module(target)
        assert fallback is not None and _native(fallback, spec.name), (name, spec.name, target)


def test_the_reference_provides_every_op():
    ref = _module("numpy")
    assert [spec.name for spec in _contract.OPS if not _native(ref, spec.name)] == []


def test_ops_and_the_contract_list_the_same_ops():
    assert set(ops.__all__) == set(_contract.SPECS)


def test_a_missing_op_gets_its_declared_fallback_and_the_registry_records_it():
    fake = SimpleNamespace(__name__="deepkern.backends.fake")
    for spec in _contract.OPS:
        if spec.name != "relu":
            setattr(fake, spec.name, lambda *a, **k: None)
    used = _contract.complete(fake, "fake", False, backends.load)
    assert used == {"relu": "numpy"} and fake.FALLBACKS == used
    x = np.array([-1.0, 2.0], np.float32)
    np.testing.assert_array_equal(fake.relu(x), [0.0, 2.0])


def test_a_gpu_op_without_any_version_raises_naming_it():
    fake = SimpleNamespace(__name__="deepkern.backends.cupy")
    used = _contract.complete(fake, "cupy", True, backends.load)
    assert used["batch_norm"] == "unsupported"
    with pytest.raises(NotImplementedError, match="batch_norm has no implementation for the 'cupy'"):
        fake.batch_norm()


@pytest.mark.skipif(not backends.available("numba"), reason="numba is not installed")
def test_numba_runs_batch_norm_through_the_reference():
    module = backends.load("numba")
    assert module.FALLBACKS.get("batch_norm") == "numpy"
    backends.set_backend("numba")
    x = np.random.default_rng(0).standard_normal((4, 3)).astype(np.float32)
    y, _, _ = ops.batch_norm(x)
    np.testing.assert_allclose(y.mean(axis=0), 0.0, atol=1e-6)
