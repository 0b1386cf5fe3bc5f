"""ONNX converters for the Keras facade's layers and models (registered with ``deepkern.onnx``).

The exported graph takes Keras's channels-last inputs and returns what ``predict`` returns
(probabilities after a softmax/sigmoid output: the activation fused into the loss for training
is part of the graph). Inside, images are NCHW as in deepkern, with a Transpose at each end.
"""
from __future__ import annotations

import numpy as np

from .. import onnx as _onnx
from . import layers as _layers


def _layer(g: "_onnx.Graph", layer: _layers.Layer, x: str) -> str:
    """The layer's own modules in the order its ``call`` runs them, then its activation."""
    pad = layer.__dict__.get("pad")
    if pad is not None:
        x = _pad(g, pad, x)
    for attr in ("linear", "conv", "pool"):
        module = layer.__dict__.get(attr)
        if module is not None:
            x = g.module(module, x)
    scale = layer.__dict__.get("scale")
    if scale is not None:
        x = g.node("Mul", [x, g.constant(scale.factor, "window_scale")], "scaled")
    if isinstance(layer, _layers.Flatten):
        x = g.node("Flatten", [x], axis=1)
    act = layer.__dict__.get("act")
    return g.module(act, x) if act is not None else x


def _pad(g: "_onnx.Graph", pad: _layers._Pad2d, x: str) -> str:
    top, bottom, left, right = pad.pads
    pads = g.constant(np.array([0, 0, top, left, 0, 0, bottom, right], np.int64), "pads")
    value = g.constant(np.array(pad.value, np.float32), "pad_value")
    return g.node("Pad", [x, pads, value], "padded", mode="constant")


def _model(g: "_onnx.Graph", model, x: str) -> str:
    if len(model.input_shape) == 3:
        x = g.node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    for layer in model._stack:
        x = g.module(layer, x)
    if len(model.output_shape) == 3:
        x = g.node("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])
    return x


def register_all() -> None:
    from .models import Sequential

    # each class by name, never the Layer base: a layer kind added later has modules this
    # converter does not know, and must be refused (NotImplementedError) rather than skipped
    for cls in (_layers.InputLayer, _layers.Dense, _layers.Conv2D, _layers.MaxPooling2D,
                _layers.AveragePooling2D, _layers.Flatten, _layers.Dropout, _layers.Activation):
        _onnx.register(cls, _layer)  # Dropout and InputLayer have none of its modules: the identity
    _onnx.register(Sequential, _model)
