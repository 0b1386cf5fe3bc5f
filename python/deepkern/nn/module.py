"""``Module`` and ``Parameter``: the PyTorch-like container for trainable state.

Assigning a ``Parameter`` or a ``Module`` to an attribute registers it (in assignment order),
so ``parameters()``, ``state_dict()``, ``train()``/``eval()`` and ``to(device)`` see the whole
tree. ``register_buffer`` records state that is not trained but belongs to the model (BatchNorm's
running statistics): it travels with ``to(device)`` and is saved by ``state_dict()``.
Attributes live in the instance ``__dict__`` as usual (the registry only records names), so
reading ``self.weight`` in ``forward`` costs a plain attribute lookup.
"""
from __future__ import annotations

import contextlib
import threading
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Mapping, Optional, Tuple

import numpy as np

from .._device import device_name
from ..autograd import Tensor, _move, _normalise_device, as_array

__all__ = ["Parameter", "Module"]


class Parameter(Tensor):
    """A Tensor that is a trainable weight: it requires grad and registers on a Module."""

    __slots__ = ()

    def __init__(self, data: Any, requires_grad: bool = True) -> None:
        super().__init__(as_array(data, np.float32), requires_grad=requires_grad)

    def __repr__(self) -> str:
        return f"Parameter(shape={self.shape}, dtype={self.dtype}, device={self.device!r})"


def _buffer_value(name: str, value: Any) -> Optional[Tensor]:
    """A buffer's stored form: a Tensor that needs no gradient, or None."""
    if value is None:
        return None
    if isinstance(value, Parameter):
        raise TypeError(f"{name}: a Parameter cannot be a buffer (assign it to an attribute instead)")
    if isinstance(value, Tensor):
        return value
    try:
        return Tensor(value)
    except TypeError as exc:
        raise TypeError(f"{name}: expected a Tensor, an array or None for a buffer, got "
                        f"{type(value).__name__}") from exc


class _ThreadEval(threading.local):
    # threading.local runs __init__ once per thread on first access: no thread starts overridden
    def __init__(self) -> None:
        self.depth = 0


_thread_eval = _ThreadEval()


@contextlib.contextmanager
def eval_mode() -> Iterator[None]:
    """Inside the block every module reports ``training == False`` in the calling thread only.

    ``predict`` and ``evaluate`` run under it, so a thread predicting with a model that another
    thread is training never switches that thread's Dropout or BatchNorm to inference behaviour
    (``model.eval()`` is process-wide), and no submodule's own mode is rewritten afterwards.
    """
    _thread_eval.depth += 1
    try:
        yield
    finally:
        _thread_eval.depth -= 1


class Module:
    """Base class of layers and models. Subclasses define ``forward``; calling the module runs it.

    ``training`` is True after construction; ``eval()`` switches layers such as Dropout to
    inference behaviour and ``train()`` back; :func:`eval_mode` does it for one thread and block.
    """

    def __init__(self) -> None:
        object.__setattr__(self, "_param_names", [])
        object.__setattr__(self, "_module_names", [])
        object.__setattr__(self, "_buffer_names", [])
        object.__setattr__(self, "_non_persistent", set())
        object.__setattr__(self, "training", True)

    # -- registration ----------------------------------------------------------------------
    def __setattr__(self, name: str, value: Any) -> None:
        params: Optional[List[str]] = self.__dict__.get("_param_names")
        if params is None:
            raise AttributeError(f"{type(self).__name__}: call super().__init__() before assigning attributes")
        mods: List[str] = self.__dict__["_module_names"]
        if name in self.__dict__["_buffer_names"]:
            value = _buffer_value(name, value)  # a registered buffer stays one (None empties it)
        if name in params and not isinstance(value, Parameter):
            if value is not None:
                raise TypeError(f"{name}: cannot replace a Parameter with {type(value).__name__} "
                                f"(assign a Parameter, or None to remove it)")
            params.remove(name)
        if name in mods and not isinstance(value, Module):
            mods.remove(name)
        if isinstance(value, Parameter) and name not in params:
            params.append(name)
        elif isinstance(value, Module) and name not in mods:
            mods.append(name)
        object.__setattr__(self, name, value)

    def __delattr__(self, name: str) -> None:
        for registry in (self._param_names, self._module_names, self._buffer_names):
            if name in registry:
                registry.remove(name)
        self._non_persistent.discard(name)
        object.__delattr__(self, name)

    def register_buffer(self, name: str, tensor: Any, persistent: bool = True) -> None:
        """Record state that is not a parameter (no gradient, not trained by optimizers) but is
        part of the model, such as BatchNorm's running statistics.

        ``tensor`` is a Tensor, an array (wrapped as a float32 Tensor unless it is an integer
        array) or None (an absent buffer). Buffers move with ``to(device)``; persistent ones
        (the default) are saved by ``state_dict()`` and restored by ``load_state_dict()``.
        """
        if not isinstance(name, str) or not name or "." in name:
            raise ValueError(f"name: expected a non-empty attribute name without dots, got {name!r}")
        if name in self._param_names or name in self._module_names:
            raise ValueError(f"{name}: already a parameter or submodule of {type(self).__name__}")
        if name not in self._buffer_names and name in self.__dict__:
            raise ValueError(f"{name}: {type(self).__name__} already has an attribute of that name")
        value = _buffer_value(name, tensor)
        if name not in self._buffer_names:
            self._buffer_names.append(name)
        if persistent:
            self._non_persistent.discard(name)
        else:
            self._non_persistent.add(name)
        object.__setattr__(self, name, value)

    def register_parameter(self, name: str, param: Optional[Parameter]) -> None:
        """Same as ``setattr(self, name, param)``; ``None`` records an absent optional parameter."""
        if param is not None and not isinstance(param, Parameter):
            raise TypeError(f"param: expected a Parameter or None, got {type(param).__name__}")
        setattr(self, name, param)

    def add_module(self, name: str, module: Module) -> None:
        if not isinstance(module, Module):
            raise TypeError(f"module: expected a Module, got {type(module).__name__}")
        setattr(self, name, module)

    # -- traversal -------------------------------------------------------------------------
    def named_children(self) -> Iterator[Tuple[str, "Module"]]:
        for name in self._module_names:
            yield name, self.__dict__[name]

    def children(self) -> Iterator["Module"]:
        for _, module in self.named_children():
            yield module

    def named_modules(self, prefix: str = "") -> Iterator[Tuple[str, "Module"]]:
        """This module and every descendant, depth first, with dotted names ("" for self)."""
        yield prefix, self
        for name, child in self.named_children():
            yield from child.named_modules(f"{prefix}.{name}" if prefix else name)

    def modules(self) -> Iterator["Module"]:
        for _, module in self.named_modules():
            yield module

    def named_parameters(self, prefix: str = "") -> Iterator[Tuple[str, Parameter]]:
        """("layer.weight", Parameter) pairs, each parameter once even when shared."""
        seen = set()
        for mod_name, module in self.named_modules(prefix):
            for name in module._param_names:
                param = module.__dict__[name]
                if id(param) in seen:
                    continue
                seen.add(id(param))
                yield (f"{mod_name}.{name}" if mod_name else name), param

    def named_buffers(self, prefix: str = "") -> Iterator[Tuple[str, Tensor]]:
        """("bn.running_mean", Tensor) pairs for every buffer that is not None, each once."""
        seen = set()
        for mod_name, module in self.named_modules(prefix):
            for name in module._buffer_names:
                buf = module.__dict__[name]
                if buf is None or id(buf) in seen:
                    continue
                seen.add(id(buf))
                yield (f"{mod_name}.{name}" if mod_name else name), buf

    def buffers(self) -> List[Tensor]:
        return [b for _, b in self.named_buffers()]

    def _named_state(self) -> Iterator[Tuple[str, Tensor]]:
        """What ``state_dict`` saves: parameters, then persistent buffers."""
        yield from self.named_parameters()
        for mod_name, module in self.named_modules():
            for name in module._buffer_names:
                buf = module.__dict__[name]
                if buf is not None and name not in module._non_persistent:
                    yield (f"{mod_name}.{name}" if mod_name else name), buf

    def parameters(self) -> List[Parameter]:
        """All trainable parameters (a list, so it can be passed to several optimizers)."""
        return [p for _, p in self.named_parameters()]

    def num_parameters(self) -> int:
        """Total number of scalar weights."""
        return sum(p.size for p in self.parameters())

    # -- modes and gradients ---------------------------------------------------------------
    @property
    def training(self) -> bool:
        """The mode set by ``train()``/``eval()``; False in a thread inside :func:`eval_mode`."""
        return self.__dict__.get("_training", True) and _thread_eval.depth == 0

    @training.setter
    def training(self, mode: bool) -> None:
        object.__setattr__(self, "_training", bool(mode))

    def train(self, mode: bool = True) -> "Module":
        for module in self.modules():
            object.__setattr__(module, "training", bool(mode))
        return self

    def eval(self) -> "Module":
        return self.train(False)

    def zero_grad(self) -> None:
        """Drop every parameter's gradient (the next backward writes fresh ones)."""
        for p in self.parameters():
            p.grad = None

    def requires_grad_(self, requires_grad: bool = True) -> "Module":
        for p in self.parameters():
            p.requires_grad = bool(requires_grad)
        return self

    # -- state -----------------------------------------------------------------------------
    def state_dict(self) -> "OrderedDict[str, np.ndarray]":
        """Ordered name -> copy of each parameter and persistent buffer as a host NumPy array
        (safe to save or mutate)."""
        out: "OrderedDict[str, np.ndarray]" = OrderedDict()
        for name, p in self._named_state():
            data = p.data
            out[name] = data.get() if hasattr(data, "get") and not isinstance(data, np.ndarray) else data.copy()
        return out

    def load_state_dict(self, state: Mapping[str, Any]) -> None:
        """Copy ``state`` (from ``state_dict()``) into the parameters and buffers, in place.

        Refuses, before changing anything, a missing or unexpected key or a shape mismatch
        (ValueError listing every problem).
        """
        if not isinstance(state, Mapping):
            raise TypeError(f"state: expected a mapping of name -> array, got {type(state).__name__}")
        own: Dict[str, Tensor] = dict(self._named_state())
        missing = [k for k in own if k not in state]
        unexpected = [k for k in state if k not in own]
        problems = []
        if missing:
            problems.append(f"missing keys: {missing}")
        if unexpected:
            problems.append(f"unexpected keys: {unexpected}")
        arrays: Dict[str, np.ndarray] = {}
        for name, p in own.items():
            if name not in state:
                continue
            value = state[name]
            if isinstance(value, Tensor):
                value = value.numpy()
            elif hasattr(value, "get") and not isinstance(value, np.ndarray):
                value = value.get()
            value = np.asarray(value)
            if value.dtype.kind not in "iuf":
                problems.append(f"{name}: expected a numeric array, got dtype {value.dtype}")
            elif tuple(value.shape) != p.shape:
                problems.append(f"{name}: shape {tuple(value.shape)} in the state does not match "
                                f"the model's {p.shape}")
            else:
                arrays[name] = value
        if problems:
            raise ValueError(f"load_state_dict for {type(self).__name__}: " + "; ".join(problems))
        for name, value in arrays.items():
            p = own[name]
            # in place: optimizers and other holders keep referring to the same buffer
            # onto the GPU the parameter lives on ("cuda:N"), not the current device
            p.data[...] = value if isinstance(p.data, np.ndarray) else _move(value.astype(p.data.dtype),
                                                                              device_name(p.data))

    def to(self, device: str) -> "Module":
        """Move every parameter (and its gradient) and every buffer to ``device`` ("cpu" or
        "cuda"), in place.

        Build the optimizer after moving, since its state lives on the parameters' device.
        """
        device = _normalise_device(device)
        for p in self.parameters():
            p.data = _move(p.data, device)
            if p.grad is not None:
                p.grad = _move(p.grad, device)
        for b in self.buffers():
            b.data = _move(b.data, device)
        return self

    def cpu(self) -> "Module":
        return self.to("cpu")

    def cuda(self) -> "Module":
        return self.to("cuda")

    # -- calling ---------------------------------------------------------------------------
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        raise NotImplementedError(f"{type(self).__name__} must define forward()")

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        return self.forward(*args, **kwargs)

    def extra_repr(self) -> str:
        return ""

    def __repr__(self) -> str:
        lines = [f"{type(self).__name__}({self.extra_repr()}"]
        children = list(self.named_children())
        if not children:
            return lines[0] + ")"
        for name, child in children:
            body = repr(child).replace("\n", "\n  ")
            lines.append(f"  ({name}): {body}")
        return "\n".join(lines) + "\n)"
