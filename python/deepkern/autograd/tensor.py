"""``Tensor`` and the tape of reverse-mode automatic differentiation.

A ``Tensor`` wraps a float32 array (``numpy.ndarray`` on the CPU, ``cupy.ndarray`` on a GPU).
Every operation on tensors that need gradients records its inputs and a backward closure on
the output (micrograd's design, vectorised): ``out._backward(g)`` receives d(root)/d(out) and
hands each input its share through ``_accumulate``. ``backward()`` sorts the graph
topologically, so a tensor used twice receives the sum of both gradients.

Rules kept throughout:

* an incoming gradient is never modified in place (it may be shared by several inputs);
* gradients are reduced back to the input's shape when the forward op broadcast;
* hot paths call ``deepkern.ops`` (the compiled kernels); the elementwise algebra here is
  plain array arithmetic on float32 arrays, which NumPy/CuPy already vectorise.

``no_grad()`` turns recording off (inference, optimizer updates).
"""
from __future__ import annotations

from typing import Any, Callable, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import _interop
from .._device import device_name as _device_name
from .._device import device_of as _device_of
from .._device import is_gpu_array
from .._device import move as _move
from .._device import xp_of
from .grad_mode import enable_grad, is_grad_enabled, no_grad
from .._validate import FLOAT32, scalar_value

__all__ = ["Tensor", "tensor", "from_dlpack", "no_grad", "enable_grad", "is_grad_enabled", "as_array", "xp_of"]

Array = Any  # numpy.ndarray or cupy.ndarray
Scalar = Union[int, float]

# Hooks run when a leaf's gradient is complete in backward(): id(leaf) -> (leaf, hooks). The
# entry holds the leaf, so its id cannot be reused while hooks are registered. Empty (one dict
# check per leaf) unless data-parallel training registered its gradient hooks.
_POST_ACCUMULATE_HOOKS: Dict[int, Tuple["Tensor", List[Callable[["Tensor"], None]]]] = {}


# ---------------------------------------------------------------------------- array helpers
def _contiguous(a: Array) -> Array:
    """``a`` as a C-contiguous array (no copy when it already is); ops refuses anything else."""
    if a.flags.c_contiguous:
        return a
    return xp_of(a).ascontiguousarray(a)


def as_array(data: Any, dtype: Any = None) -> Array:
    """Friendly conversion used by ``Tensor``: float32, C-contiguous.

    Integer NumPy/CuPy arrays keep their dtype (class labels, indices); everything else
    (lists, Python scalars, float64 or bool arrays) becomes float32 unless ``dtype`` is given.
    """
    if isinstance(data, Tensor):
        data = data.data
    if type(data) is np.ndarray and dtype is None and data.dtype is FLOAT32 and data.flags.c_contiguous:
        return data   # the usual batch: already what the rest of this function would return
    if is_gpu_array(data):
        if dtype is not None:
            data = data.astype(dtype, copy=False)
        elif data.dtype.kind not in "iu":
            data = data.astype(np.float32, copy=False)
        return _contiguous(data)
    if dtype is None:
        if isinstance(data, np.ndarray) and data.dtype.kind in "iu":
            return _contiguous(data)
        if isinstance(data, np.ndarray) and data.dtype.kind not in "biuf":
            raise TypeError(f"data: expected a numeric array, got dtype {data.dtype}")
        dtype = np.float32
    try:
        # order="C" (not ascontiguousarray, which would turn a 0-d scalar into shape (1,))
        return np.asarray(data, dtype=dtype, order="C")
    except (TypeError, ValueError) as exc:
        raise TypeError(f"data: cannot convert {type(data).__name__} to a {np.dtype(dtype).name} array "
                        f"({exc})") from None


def _unbroadcast(grad: Array, shape: Tuple[int, ...]) -> Array:
    """Sum ``grad`` over the axes that broadcasting added or stretched, back to ``shape``."""
    if grad.shape == shape:
        return grad
    extra = grad.ndim - len(shape)
    if extra > 0:
        grad = grad.sum(axis=tuple(range(extra)))
    stretched = tuple(i for i, n in enumerate(shape) if n == 1 and grad.shape[i] != 1)
    if stretched:
        grad = grad.sum(axis=stretched, keepdims=True)
    return grad.reshape(shape)


# ---------------------------------------------------------------------------- Tensor
class Tensor:
    """An array with an optional gradient and the record of how it was computed.

    ``Tensor(data, requires_grad=False)``: ``data`` is converted by :func:`as_array` (float32,
    C-contiguous; integer arrays keep their dtype for labels and indices). ``grad`` is an array
    like ``data`` or None. Arithmetic follows PyTorch (broadcasting, ``@``, ``**`` by a scalar);
    ``backward()`` fills ``.grad`` of every leaf that requires it.
    """

    __slots__ = ("data", "_grad", "_grad_owned", "requires_grad", "_parents", "_backward",
                 "_retain", "__weakref__")
    # ndarray <op> Tensor must defer to Tensor.__r<op>__ instead of broadcasting elementwise
    __array_ufunc__ = None

    def __init__(self, data: Any, requires_grad: bool = False, dtype: Any = None) -> None:
        self.data: Array = as_array(data, dtype)
        if requires_grad and self.data.dtype.kind != "f":
            raise TypeError(f"requires_grad: only floating tensors can require gradients, got dtype {self.data.dtype}")
        self.requires_grad: bool = bool(requires_grad)
        self._grad: Optional[Array] = None
        self._grad_owned = False  # True when ._grad is our own buffer (safe to add into in place)
        self._parents: Tuple["Tensor", ...] = ()
        self._backward: Optional[Callable[[Array], None]] = None
        self._retain = False

    @classmethod
    def _wrap(cls, data: Array) -> "Tensor":
        """A tensor around an array already float32 and on its device (no conversion)."""
        t = cls.__new__(cls)
        t.data = data
        t.requires_grad = False
        t._grad = None
        t._grad_owned = False
        t._parents = ()
        t._backward = None
        t._retain = False
        return t

    # -- gradient storage ------------------------------------------------------------------
    @property
    def grad(self) -> Optional[Array]:
        """d(root)/d(self) after ``backward()``, shaped like ``data``; None before."""
        return self._grad

    @grad.setter
    def grad(self, value: Optional[Array]) -> None:
        self._grad = value
        self._grad_owned = False

    def _accumulate(self, g: Array) -> None:
        # First contribution: keep a reference (no copy). Later ones: add out of place once,
        # then in place into the buffer we own, never into an array someone else holds.
        if self._grad is None:
            if g.dtype is not self.data.dtype and g.dtype != self.data.dtype:
                g = g.astype(self.data.dtype)
            if self._backward is None and not (g.flags.c_contiguous and g.flags.writeable):
                # a leaf's .grad is read by optimizers and users: give it a plain array,
                # not a broadcast or transposed view
                g = xp_of(g).ascontiguousarray(g) if g.flags.writeable else g.copy()
            self._grad = g
            self._grad_owned = False
        elif self._grad_owned:
            self._grad += g
        else:
            self._grad = self._grad + g
            self._grad_owned = True

    def retain_grad(self) -> "Tensor":
        """Keep ``.grad`` on this intermediate tensor after ``backward()`` (leaves always keep it)."""
        self._retain = True
        return self

    def register_post_accumulate_grad_hook(self, hook: Callable[["Tensor"], None]) -> Callable[[], None]:
        """Call ``hook(self)`` in ``backward()`` once this leaf's ``.grad`` is complete (after every
        contribution of that pass, before the optimizer runs); PyTorch's hook of the same name.

        Returns a function that removes the hook. Data-parallel training starts averaging a
        bucket of gradients from these hooks while backward is still computing earlier layers.
        """
        if not self.is_leaf or not self.requires_grad:
            raise RuntimeError("register_post_accumulate_grad_hook: only leaves that require grad "
                               "(parameters) accumulate a gradient")
        if not callable(hook):
            raise TypeError(f"hook: expected a callable, got {type(hook).__name__}")
        _POST_ACCUMULATE_HOOKS.setdefault(id(self), (self, []))[1].append(hook)

        def remove() -> None:
            entry = _POST_ACCUMULATE_HOOKS.get(id(self))
            if entry is not None and hook in entry[1]:
                entry[1].remove(hook)
                if not entry[1]:
                    del _POST_ACCUMULATE_HOOKS[id(self)]
        return remove

    @property
    def is_leaf(self) -> bool:
        return self._backward is None

    # -- graph construction ----------------------------------------------------------------
    @staticmethod
    def _make(data: Array, parents: Sequence["Tensor"], backward: Callable[[Array], None]) -> "Tensor":
        """Output tensor of an op; records ``backward`` only when some parent needs a gradient."""
        out = Tensor._wrap(data)
        if is_grad_enabled():
            needed = [p for p in parents if p.requires_grad]
            if needed:
                out.requires_grad = True
                out._parents = tuple(needed)
                out._backward = backward
        return out

    def backward(self, grad: Any = None, retain_graph: bool = False) -> None:
        """Accumulate d(self)/d(leaf) into every leaf's ``.grad``.

        ``grad`` defaults to 1 for a single-element tensor; otherwise it is required and must
        have this tensor's shape. The graph is freed afterwards unless ``retain_graph``.
        """
        if not self.requires_grad:
            raise RuntimeError("backward: this tensor does not require grad (no input had requires_grad=True, "
                               "or it was computed under no_grad)")
        xp = xp_of(self.data)
        if grad is None:
            if self.data.size != 1:
                raise RuntimeError(f"backward: grad can be implied only for a single-element tensor, "
                                   f"this one has shape {self.shape}; pass grad=")
            seed = xp.array(1, dtype=self.data.dtype)   # (cheaper than ones for the usual 0-d loss)
            if seed.shape != self.data.shape:
                seed = seed.reshape(self.data.shape)
        else:
            seed = grad.data if isinstance(grad, Tensor) else grad
            seed = xp.asarray(seed, dtype=self.data.dtype)
            if seed.shape != self.data.shape:
                raise ValueError(f"grad: expected shape {self.shape}, got {tuple(seed.shape)}")
        order = self._topological_order()
        self._accumulate(seed)
        for node in reversed(order):
            fn = node._backward
            if fn is None:  # a leaf: every node that uses it has run, so its gradient is complete
                if _POST_ACCUMULATE_HOOKS and node._grad is not None and id(node) in _POST_ACCUMULATE_HOOKS:
                    for hook in tuple(_POST_ACCUMULATE_HOOKS[id(node)][1]):
                        hook(node)
                continue
            g = node._grad
            if g is not None:
                fn(g)
            if not retain_graph:
                node._backward = _freed_backward
                node._parents = ()
            if not node._retain:
                node._grad = None

    def _topological_order(self) -> List["Tensor"]:
        """Nodes reachable from self, each after all its parents (iterative DFS, no recursion limit)."""
        order: List[Tensor] = []
        seen = {id(self)}
        stack: List[Tuple[Tensor, Iterator[Tensor]]] = [(self, iter(self._parents))]
        while stack:
            node, parents = stack[-1]
            for p in parents:
                key = id(p)
                if key not in seen:
                    seen.add(key)
                    if p._parents:
                        stack.append((p, iter(p._parents)))
                        break
                    order.append(p)   # a leaf is done at once: the same place a push and pop would give it
            else:
                stack.pop()
                order.append(node)
        return order

    # -- array-like properties -------------------------------------------------------------
    @property
    def shape(self) -> Tuple[int, ...]:
        return tuple(self.data.shape)

    @property
    def ndim(self) -> int:
        return self.data.ndim

    @property
    def dtype(self):
        return self.data.dtype

    @property
    def size(self) -> int:
        return int(self.data.size)

    @property
    def device(self) -> str:
        """"cpu" or "cuda"."""
        return _device_of(self.data)

    def __len__(self) -> int:
        return len(self.data)

    def __repr__(self) -> str:
        grad = ", requires_grad=True" if self.requires_grad else ""
        dev = "" if self.device == "cpu" else ", device='cuda'"
        body = np.array2string(self.numpy(), precision=4, threshold=20, separator=", ")
        return f"Tensor({body}{dev}{grad})"

    def numpy(self) -> np.ndarray:
        """The data as a NumPy array (a copy from the GPU; the array itself on the CPU)."""
        return self.data.get() if is_gpu_array(self.data) else self.data

    def __array__(self, dtype: Any = None, copy: Optional[bool] = None) -> np.ndarray:
        """NumPy's array protocol: ``np.asarray(t)`` shares the memory of a CPU tensor; a GPU
        tensor or another dtype is a copy, which ``copy=False`` refuses (NumPy 2 semantics)."""
        return _interop.array_protocol(self.data, dtype, copy)

    # -- DLPack: torch.from_dlpack(t), np.from_dlpack(t), cupy.from_dlpack(t) share the memory
    def __dlpack__(self, stream: Any = None, max_version: Any = None, dl_device: Any = None,
                   copy: Optional[bool] = None) -> Any:
        """A DLPack capsule of the data (no copy). The autograd record does not travel with it."""
        return _interop.export_dlpack(self.data, stream=stream, max_version=max_version,
                                      dl_device=dl_device, copy=copy)

    def __dlpack_device__(self) -> Tuple[int, int]:
        return _interop.dlpack_device(self.data)

    # No __cuda_array_interface__: the library treats objects that have one as raw GPU arrays
    # (_validate.is_gpu_array); cupy.from_dlpack(t) is the zero-copy route for GPU tensors.

    def item(self) -> float:
        """The single value as a Python number."""
        if self.data.size != 1:
            raise ValueError(f"item: expected a single-element tensor, got shape {self.shape}")
        return scalar_value(self.data)  # a GPU loss's label check is read with it

    def tolist(self) -> Any:
        return self.numpy().tolist()

    def detach(self) -> "Tensor":
        """The same data, cut from the graph (never requires grad)."""
        return Tensor._wrap(self.data)

    def to(self, device: str) -> "Tensor":
        """This tensor on ``device`` ("cpu", "cuda" or "cuda:N"); self when already there.

        Gradients flow back to the original device. "cuda" needs CuPy and a GPU, else RuntimeError.
        """
        moved = _move(self.data, device)
        if moved is self.data:
            return self
        src = _device_name(self.data)  # "cuda:N": gradients return to the very GPU

        def backward(g: Array) -> None:
            self._accumulate(_move(g, src))
        return Tensor._make(moved, (self,), backward)

    def cpu(self) -> "Tensor":
        return self.to("cpu")

    def cuda(self) -> "Tensor":
        return self.to("cuda")

    def argmax(self, axis: Optional[int] = None) -> Array:
        """Indices of the maxima (an integer array; not differentiable)."""
        return self.data.argmax(axis=axis)

    # -- elementwise arithmetic ------------------------------------------------------------
    def _operand(self, other: Any) -> "Tensor":
        if isinstance(other, Tensor):
            return other
        if isinstance(other, (int, float, np.number)) and not isinstance(other, bool):
            if self.data.dtype.kind == "f":
                # a Python scalar keeps the tensor's precision (float32 stays float32)
                return Tensor._wrap(self.data.dtype.type(other))
            return Tensor._wrap(np.asarray(other))  # integer tensors promote as NumPy does
        arr = xp_of(self.data).asarray(other)
        if arr.dtype != self.data.dtype and self.data.dtype.kind == "f":
            arr = arr.astype(self.data.dtype)
        return Tensor._wrap(arr)

    def __add__(self, other: Any) -> "Tensor":
        other = self._operand(other)
        a, b = self, other

        def backward(g: Array) -> None:
            if a.requires_grad:
                a._accumulate(_unbroadcast(g, a.data.shape))
            if b.requires_grad:
                b._accumulate(_unbroadcast(g, b.data.shape))
        return Tensor._make(a.data + b.data, (a, b), backward)

    def __radd__(self, other: Any) -> "Tensor":
        return self._operand(other) + self

    def __sub__(self, other: Any) -> "Tensor":
        other = self._operand(other)
        a, b = self, other

        def backward(g: Array) -> None:
            if a.requires_grad:
                a._accumulate(_unbroadcast(g, a.data.shape))
            if b.requires_grad:
                b._accumulate(_unbroadcast(-g, b.data.shape))
        return Tensor._make(a.data - b.data, (a, b), backward)

    def __rsub__(self, other: Any) -> "Tensor":
        return self._operand(other) - self

    def __mul__(self, other: Any) -> "Tensor":
        other = self._operand(other)
        a, b = self, other

        def backward(g: Array) -> None:
            if a.requires_grad:
                a._accumulate(_unbroadcast(g * b.data, a.data.shape))
            if b.requires_grad:
                b._accumulate(_unbroadcast(g * a.data, b.data.shape))
        return Tensor._make(a.data * b.data, (a, b), backward)

    def __rmul__(self, other: Any) -> "Tensor":
        return self._operand(other) * self

    def __truediv__(self, other: Any) -> "Tensor":
        other = self._operand(other)
        a, b = self, other

        def backward(g: Array) -> None:
            if a.requires_grad:
                a._accumulate(_unbroadcast(g / b.data, a.data.shape))
            if b.requires_grad:
                b._accumulate(_unbroadcast(-g * a.data / (b.data * b.data), b.data.shape))
        return Tensor._make(a.data / b.data, (a, b), backward)

    def __rtruediv__(self, other: Any) -> "Tensor":
        return self._operand(other) / self

    def __neg__(self) -> "Tensor":
        def backward(g: Array) -> None:
            self._accumulate(-g)
        return Tensor._make(-self.data, (self,), backward)

    def __pos__(self) -> "Tensor":
        return self

    def __pow__(self, exponent: Scalar) -> "Tensor":
        if isinstance(exponent, Tensor) or not isinstance(exponent, (int, float, np.number)) \
                or isinstance(exponent, bool):
            raise TypeError(f"exponent: expected an int or float, got {type(exponent).__name__}")
        p = float(exponent)
        x = self.data

        def backward(g: Array) -> None:
            if p == 2.0:
                d = 2 * x
            elif p == 1.0:
                d = None
            else:
                d = p * x ** (p - 1)
            self._accumulate(g if d is None else g * d)
        out = x * x if p == 2.0 else x ** x.dtype.type(p)
        return Tensor._make(out, (self,), backward)

    def exp(self) -> "Tensor":
        out = xp_of(self.data).exp(self.data)

        def backward(g: Array) -> None:
            self._accumulate(g * out)
        return Tensor._make(out, (self,), backward)

    def log(self) -> "Tensor":
        x = self.data

        def backward(g: Array) -> None:
            self._accumulate(g / x)
        return Tensor._make(xp_of(x).log(x), (self,), backward)

    def sqrt(self) -> "Tensor":
        out = xp_of(self.data).sqrt(self.data)

        def backward(g: Array) -> None:
            self._accumulate(g * 0.5 / out)
        return Tensor._make(out, (self,), backward)

    def abs(self) -> "Tensor":
        """|x|; the gradient at 0 is 0 (sign(x))."""
        x = self.data
        xp = xp_of(x)

        def backward(g: Array) -> None:
            self._accumulate(g * xp.sign(x))
        return Tensor._make(xp.abs(x), (self,), backward)

    def __abs__(self) -> "Tensor":
        return self.abs()

    # relu, sigmoid, tanh, softmax, log_softmax: the functions of autograd.functional, attached
    # there as methods (x.relu() is F.relu(x)) so that this module never imports that one

    # -- matmul ----------------------------------------------------------------------------
    def __matmul__(self, other: Any) -> "Tensor":
        other = self._operand(other)
        a, b = self, other
        if a.ndim == 2 and b.ndim == 2 and a.dtype == np.float32 and b.dtype == np.float32:
            from .. import ops
            ad, bd = _contiguous(a.data), _contiguous(b.data)
            out = ops.matmul(ad, bd)

            def backward(g: Array) -> None:
                g = _contiguous(g)
                if a.requires_grad:
                    a._accumulate(ops.matmul(g, bd, trans_b=True))   # (M, N) @ (N, K)
                if b.requires_grad:
                    b._accumulate(ops.matmul(ad, g, trans_a=True))   # (K, M) @ (M, N)
            return Tensor._make(out, (a, b), backward)
        return a._matmul_general(b)

    def _matmul_general(self, other: "Tensor") -> "Tensor":
        # vectors and batched matrices: the array module's matmul, gradients by the same rules
        a, b = self, other
        xp = xp_of(a.data)
        if a.ndim == 0 or b.ndim == 0:
            raise ValueError("matmul: both operands must have at least one dimension")
        out = xp.matmul(a.data, b.data)

        # promote vectors to matrices as matmul does: a (K,) -> (1, K), b (K,) -> (K, 1)
        A = a.data[None, :] if a.ndim == 1 else a.data                     # (..., M, K)
        B = b.data[:, None] if b.ndim == 1 else b.data                     # (..., K, N)
        full_shape = tuple(np.broadcast_shapes(A.shape[:-2], B.shape[:-2])) + (A.shape[-2], B.shape[-1])

        def backward(g: Array) -> None:
            G = g.reshape(full_shape)                                      # (..., M, N)
            if a.requires_grad:
                ga = _unbroadcast(xp.matmul(G, xp.swapaxes(B, -1, -2)), A.shape)
                a._accumulate(ga.reshape(a.data.shape))
            if b.requires_grad:
                gb = _unbroadcast(xp.matmul(xp.swapaxes(A, -1, -2), G), B.shape)
                b._accumulate(gb.reshape(b.data.shape))
        return Tensor._make(out, (a, b), backward)

    def __rmatmul__(self, other: Any) -> "Tensor":
        return self._operand(other) @ self

    # -- reductions ------------------------------------------------------------------------
    def sum(self, axis: Union[None, int, Tuple[int, ...]] = None, keepdims: bool = False) -> "Tensor":
        x = self.data
        out = x.sum(axis=axis, keepdims=keepdims)
        xp = xp_of(x)

        def backward(g: Array) -> None:
            if not keepdims and axis is not None:
                g = xp.expand_dims(g, _positive_axes(axis, x.ndim))
            self._accumulate(xp.broadcast_to(g, x.shape))
        return Tensor._make(xp.asarray(out), (self,), backward)

    def mean(self, axis: Union[None, int, Tuple[int, ...]] = None, keepdims: bool = False) -> "Tensor":
        axes = tuple(range(self.ndim)) if axis is None else _positive_axes(axis, self.ndim)
        count = 1
        for ax in axes:
            count *= self.data.shape[ax]
        return self.sum(axis=axis, keepdims=keepdims) * (1.0 / count)

    # -- shape -----------------------------------------------------------------------------
    def reshape(self, *shape: Any) -> "Tensor":
        if len(shape) == 1 and isinstance(shape[0], (tuple, list)):
            shape = tuple(shape[0])
        x = self.data
        out = x.reshape(shape)

        def backward(g: Array) -> None:
            self._accumulate(g.reshape(x.shape))
        return Tensor._make(out, (self,), backward)

    def view(self, *shape: Any) -> "Tensor":
        return self.reshape(*shape)

    def flatten(self, start_axis: int = 1) -> "Tensor":
        """Collapse the axes from ``start_axis`` on (the batch axis 0 stays by default)."""
        return self.reshape(self.shape[:start_axis] + (-1,))

    def transpose(self, *axes: int) -> "Tensor":
        """Permute axes (reverse them when none are given), like ``numpy.transpose``."""
        if len(axes) == 1 and isinstance(axes[0], (tuple, list)):
            axes = tuple(axes[0])
        perm = tuple(reversed(range(self.ndim))) if not axes else tuple(_positive_axes(axes, self.ndim))
        if sorted(perm) != list(range(self.ndim)):
            raise ValueError(f"axes: {axes} is not a permutation of {self.ndim} axes")
        inverse = tuple(int(i) for i in np.argsort(perm))
        xp = xp_of(self.data)

        def backward(g: Array) -> None:
            self._accumulate(xp.transpose(g, inverse))
        return Tensor._make(xp.transpose(self.data, perm), (self,), backward)

    @property
    def T(self) -> "Tensor":
        return self.transpose()

    def __getitem__(self, index: Any) -> "Tensor":
        if isinstance(index, Tensor):
            index = index.data
        elif isinstance(index, tuple):
            index = tuple(i.data if isinstance(i, Tensor) else i for i in index)
        x = self.data
        xp = xp_of(x)

        parts = index if isinstance(index, tuple) else (index,)
        fancy = any(not (p is None or p is Ellipsis or isinstance(p, (int, np.integer, slice))) for p in parts)

        def backward(g: Array) -> None:
            full = xp.zeros(x.shape, dtype=x.dtype)
            if fancy:
                # add.at sums repeated indices (an element picked twice gets both gradients)
                xp.add.at(full, index, g)
            else:
                full[index] = g
            self._accumulate(full)
        return Tensor._make(xp.asarray(x[index]), (self,), backward)


def _freed_backward(_: Array) -> None:
    raise RuntimeError("backward: this graph was already freed by an earlier backward(); "
                       "pass retain_graph=True to the first call to differentiate it twice")


def _positive_axes(axis: Union[int, Sequence[int]], ndim: int) -> Tuple[int, ...]:
    axes = (axis,) if isinstance(axis, (int, np.integer)) else tuple(axis)
    out = []
    for ax in axes:
        ax = int(ax)
        if not -ndim <= ax < ndim:
            raise ValueError(f"axis: {ax} is out of range for a {ndim}-D tensor")
        out.append(ax % ndim)
    return tuple(out)


def tensor(data: Any, requires_grad: bool = False) -> Tensor:
    """``Tensor(data, requires_grad)`` (PyTorch's spelling)."""
    return Tensor(data, requires_grad=requires_grad)


def from_dlpack(obj: Any, requires_grad: bool = False) -> Tensor:
    """A Tensor sharing the memory of ``obj`` -- anything with ``__dlpack__``: a torch tensor,
    a NumPy or CuPy array, another Tensor (``torch.from_dlpack``'s counterpart).

    No copy is made for float32 or integer C-contiguous data (CPU memory becomes a NumPy
    array, CUDA memory a CuPy array); other dtypes or strides are converted as ``Tensor()``
    converts them, which copies.
    """
    return Tensor(_interop.import_dlpack(obj), requires_grad=requires_grad)
