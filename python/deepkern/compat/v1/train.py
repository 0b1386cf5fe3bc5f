"""``tf.train`` (TF1): optimizers whose ``minimize(loss)`` is a training-step Operation.

Running the step evaluates ``loss`` (sharing the forward pass with anything fetched in the same
``Session.run``), backpropagates through the core autograd and updates the variables with the
core's fused optimizer kernels. Optimizer state (Adam's moments) lives per session.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ... import optim as _optim
from ._graph import Operation, Session, Tensor, Variable, _Run

__all__ = ["Optimizer", "GradientDescentOptimizer", "MomentumOptimizer", "AdamOptimizer", "RMSPropOptimizer"]


def _variables_of(loss: Tensor) -> List[Variable]:
    """Trainable variables ``loss`` depends on, in creation order."""
    found, stack, seen = [], [loss], set()
    while stack:
        node = stack.pop()
        if id(node) in seen:
            continue
        seen.add(id(node))
        if isinstance(node, Variable) and node.trainable:
            found.append(node)
        stack.extend(node.inputs)
    order = {id(v): i for i, v in enumerate(loss.graph.variables)}
    return sorted(found, key=lambda v: order.get(id(v), 0))


class Optimizer:
    """Base: subclasses name the core optimizer and its arguments in ``_make``."""

    def __init__(self, learning_rate: float) -> None:
        self.learning_rate = float(learning_rate)

    def _make(self, params: Sequence[Any]) -> _optim.Optimizer:
        raise NotImplementedError

    def minimize(self, loss: Tensor, var_list: Optional[Sequence[Variable]] = None, name: Optional[str] = None,
                 **_: Any) -> Operation:
        """An Operation that takes one step downhill on ``loss`` (a scalar, or summed if not)."""
        if not isinstance(loss, Tensor):
            raise TypeError(f"minimize: loss must be a graph tensor, got {type(loss).__name__}")
        variables = list(var_list) if var_list is not None else _variables_of(loss)
        if not variables:
            raise ValueError("minimize: the loss depends on no trainable tf.Variable")
        per_session: Dict[int, _optim.Optimizer] = {}

        def step(session: Session, run: _Run) -> None:
            params = [session._variable_value(v) for v in variables]
            opt = per_session.get(id(session))
            if opt is None:
                opt = per_session[id(session)] = self._make(params)
            value = run.value(loss)
            (value if value.size == 1 else value.sum()).backward(retain_graph=True)
            opt.step()
            # backward also reached variables outside var_list: drop every gradient so another
            # optimizer's next step never sees this one's
            session._clear_gradients()
        return Operation(name or f"{type(self).__name__}_minimize", step, needs_grad=True)


class GradientDescentOptimizer(Optimizer):
    """``w -= learning_rate * grad``."""

    def _make(self, params: Sequence[Any]) -> _optim.Optimizer:
        return _optim.SGD(params, lr=self.learning_rate)


class MomentumOptimizer(Optimizer):
    def __init__(self, learning_rate: float, momentum: float, use_nesterov: bool = False) -> None:
        super().__init__(learning_rate)
        self.momentum, self.use_nesterov = float(momentum), bool(use_nesterov)

    def _make(self, params: Sequence[Any]) -> _optim.Optimizer:
        return _optim.SGD(params, lr=self.learning_rate, momentum=self.momentum, nesterov=self.use_nesterov)


class AdamOptimizer(Optimizer):
    """Adam with TF1's defaults (epsilon 1e-8; the core's bias-corrected update)."""

    def __init__(self, learning_rate: float = 0.001, beta1: float = 0.9, beta2: float = 0.999,
                 epsilon: float = 1e-8) -> None:
        super().__init__(learning_rate)
        self.beta1, self.beta2, self.epsilon = float(beta1), float(beta2), float(epsilon)

    def _make(self, params: Sequence[Any]) -> _optim.Optimizer:
        return _optim.Adam(params, lr=self.learning_rate, betas=(self.beta1, self.beta2), eps=self.epsilon)


class RMSPropOptimizer(Optimizer):
    def __init__(self, learning_rate: float, decay: float = 0.9, epsilon: float = 1e-10) -> None:
        super().__init__(learning_rate)
        self.decay, self.epsilon = float(decay), float(epsilon)

    def _make(self, params: Sequence[Any]) -> _optim.Optimizer:
        return _optim.RMSprop(params, lr=self.learning_rate, alpha=self.decay, eps=self.epsilon)
