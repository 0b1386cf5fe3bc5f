"""``deepkern.compat.v1``: a TensorFlow-1 style graph front end (``import deepkern.compat.v1 as tf``).

The TF1 programs of the seed tutorials run with only their imports swapped::

    import deepkern.compat.v1 as tf
    from deepkern.compat.v1.examples.tutorials.mnist import input_data

``tf.placeholder``/``tf.Variable`` and the ops build a graph lazily; ``tf.Session().run`` evaluates
it on deepkern's core tensors (compiled kernels) and ``optimizer.minimize(loss)`` trains with the
core autograd and optimizers. Covered: placeholders, Variables, matmul, add/subtract/multiply/
divide, square, sqrt, exp, log, sigmoid, tanh, ``nn.relu``/``softmax``/``dropout``, the softmax
cross entropies, reduce_sum/mean/max, argmax, equal, cast, reshape, random_normal/uniform,
truncated_normal, zeros/ones/constant, ``Session.run`` with ``feed_dict`` and fetch lists,
``Tensor.eval``, ``global_variables_initializer`` and the ``train`` optimizers.
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence

from . import nn, train
from ._graph import (FailedPreconditionError, Graph, InteractiveSession, Operation, Session, Tensor,
                     Variable, as_dtype, convert_to_tensor, float32, float64, get_default_graph,
                     get_default_session, int32, int64, placeholder, reset_default_graph, uint8)
from ._graph import bool_ as bool  # noqa: A001  (tf.bool)
from ._ops import (abs, add, argmax, argmin, cast, constant, divide, equal, exp, fill, greater, identity,
                   less, log, matmul, multiply, negative, not_equal, ones, pow, random_normal, random_uniform,
                   reduce_max, reduce_mean, reduce_sum, reshape, sigmoid, sqrt, square, subtract, tanh,
                   transpose, truncated_normal, zeros)

__all__ = ["nn", "train", "Graph", "Tensor", "Variable", "Operation", "Session", "InteractiveSession",
           "placeholder", "convert_to_tensor", "get_default_graph", "reset_default_graph", "get_default_session",
           "as_dtype", "FailedPreconditionError", "float32", "float64", "int32", "int64", "uint8", "bool",
           "abs", "add", "argmax", "argmin", "cast", "constant", "divide", "equal", "exp", "fill", "greater",
           "identity", "less", "log", "matmul", "multiply", "negative", "not_equal", "ones", "pow",
           "random_normal", "random_uniform", "reduce_max", "reduce_mean", "reduce_sum", "reshape", "sigmoid",
           "sqrt", "square", "subtract", "tanh", "transpose", "truncated_normal", "zeros",
           "global_variables_initializer", "initialize_all_variables", "variables_initializer",
           "global_variables", "trainable_variables", "set_random_seed"]


def global_variables() -> List[Variable]:
    return list(get_default_graph().variables)


def trainable_variables() -> List[Variable]:
    return [v for v in get_default_graph().variables if v.trainable]


def variables_initializer(var_list: Sequence[Variable], name: str = "init") -> Operation:
    """One Operation running the initializers of ``var_list``."""
    variables = list(var_list)

    def action(session: Session, run: Any) -> None:
        for v in variables:
            v.initializer.action(session, run)
    return Operation(name, action)


def global_variables_initializer() -> Operation:
    """Initialise every variable of the default graph (those created before this call)."""
    return variables_initializer(global_variables())


initialize_all_variables = global_variables_initializer


def set_random_seed(seed: Optional[int]) -> None:
    """Seed deepkern's global generator (ops without their own ``seed=``)."""
    from ...nn import init
    init.manual_seed(0 if seed is None else seed)


def __getattr__(name: str) -> Any:
    # tf.keras in a TF1 program is deepkern's Keras facade (loaded on first use, like dk.keras)
    if name == "keras":
        import importlib
        return importlib.import_module("deepkern.keras")
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
