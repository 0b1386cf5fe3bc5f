"""The backend contract: the one list of ops every backend provides, with their signatures.

A backend module (``backends/<name>.py``) defines a function for each op below, taking the
arguments ``deepkern.ops`` has already validated and normalised, in the order listed. A backend
that lacks an op gets the op's declared fallback when the registry loads it: CPU backends use
``cpu_fallback`` (the NumPy reference by default, which is always there), GPU backends use
``gpu_fallback`` (CuPy's array-API version by default; where that is missing too, or the
fallback is ``None``, the op raises ``NotImplementedError`` on GPU arrays, naming the op).
Nothing else is filled in: ``tests/test_backend_contract.py`` fails when a backend neither
provides an op nor has a fallback, or when a signature differs from this list.

One optional flag: ``CHECKS_LABELS = True`` in a backend whose ``cross_entropy`` and
``cross_entropy_backward`` refuse a label outside [0, C) with ``ValueError`` before computing
(the C++ one); ``ops`` then leaves that range pass to it and reports a refusal in its own words.

Adding an op therefore takes: its reference in ``backends/numpy.py``, a line here, its
validation and dispatch in ``ops.py`` and the function that differentiates it; fast versions in
the other backends are optional and replace the fallback where they exist.
"""
from __future__ import annotations

import logging
from dataclasses import dataclass
from types import ModuleType
from typing import Callable, Dict, Optional, Tuple

log = logging.getLogger("deepkern.backends")

__all__ = ["OpSpec", "OPS", "SPECS", "fallback_for", "complete"]


@dataclass(frozen=True)
class OpSpec:
    """One op: its name, its parameters in order, and where a backend without it turns."""

    name: str
    params: Tuple[str, ...]
    cpu_fallback: Optional[str] = "numpy"
    gpu_fallback: Optional[str] = "cupy"


def _op(name: str, params: str) -> OpSpec:
    return OpSpec(name, tuple(p.strip() for p in params.split(",")))


#: Every op a backend runs (the forward ops, their ``_backward`` and the optimizer updates).
OPS: Tuple[OpSpec, ...] = (
    _op("matmul", "a, b, bias, relu, trans_a, trans_b"),
    _op("matmul_backward", "grad_out, a, b, out, trans_a, trans_b, want_bias, want_a"),
    _op("conv2d", "x, w, bias, stride, padding"),
    _op("conv2d_backward", "grad_out, x, w, stride, padding, want_bias, want_input"),
    _op("conv2d_relu", "x, w, bias, stride, padding, pool"),
    _op("conv2d_relu_backward", "grad_out, x, w, out, route, stride, padding, want_bias, want_input"),
    _op("max_pool2d", "x, kernel, stride, padding"),
    _op("max_pool2d_backward", "grad_out, x, kernel, stride, padding"),
    _op("avg_pool2d", "x, kernel, stride, padding"),
    _op("avg_pool2d_backward", "grad_out, x, kernel, stride, padding"),
    _op("relu", "x"),
    _op("relu_backward", "grad_out, x"),
    _op("softmax", "x, axis"),
    _op("softmax_backward", "grad_out, y, axis"),
    _op("log_softmax", "x, axis"),
    _op("log_softmax_backward", "grad_out, y, axis"),
    _op("cross_entropy", "logits, labels"),
    _op("cross_entropy_backward", "logits, labels, grad"),
    _op("batch_norm", "x, weight, bias, running_mean, running_var, training, momentum, eps, unbiased"),
    _op("batch_norm_backward", "grad_out, x, weight, mean, invstd, training, want_affine"),
    _op("sgd_update", "param, grad, velocity, lr, momentum, weight_decay, nesterov"),
    _op("adam_update", "param, grad, m, v, step, lr, beta1, beta2, eps, weight_decay"),
    _op("rmsprop_update", "param, grad, square_avg, lr, alpha, eps, weight_decay"),
)

SPECS: Dict[str, OpSpec] = {spec.name: spec for spec in OPS}


def fallback_for(spec: OpSpec, backend: str, gpu: bool) -> Optional[str]:
    """The backend whose ``spec.name`` a backend lacking it uses (None: no fallback)."""
    target = spec.gpu_fallback if gpu else spec.cpu_fallback
    return None if target == backend else target


def _unsupported(op: str, backend: str) -> Callable[..., None]:
    def run(*args, **kwargs):
        raise NotImplementedError(f"{op} has no implementation for the {backend!r} backend's arrays "
                                  f"(see deepkern/backends/_contract.py)")
    run.__name__ = op
    return run


def _forward_to(op: str, target: str, load: Callable[[str], ModuleType]) -> Callable[..., object]:
    def run(*args, **kwargs):
        return getattr(load(target), op)(*args, **kwargs)  # loaded on first use: raises with its reason
    run.__name__ = op
    return run


def complete(module: ModuleType, backend: str, gpu: bool, load: Callable[[str], ModuleType]) -> Dict[str, str]:
    """Give ``module`` each op it lacks from its declared fallback; returns {op: fallback}.

    Called once by the registry when it loads a backend; ``module.FALLBACKS`` records the result.
    """
    used: Dict[str, str] = {}
    for spec in OPS:
        if callable(getattr(module, spec.name, None)):
            continue
        target = fallback_for(spec, backend, gpu)
        if target is None:
            setattr(module, spec.name, _unsupported(spec.name, backend))
            used[spec.name] = "unsupported"
        else:
            setattr(module, spec.name, _forward_to(spec.name, target, load))
            used[spec.name] = target
        log.debug("backend %s: %s falls back to %s", backend, spec.name, used[spec.name])
    module.FALLBACKS = used
    return used
