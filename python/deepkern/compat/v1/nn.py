"""``tf.nn`` (TF1): activations and the softmax cross entropies, over the core's fused kernels."""
from __future__ import annotations

from typing import Any, Optional

import numpy as np

from ...autograd import Tensor as _Core
from ...nn import functional as _F
from ._graph import Tensor
from ._ops import _node, sigmoid, tanh

__all__ = ["relu", "sigmoid", "tanh", "softmax", "log_softmax", "softmax_cross_entropy_with_logits",
           "softmax_cross_entropy_with_logits_v2", "sparse_softmax_cross_entropy_with_logits", "dropout"]


def relu(features: Any, name: Optional[str] = None) -> Tensor:
    return _node("Relu", (features,), _F.relu, name)


def softmax(logits: Any, axis: int = -1, name: Optional[str] = None, dim: Optional[int] = None) -> Tensor:
    ax = axis if dim is None else dim
    return _node("Softmax", (logits,), lambda a: _F.softmax(a, ax), name)


def log_softmax(logits: Any, axis: int = -1, name: Optional[str] = None, dim: Optional[int] = None) -> Tensor:
    ax = axis if dim is None else dim
    return _node("LogSoftmax", (logits,), lambda a: _F.log_softmax(a, ax), name)


def softmax_cross_entropy_with_logits_v2(_sentinel: Any = None, labels: Any = None, logits: Any = None,
                                         axis: int = -1, name: Optional[str] = None,
                                         dim: Optional[int] = None) -> Tensor:
    """Per-example ``-sum(labels * log_softmax(logits))`` along ``axis`` (labels: probabilities)."""
    if _sentinel is not None or labels is None or logits is None:
        raise ValueError("softmax_cross_entropy_with_logits: call it with named arguments labels=..., logits=...")
    ax = axis if dim is None else dim
    return _node("SoftmaxCrossEntropyWithLogits", (labels, logits),
                 lambda y, z: -(y * _F.log_softmax(z, ax)).sum(axis=ax), name)


softmax_cross_entropy_with_logits = softmax_cross_entropy_with_logits_v2


def sparse_softmax_cross_entropy_with_logits(_sentinel: Any = None, labels: Any = None, logits: Any = None,
                                             name: Optional[str] = None) -> Tensor:
    """Per-example ``-log_softmax(logits)[i, labels[i]]`` (labels: class indices)."""
    if _sentinel is not None or labels is None or logits is None:
        raise ValueError("sparse_softmax_cross_entropy_with_logits: use named arguments labels=..., logits=...")

    def fn(y: _Core, z: _Core) -> _Core:
        idx = np.asarray(y.data).astype(np.int64)
        return -_F.log_softmax(z, -1)[np.arange(len(idx)), idx]
    return _node("SparseSoftmaxCrossEntropyWithLogits", (labels, logits), fn, name)


def dropout(x: Any, keep_prob: Any = None, name: Optional[str] = None, rate: Any = None) -> Tensor:
    """Inverted dropout: keep each value with probability ``keep_prob`` (or ``1 - rate``)."""
    if (keep_prob is None) == (rate is None):
        raise ValueError("dropout: give exactly one of keep_prob and rate")
    keep = keep_prob if rate is None else 1.0 - rate
    return _node("Dropout", (x, keep), lambda a, keep: _F.dropout(a, 1.0 - float(keep.item()), training=True), name)
