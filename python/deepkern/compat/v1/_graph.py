"""The TF1 graph: symbolic ``Tensor`` nodes, ``Variable``, ``placeholder``, ``Operation`` and ``Session``.

Building the graph records nothing but nodes (each with a function of its inputs' values);
``Session.run`` evaluates the fetched nodes on deepkern's core tensors, so the forward pass is the
core ops (compiled kernels) and training ops differentiate it with the core autograd. Variable
values live in the session, as in TF1 (``global_variables_initializer`` sets them).
"""
from __future__ import annotations

import itertools
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple

import numpy as np

from ... import autograd as _ag
from ...autograd import Tensor as _Core

__all__ = ["Graph", "Tensor", "Variable", "Operation", "Session", "InteractiveSession", "placeholder",
           "convert_to_tensor", "get_default_graph", "reset_default_graph", "get_default_session",
           "as_dtype", "FailedPreconditionError", "float32", "float64", "int32", "int64", "bool_", "uint8"]

float32 = np.dtype(np.float32)
float64 = np.dtype(np.float64)
int32 = np.dtype(np.int32)
int64 = np.dtype(np.int64)
uint8 = np.dtype(np.uint8)
bool_ = np.dtype(np.bool_)  # exported as tf.bool
_DTYPE_NAMES = {"float": float32, "float32": float32, "double": float64, "float64": float64, "int32": int32,
                "int64": int64, "uint8": uint8, "bool": bool_}


class FailedPreconditionError(RuntimeError):
    """A variable was read before its initializer ran (TF's error of the same name)."""


def as_dtype(dtype: Any) -> np.dtype:
    """``tf.float32``, ``"float"``, ``np.float32``... as a NumPy dtype."""
    if isinstance(dtype, str):
        if dtype not in _DTYPE_NAMES:
            raise TypeError(f"dtype: unknown name {dtype!r}; expected one of {sorted(_DTYPE_NAMES)}")
        return _DTYPE_NAMES[dtype]
    return np.dtype(dtype)


class Graph:
    """Holds the variables created while it is the default graph."""

    def __init__(self) -> None:
        self.variables: List["Variable"] = []
        self._names = itertools.count()

    def unique_name(self, base: str) -> str:
        return f"{base}_{next(self._names)}"


_default_graph = Graph()
_default_session: List["Session"] = []


def get_default_graph() -> Graph:
    return _default_graph


def reset_default_graph() -> None:
    """Start a fresh default graph (forgets every variable created so far)."""
    global _default_graph
    _default_graph = Graph()


def get_default_session() -> Optional["Session"]:
    return _default_session[-1] if _default_session else None


class Tensor:
    """A symbolic value: ``op`` applied to ``inputs``; evaluated by ``Session.run`` or ``eval``.

    ``fn(*input_values)`` gets the inputs' values as core tensors and returns a core tensor.
    """

    def __init__(self, op: str, inputs: Sequence["Tensor"], fn: Optional[Callable[..., _Core]],
                 name: Optional[str] = None, shape: Optional[Tuple[Optional[int], ...]] = None) -> None:
        self.graph = _default_graph
        self.op = op
        self.inputs = tuple(inputs)
        self.fn = fn
        self.name = name or self.graph.unique_name(op)
        self._shape = shape

    @property
    def shape(self) -> Optional[Tuple[Optional[int], ...]]:
        """The static shape when known (placeholders, variables, constants), else None."""
        return self._shape

    def get_shape(self) -> Optional[Tuple[Optional[int], ...]]:
        return self._shape

    def eval(self, feed_dict: Optional[Dict[Any, Any]] = None, session: Optional["Session"] = None) -> Any:
        """The value in ``session`` (default: the one of the enclosing ``with tf.Session()``)."""
        return _session_or_default(session, "eval").run(self, feed_dict)

    def __repr__(self) -> str:
        shape = "unknown" if self._shape is None else tuple(self._shape)
        return f"<tf.Tensor '{self.name}' shape={shape}>"

    # operators build nodes; the functions are in _ops (imported late: they build Tensors)
    def __add__(self, other: Any) -> "Tensor":
        return _binary("add", self, other, lambda a, b: a + b)

    def __radd__(self, other: Any) -> "Tensor":
        return _binary("add", other, self, lambda a, b: a + b)

    def __sub__(self, other: Any) -> "Tensor":
        return _binary("sub", self, other, lambda a, b: a - b)

    def __rsub__(self, other: Any) -> "Tensor":
        return _binary("sub", other, self, lambda a, b: a - b)

    def __mul__(self, other: Any) -> "Tensor":
        return _binary("mul", self, other, lambda a, b: a * b)

    def __rmul__(self, other: Any) -> "Tensor":
        return _binary("mul", other, self, lambda a, b: a * b)

    def __truediv__(self, other: Any) -> "Tensor":
        return _binary("truediv", self, other, lambda a, b: a / b)

    def __rtruediv__(self, other: Any) -> "Tensor":
        return _binary("truediv", other, self, lambda a, b: a / b)

    def __matmul__(self, other: Any) -> "Tensor":
        return _binary("matmul", self, other, lambda a, b: a @ b)

    def __pow__(self, exponent: float) -> "Tensor":
        return Tensor("pow", (self,), lambda a: a ** exponent)

    def __neg__(self) -> "Tensor":
        return Tensor("neg", (self,), lambda a: -a)

    def __getitem__(self, index: Any) -> "Tensor":
        return Tensor("strided_slice", (self,), lambda a: a[index])


def convert_to_tensor(value: Any, dtype: Any = None) -> Tensor:
    """Graph tensors pass through; anything else (lists, arrays, numbers) becomes a constant."""
    if isinstance(value, Tensor):
        return value
    arr = np.asarray(value, dtype=None if dtype is None else as_dtype(dtype))
    if dtype is None and arr.dtype.kind == "f":
        arr = arr.astype(np.float32)
    const = _Core._wrap(np.ascontiguousarray(arr))
    return Tensor("Const", (), lambda: const, shape=arr.shape)


def _binary(op: str, a: Any, b: Any, fn: Callable[[_Core, _Core], _Core]) -> Tensor:
    return Tensor(op, (convert_to_tensor(a), convert_to_tensor(b)), fn)


class Variable(Tensor):
    """A trainable value that persists across ``Session.run`` calls; set by its initializer."""

    def __init__(self, initial_value: Any, trainable: bool = True, name: Optional[str] = None,
                 dtype: Any = None) -> None:
        init = convert_to_tensor(initial_value, dtype)
        super().__init__("Variable", (), None, name=name, shape=init.shape)
        self.initial_value = init
        self.trainable = bool(trainable)
        self.initializer = Operation("init_" + self.name, lambda session, run: session._initialize(self, run))
        self.graph.variables.append(self)


class Operation:
    """A node run for its effect (an initializer, a training step); ``Session.run`` gives None for it."""

    def __init__(self, name: str, action: Callable[["Session", "_Run"], None], needs_grad: Any = False) -> None:
        self.name = name
        self.action = action
        self.needs_grad = needs_grad

    def run(self, feed_dict: Optional[Dict[Any, Any]] = None, session: Optional["Session"] = None) -> None:
        _session_or_default(session, "run").run(self, feed_dict)

    def __repr__(self) -> str:
        return f"<tf.Operation '{self.name}'>"


def placeholder(dtype: Any, shape: Optional[Sequence[Optional[int]]] = None, name: Optional[str] = None) -> Tensor:
    """An input fed through ``feed_dict``; ``None`` dimensions accept any size."""
    node = Tensor("Placeholder", (), None, name=name, shape=None if shape is None else tuple(shape))
    node.dtype = as_dtype(dtype)
    return node


def _session_or_default(session: Optional["Session"], what: str) -> "Session":
    session = session or get_default_session()
    if session is None:
        raise ValueError(f"{what}: no session given and no default session; call it inside "
                         f"`with tf.Session() as sess:` or pass session=")
    return session


class _Run:
    """One ``Session.run``: feeds and the values computed so far (each node once)."""

    def __init__(self, session: "Session", feeds: Dict[int, _Core]) -> None:
        self.session = session
        self.values: Dict[int, _Core] = dict(feeds)

    def value(self, node: Tensor) -> _Core:
        # iterative post-order walk: deep graphs never hit the recursion limit
        stack = [node]
        while stack:
            current = stack[-1]
            if id(current) in self.values:
                stack.pop()
                continue
            missing = [i for i in current.inputs if id(i) not in self.values]
            if missing:
                stack.extend(missing)
                continue
            stack.pop()
            self.values[id(current)] = self._compute(current)
        return self.values[id(node)]

    def _compute(self, node: Tensor) -> _Core:
        if isinstance(node, Variable):
            return self.session._variable_value(node)
        if node.op == "Placeholder":
            raise ValueError(f"placeholder {node.name!r} (shape {node.shape}) needs a value: pass it in "
                             f"feed_dict")
        out = node.fn(*(self.values[id(i)] for i in node.inputs))
        return out if isinstance(out, _Core) else _Core._wrap(np.asarray(out))


def _flatten(fetches: Any) -> List[Any]:
    if isinstance(fetches, (list, tuple)):
        return [leaf for f in fetches for leaf in _flatten(f)]
    if isinstance(fetches, dict):
        return [leaf for f in fetches.values() for leaf in _flatten(f)]
    return [fetches]


def _rebuild(fetches: Any, results: Iterable[Any]) -> Any:
    it = iter(results)

    def build(f: Any) -> Any:
        if isinstance(f, (list, tuple)):
            return type(f)(build(x) for x in f)
        if isinstance(f, dict):
            return {k: build(v) for k, v in f.items()}
        return next(it)
    return build(fetches)


def _to_numpy(t: _Core) -> Any:
    arr = t.numpy()
    return arr[()] if arr.ndim == 0 else arr.copy()  # 0-d values as NumPy scalars, like TF


class Session:
    """Runs graph nodes; holds the variables' values. Use ``with tf.Session() as sess:``."""

    def __init__(self, target: str = "", graph: Optional[Graph] = None, config: Any = None) -> None:
        self.graph = graph or _default_graph
        self._variables: Dict[int, _Core] = {}
        self._closed = False

    def __enter__(self) -> "Session":
        _default_session.append(self)
        return self

    def __exit__(self, *exc: Any) -> None:
        if _default_session and _default_session[-1] is self:
            _default_session.pop()
        self.close()

    def close(self) -> None:
        self._closed = True

    def run(self, fetches: Any, feed_dict: Optional[Dict[Any, Any]] = None, options: Any = None,
            run_metadata: Any = None) -> Any:
        """Values of ``fetches`` (a node, an Operation, or lists/tuples/dicts of them) as NumPy.

        Tensors are computed once per call from the same variable values; then the Operations
        (training steps) run, so ``sess.run([train, loss])`` gives the loss before the step.
        """
        if self._closed:
            raise RuntimeError("run: this session is closed")
        flat = _flatten(fetches)
        for f in flat:
            if not isinstance(f, (Tensor, Operation)):
                raise TypeError(f"fetches: expected graph tensors or operations, got {type(f).__name__}")
        run = _Run(self, self._feeds(feed_dict))
        ops = [f for f in flat if isinstance(f, Operation)]
        mode = _ag.enable_grad() if any(op.needs_grad for op in ops) else _ag.no_grad()
        with mode:
            values = {id(f): run.value(f) for f in flat if isinstance(f, Tensor)}
            for op in ops:
                op.action(self, run)
        return _rebuild(fetches, [None if isinstance(f, Operation) else _to_numpy(values[id(f)]) for f in flat])

    def _feeds(self, feed_dict: Optional[Dict[Any, Any]]) -> Dict[int, _Core]:
        feeds: Dict[int, _Core] = {}
        for key, value in (feed_dict or {}).items():
            if not isinstance(key, Tensor):
                raise TypeError(f"feed_dict: keys must be graph tensors (placeholders), got {type(key).__name__}")
            dtype = getattr(key, "dtype", None)
            arr = np.asarray(value.numpy() if isinstance(value, _Core) else value, dtype=dtype)
            if dtype is None and arr.dtype.kind == "f":
                arr = arr.astype(np.float32)
            if key.shape is not None and (arr.ndim != len(key.shape) or any(
                    want is not None and want != got for want, got in zip(key.shape, arr.shape))):
                raise ValueError(f"feed_dict: {key.name!r} expects shape {key.shape}, got {arr.shape}")
            feeds[id(key)] = _Core._wrap(np.ascontiguousarray(arr))
        return feeds

    # -- variables -----------------------------------------------------------------------
    def _initialize(self, var: Variable, run: _Run) -> None:
        with _ag.no_grad():
            value = run.value(var.initial_value).numpy()
        value = np.array(value, dtype=np.float32 if value.dtype.kind == "f" else value.dtype)
        self._variables[id(var)] = _Core(value, requires_grad=var.trainable and value.dtype.kind == "f")

    def _clear_gradients(self) -> None:
        for value in self._variables.values():
            value.grad = None

    def _variable_value(self, var: Variable) -> _Core:
        try:
            return self._variables[id(var)]
        except KeyError:
            raise FailedPreconditionError(f"attempting to use uninitialized value {var.name}: run "
                                          f"tf.global_variables_initializer() first") from None


class InteractiveSession(Session):
    """A session that makes itself the default on creation (for ``t.eval()`` in a notebook)."""

    def __init__(self, target: str = "", graph: Optional[Graph] = None, config: Any = None) -> None:
        super().__init__(target, graph, config)
        _default_session.append(self)

    def close(self) -> None:
        if self in _default_session:
            _default_session.remove(self)
        super().close()
