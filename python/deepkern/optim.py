"""Optimizers (SGD, Adam, RMSprop) over the fused in-place update kernels, and L1/L2 penalties.

Each ``step()`` updates every parameter that has a gradient with the fused kernel of
``dk.ops.<name>_update``, which reads the gradient and updates the parameter and its state
buffers in place. Parameters without a gradient (unused this step) are skipped, as in PyTorch.

On the C++ backend a step is one kernel call for all parameters (``<name>_update_many``: the
threads share all their elements). The arrays are checked by ``ops``' rules when a parameter is
first updated and again whenever its array or a state buffer is replaced or reshaped; in
between, a step checks only that each gradient is a CPU array of its parameter's shape (the
kernel's own checks still refuse overlapping or read-only arrays, and a refusal is reported with
``ops``' message). While nothing but the gradients and the step counts changes (the usual
loop), a step goes straight to that kernel (``_StepPlan``: a few microseconds of Python for any
number of parameters). Other backends and subclasses that only define ``_update`` take one
``ops.<name>_update`` call per parameter, fully checked each step.

``state_dict()`` is a flat ``{str: numpy.ndarray}`` so ``numpy.savez(path, **sd)`` works with
``allow_pickle=False``: hyperparameters and the step counter are 0-d arrays, per-parameter
buffers are named ``state.<index>.<buffer>`` (index = position in the ``params`` list).

Regularisation: ``weight_decay`` in every optimizer adds ``weight_decay * w`` to the gradient
(an L2 penalty of ``weight_decay/2 * |w|^2``, PyTorch's convention). For an explicit penalty
in the loss, add ``l1_penalty(params, lam)`` (``lam * sum|w|``) or ``l2_penalty(params, lam)``
(``lam * sum w^2``) to the loss before ``backward()``; both are differentiable Tensors.
"""
from __future__ import annotations

import functools
import math
import operator
from typing import Any, Dict, Iterable, List, Mapping, Optional, Tuple

import numpy as np

from . import backends, ops
from ._device import move as _move
from ._device import to_host
from ._validate import FLOAT32
from .autograd import Tensor, no_grad, xp_of

__all__ = ["Optimizer", "SGD", "Adam", "RMSprop", "l1_penalty", "l2_penalty"]


def _finite(value: Any, name: str, low: float = 0.0, high: Optional[float] = None,
            high_open: bool = True) -> float:
    """A finite float in [low, high) (or [low, high]); ValueError naming the argument otherwise."""
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number, got {type(value).__name__}")
    v = float(value)
    too_high = high is not None and (v >= high if high_open else v > high)
    if not math.isfinite(v) or v < low or too_high:
        upper = "" if high is None else (f", < {high}" if high_open else f", <= {high}")
        raise ValueError(f"{name}: expected a finite value >= {low}{upper}, got {value!r}")
    return v


class _Hyper:
    """A numeric hyperparameter kept in ``optimizer.hyper`` and validated on every assignment
    (so a scheduler cannot set nonsense): a finite value in [low, high)."""

    def __init__(self, label: Optional[str] = None, low: float = 0.0, high: Optional[float] = None) -> None:
        self.label, self.low, self.high = label, low, high
        self.name = ""

    def __set_name__(self, owner: type, name: str) -> None:
        self.name = name
        self.label = self.label or name

    def __get__(self, obj: Any, objtype: Optional[type] = None) -> Any:
        return self if obj is None else obj.hyper[self.name]

    def __set__(self, obj: Any, value: Any) -> None:
        obj.hyper[self.name] = _finite(value, self.label, self.low, self.high)


@functools.lru_cache(maxsize=None)
def _updates_in_one_call(cls: type) -> bool:
    """Whether ``cls`` steps through ``_update_many``: it names a kernel, and the class that defines
    ``_update_many`` also defines the ``_update`` in force (a subclass with its own ``_update``
    rule keeps the per-parameter path)."""
    owner = next(c for c in cls.__mro__ if "_update_many" in c.__dict__)
    return cls.kernel is not None and owner is not Optimizer and cls._update is owner.__dict__["_update"]


class _StepPlan:
    """What the last full step of the one-call path checked, so that the next ones go straight to
    the kernel.

    A step of the usual training loop changes only the gradients (fresh arrays) and the step
    counts. ``run`` takes the short way only when everything else is what the full step checked:
    the same parameter list, state list and dicts and hyperparameter values; each parameter's
    array the very object that ``ops``' rules passed; every parameter with a float32 NumPy
    gradient and the same step count; a backend with the one-call kernel. The rest the kernel's own
    checks cover, for every parameter before it updates any: each gradient and state buffer
    float32, C-contiguous, aligned, of its parameter's shape (so of the sizes ``ops`` allows) and
    sharing memory with none of the group; param and buffers writable (a flag or a shape set in
    place on a known array is caught there). When it refuses, or anything above differs, the step
    is taken again the full way, which converts what it may (a float64 gradient, a missing buffer)
    and raises ``ops``' error naming the argument otherwise.
    """

    __slots__ = ("params", "state", "states", "arrays", "step", "hyper")

    @classmethod
    def after(cls, opt: "Optimizer", ready: List[Tuple[int, Any, Any, Dict[str, Any]]]) -> Optional["_StepPlan"]:
        """The plan after a full step that updated ``ready`` in one call; None unless every
        parameter took part at one step count (the usual loop; other steps stay the full way)."""
        states = [item[3] for item in ready]
        step = states[0]["step"]
        if len(ready) != len(opt.params) or any(s["step"] != step for s in states):
            return None
        plan = cls.__new__(cls)
        plan.params = list(opt.params)
        plan.state, plan.states = opt.state, states
        plan.arrays = [item[1] for item in ready]
        plan.step, plan.hyper = step, dict(opt.hyper)
        return plan

    def run(self, opt: "Optimizer") -> bool:
        """One step the short way; False, with nothing changed, when the full way must take it."""
        params, states, step = self.params, self.states, self.step
        if (opt.hyper != self.hyper or opt.state is not self.state or len(opt.params) != len(params)
                or not all(map(operator.is_, opt.params, params))
                or not all(map(operator.is_, opt.state, states))):
            return False
        arrays, grads = self.arrays, []
        for p, array, s in zip(params, arrays, states):
            g = p._grad   # None (a skipped parameter), another type or dtype: the full way takes it
            if p.data is not array or type(g) is not np.ndarray or g.dtype is not FLOAT32 or s.get("step") != step:
                return False
            grads.append(g)
        many = getattr(backends.for_array(arrays[0]), opt.kernel + "_many", None)
        if many is None:   # a backend without it was set since: one checked call per parameter
            return False
        for s in states:
            s["step"] = step + 1
        try:
            opt._update_many(many, arrays, grads, states)
        except (TypeError, ValueError, KeyError):   # refused before any update: the full way reports it
            for s in states:
                s["step"] = step
            return False
        self.step = step + 1
        return True


class Optimizer:
    """Base class: holds the parameters, hyperparameters and per-parameter state buffers.

    Subclasses list their hyperparameters in ``hyperparameters`` and buffers in ``buffers``
    and implement ``_update(param, grad, state)``; the built-in ones also name their op in
    ``kernel`` and implement ``_check_args(step, state)`` and ``_update_many(fn, params, grads, states)``,
    which make a step one call of the backend's ``<kernel>_many`` where it has one.
    """

    hyperparameters: Tuple[str, ...] = ("lr",)
    buffers: Tuple[str, ...] = ()
    kernel: Optional[str] = None

    def __init__(self, params: Iterable[Tensor], **hyper: Any) -> None:
        self.params: List[Tensor] = list(params)
        if not self.params:
            raise ValueError("params: the optimizer got an empty parameter list")
        seen = set()
        for i, p in enumerate(self.params):
            if not isinstance(p, Tensor):
                raise TypeError(f"params[{i}]: expected a Tensor/Parameter, got {type(p).__name__}")
            if not p.requires_grad:
                raise ValueError(f"params[{i}]: the tensor does not require grad")
            if p.dtype != np.float32:
                raise TypeError(f"params[{i}]: expected a float32 tensor, got {p.dtype}")
            if id(p) in seen:
                raise ValueError(f"params[{i}]: the same parameter appears twice")
            seen.add(id(p))
        self.hyper: Dict[str, Any] = {}
        for name in self.hyperparameters:
            setattr(self, name, hyper[name])  # validated by the properties below / subclasses
        self.state: List[Dict[str, Any]] = [{} for _ in self.params]
        self.step_count = 0
        # parameter index -> (param's shape, [param array, state buffers...]) as last checked in full
        self._checked: Dict[int, Tuple[Tuple[int, ...], List[Any]]] = {}
        self._checked_hyper: Optional[Tuple[Any, ...]] = None   # hyperparameter values last checked
        self._plan: Optional[_StepPlan] = None   # what the last full step checked (see _StepPlan)

    lr = _Hyper()
    weight_decay = _Hyper()

    # -- the loop API ----------------------------------------------------------------------
    def zero_grad(self) -> None:
        """Drop every parameter's gradient (backward then writes a fresh one without a zero fill)."""
        for p in self.params:
            p.grad = None

    def step(self) -> None:
        """Apply one update to every parameter that has a gradient."""
        self.step_count += 1
        plan, self._plan = self._plan, None
        if plan is not None and plan.run(self):
            self._plan = plan
            return
        with no_grad():
            ready: List[Tuple[int, Any, Any, Dict[str, Any]]] = []   # (index, param, grad, state)
            for i, (p, state) in enumerate(zip(self.params, self.state)):
                g = p.grad
                if g is None:
                    continue
                if g.dtype != np.float32 or not g.flags.c_contiguous:
                    g = g.astype(np.float32, order="C")
                if len(state) != len(self.buffers) + 1:  # first step (or momentum switched on)
                    xp = xp_of(p.data)
                    for name in self.buffers:
                        if name not in state:
                            state[name] = xp.zeros(p.data.shape, dtype=np.float32)
                    state.setdefault("step", 0)
                state["step"] += 1
                ready.append((i, p.data, g, state))
            many = self._many_kernel(ready)
            if many is None:
                for _, param, g, state in ready:
                    self._update(param, g, state)
            else:
                self._step_many(many, ready)
                self._plan = _StepPlan.after(self, ready)

    def _many_kernel(self, ready: List[Tuple[int, Any, Any, Dict[str, Any]]]) -> Any:
        """The backend's ``<kernel>_many`` when every parameter is a NumPy array and the class
        updates through it; else None (one checked ``ops`` call per parameter)."""
        if not ready or not _updates_in_one_call(type(self)):
            return None
        for item in ready:
            if type(item[1]) is not np.ndarray:
                return None
        return getattr(backends.for_array(ready[0][1]), self.kernel + "_many", None)

    def _step_many(self, many: Any, ready: List[Tuple[int, Any, Any, Dict[str, Any]]]) -> None:
        """Checks the arrays (in full only where they changed) and updates them all at once."""
        names = self.buffers
        for i, param, g, state in ready:
            arrays = [param] + [state[name] for name in names]
            known = self._checked.get(i)
            if (known is None or known[0] != param.shape or len(known[1]) != len(arrays)
                    or any(map(operator.is_not, known[1], arrays))
                    or type(g) is not np.ndarray or g.shape != param.shape):
                self._check_arrays(i, param, g, state)   # raises naming the argument, or remembers them
        # one call per step count (they differ only for parameters that skipped steps)
        by_step: Dict[int, List[Tuple[Any, Any, Dict[str, Any]]]] = {}
        for _, param, g, state in ready:
            by_step.setdefault(state["step"], []).append((param, g, state))
        for step, items in by_step.items():
            # the hyperparameters as ops checks them, again whenever one changed (the step count is
            # this optimizer's own; the kernel refuses one below 1)
            hyper = tuple(self.hyper.values())
            if hyper != self._checked_hyper:
                self._check_args(step, items[0][2])
                self._checked_hyper = hyper
            params, grads, states = (list(col) for col in zip(*items))
            try:
                self._update_many(many, params, grads, states)
            except (TypeError, ValueError):
                # the kernel refused an argument (e.g. a gradient sharing memory with its parameter):
                # report it in ops' words where ops' checks see the problem
                self._check_args(step, items[0][2])
                for i, param, g, state in ready:
                    self._check_arrays(i, param, g, state)
                raise

    def _check_arrays(self, i: int, param: Any, grad: Any, state: Dict[str, Any]) -> None:
        """``ops``' checks of parameter i's arrays; remembers the parameter and its buffers as checked."""
        self._checked.pop(i, None)
        ops.check_update_state(param, grad, **{name: state[name] for name in self.buffers})
        self._checked[i] = (param.shape, [param] + [state[name] for name in self.buffers])

    def _check_args(self, step: int, state: Dict[str, Any]) -> None:
        """``ops``' checks of the scalar arguments of an update at ``step`` (``state``: a parameter's)."""
        raise NotImplementedError

    def _update_many(self, fn: Any, params: List[Any], grads: List[Any], states: List[Dict[str, Any]]) -> None:
        """All of ``params`` at once through ``fn`` (the backend's ``<kernel>_many``); checked already."""
        raise NotImplementedError

    def _update(self, param: Any, grad: Any, state: Dict[str, Any]) -> None:
        raise NotImplementedError

    # -- checkpoints -----------------------------------------------------------------------
    def state_dict(self) -> Dict[str, np.ndarray]:
        """Flat ``{name: numpy array}``: hyperparameters, "step", and ``state.<i>.<buffer>`` copies."""
        out: Dict[str, np.ndarray] = {}
        for name in self.hyperparameters:
            value = self.hyper[name]
            out[name] = np.array(value, dtype=np.bool_ if isinstance(value, bool) else np.float64)
        out["step"] = np.array(self.step_count, dtype=np.int64)
        for i, state in enumerate(self.state):
            if not state:
                continue
            for name in self.buffers:
                buf = state[name]
                out[f"state.{i}.{name}"] = buf.copy() if isinstance(buf, np.ndarray) else to_host(buf)
            out[f"state.{i}.step"] = np.array(state["step"], dtype=np.int64)
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Restore from ``state_dict()`` (e.g. loaded from .npz). Refuses, before changing
        anything, missing or unexpected keys, a parameter index out of range and shape mismatches."""
        if not isinstance(state, Mapping):
            raise TypeError(f"state: expected a mapping of name -> array, got {type(state).__name__}")
        problems: List[str] = []
        required = list(self.hyperparameters) + ["step"]
        missing = [k for k in required if k not in state]
        if missing:
            problems.append(f"missing keys: {missing}")
        per_param: Dict[int, Dict[str, np.ndarray]] = {}
        unexpected = []
        for key in state:
            if key in required:
                continue
            parts = key.split(".")
            if (len(parts) != 3 or parts[0] != "state" or not parts[1].isdigit()
                    or parts[2] not in self.buffers + ("step",)):
                unexpected.append(key)
                continue
            index = int(parts[1])
            if index >= len(self.params):
                problems.append(f"{key}: parameter index {index} out of range ({len(self.params)} parameters)")
                continue
            value = np.asarray(state[key].get() if hasattr(state[key], "get")
                               and not isinstance(state[key], np.ndarray) else state[key])
            if parts[2] != "step" and value.shape != self.params[index].shape:
                problems.append(f"{key}: shape {value.shape} does not match parameter {index}'s "
                                f"{self.params[index].shape}")
            per_param.setdefault(index, {})[parts[2]] = value
        if unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        for index, bufs in per_param.items():
            absent = [b for b in self.buffers + ("step",) if b not in bufs]
            if absent:
                problems.append(f"state.{index}: missing buffers {absent}")
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__}: " + "; ".join(problems))
        # validate hyperparameters on a copy first, so a bad value leaves self unchanged
        saved = dict(self.hyper)
        try:
            for name in self.hyperparameters:
                value = np.asarray(state[name]).item()
                setattr(self, name, bool(value) if isinstance(saved[name], bool) else value)
        except (TypeError, ValueError):
            self.hyper = saved
            raise
        self.step_count = int(np.asarray(state["step"]))
        self.state = [{} for _ in self.params]
        for index, bufs in per_param.items():
            device = self.params[index].device
            entry: Dict[str, Any] = {"step": int(bufs["step"])}
            for name in self.buffers:
                entry[name] = _move(np.array(bufs[name], dtype=np.float32, order="C"), device)
            self.state[index] = entry

    def __repr__(self) -> str:
        hyper = ", ".join(f"{k}={v}" for k, v in self.hyper.items())
        return f"{type(self).__name__}({len(self.params)} parameters, {hyper})"


class SGD(Optimizer):
    """Stochastic gradient descent with optional (Nesterov) momentum and L2 weight decay.

    PyTorch's update: g = grad + wd*w; v = momentum*v + g; w -= lr * (g + momentum*v if nesterov else v).
    """

    hyperparameters = ("lr", "momentum", "weight_decay", "nesterov")

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-2, momentum: float = 0.0,
                 nesterov: bool = False, weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, momentum=momentum, weight_decay=weight_decay, nesterov=nesterov)

    momentum = _Hyper()

    @property
    def nesterov(self) -> bool:
        return self.hyper["nesterov"]

    @nesterov.setter
    def nesterov(self, value: bool) -> None:
        if not isinstance(value, (bool, np.bool_)):
            raise TypeError(f"nesterov: expected a bool, got {value!r}")
        if value and self.hyper["momentum"] <= 0:
            raise ValueError("nesterov: requires momentum > 0")
        self.hyper["nesterov"] = bool(value)

    @property
    def buffers(self) -> Tuple[str, ...]:  # type: ignore[override]
        # the velocity exists only with momentum (plain SGD keeps no state)
        return ("velocity",) if self.hyper["momentum"] > 0 else ()

    kernel = "sgd_update"

    def _update(self, param: Any, grad: Any, state: Dict[str, Any]) -> None:
        h = self.hyper
        ops.sgd_update(param, grad, state.get("velocity"), h["lr"], h["momentum"], h["weight_decay"],
                       h["nesterov"])

    def _check_args(self, step: int, state: Dict[str, Any]) -> None:
        h = self.hyper
        ops.check_sgd_args(state.get("velocity"), h["lr"], h["momentum"], h["weight_decay"], h["nesterov"])

    def _update_many(self, fn: Any, params: List[Any], grads: List[Any], states: List[Dict[str, Any]]) -> None:
        h = self.hyper
        velocities = [s["velocity"] for s in states] if h["momentum"] > 0 else None
        fn(params, grads, velocities, float(h["lr"]), float(h["momentum"]), float(h["weight_decay"]),
           bool(h["nesterov"]))


class Adam(Optimizer):
    """Adam (Kingma & Ba) with bias correction; ``weight_decay`` is L2 added to the gradient."""

    hyperparameters = ("lr", "beta1", "beta2", "eps", "weight_decay")
    buffers = ("m", "v")

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-3, betas: Tuple[float, float] = (0.9, 0.999),
                 eps: float = 1e-8, weight_decay: float = 0.0) -> None:
        if not (isinstance(betas, (tuple, list)) and len(betas) == 2):
            raise ValueError(f"betas: expected a pair (beta1, beta2), got {betas!r}")
        super().__init__(params, lr=lr, beta1=betas[0], beta2=betas[1], eps=eps, weight_decay=weight_decay)

    beta1 = _Hyper("betas[0]", high=1.0)
    beta2 = _Hyper("betas[1]", high=1.0)
    eps = _Hyper()

    @property
    def betas(self) -> Tuple[float, float]:
        return self.hyper["beta1"], self.hyper["beta2"]

    kernel = "adam_update"

    def _update(self, param: Any, grad: Any, state: Dict[str, Any]) -> None:
        h = self.hyper
        ops.adam_update(param, grad, state["m"], state["v"], state["step"], h["lr"], h["beta1"], h["beta2"],
                        h["eps"], h["weight_decay"])

    def _check_args(self, step: int, state: Dict[str, Any]) -> None:
        h = self.hyper
        ops.check_adam_args(step, h["lr"], h["beta1"], h["beta2"], h["eps"], h["weight_decay"])

    def _update_many(self, fn: Any, params: List[Any], grads: List[Any], states: List[Dict[str, Any]]) -> None:
        h = self.hyper
        fn(params, grads, [s["m"] for s in states], [s["v"] for s in states], int(states[0]["step"]),
           float(h["lr"]), float(h["beta1"]), float(h["beta2"]), float(h["eps"]), float(h["weight_decay"]))


class RMSprop(Optimizer):
    """RMSprop (PyTorch's form): s = alpha*s + (1-alpha)*g^2; w -= lr * g / (sqrt(s) + eps)."""

    hyperparameters = ("lr", "alpha", "eps", "weight_decay")
    buffers = ("square_avg",)

    def __init__(self, params: Iterable[Tensor], lr: float = 1e-2, alpha: float = 0.99, eps: float = 1e-8,
                 weight_decay: float = 0.0) -> None:
        super().__init__(params, lr=lr, alpha=alpha, eps=eps, weight_decay=weight_decay)

    alpha = _Hyper(high=1.0)
    eps = _Hyper()

    kernel = "rmsprop_update"

    def _update(self, param: Any, grad: Any, state: Dict[str, Any]) -> None:
        h = self.hyper
        ops.rmsprop_update(param, grad, state["square_avg"], h["lr"], h["alpha"], h["eps"], h["weight_decay"])

    def _check_args(self, step: int, state: Dict[str, Any]) -> None:
        h = self.hyper
        ops.check_rmsprop_args(h["lr"], h["alpha"], h["eps"], h["weight_decay"])

    def _update_many(self, fn: Any, params: List[Any], grads: List[Any], states: List[Dict[str, Any]]) -> None:
        h = self.hyper
        fn(params, grads, [s["square_avg"] for s in states], float(h["lr"]), float(h["alpha"]), float(h["eps"]),
           float(h["weight_decay"]))


# ---------------------------------------------------------------------------- penalties
def _penalty_params(params: Iterable[Tensor], lam: float, name: str) -> Tuple[List[Tensor], float]:
    plist = list(params)
    if not plist:
        raise ValueError("params: expected at least one parameter")
    return plist, _finite(lam, name)


def l1_penalty(params: Iterable[Tensor], lam: float) -> Tensor:
    """``lam * sum_w |w|`` as a differentiable scalar Tensor (add it to the loss)."""
    plist, lam = _penalty_params(params, lam, "lam")
    total = plist[0].abs().sum()
    for p in plist[1:]:
        total = total + p.abs().sum()
    return total * lam


def l2_penalty(params: Iterable[Tensor], lam: float) -> Tensor:
    """``lam * sum_w w^2`` as a differentiable scalar Tensor (gradient 2*lam*w)."""
    plist, lam = _penalty_params(params, lam, "lam")
    total = (plist[0] * plist[0]).sum()
    for p in plist[1:]:
        total = total + (p * p).sum()
    return total * lam
