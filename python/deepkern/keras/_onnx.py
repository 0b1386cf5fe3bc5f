"""ONNX converters for the Keras facade's layers and models (registered with ``deepkern.onnx``).

The exported graph takes Keras's channels-last inputs and returns what ``predict`` returns
(probabilities after a softmax/sigmoid output: the activation fused into the loss for training
is part of the graph). Inside, images are NCHW as in deepkern, with a Transpose at each end.
"""
from __future__ import annotations

from typing import Any

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


def _batch_normalization(g: "_onnx.Graph", layer: Any, x: str) -> str:
    """Keras BatchNormalization in eval mode: the moving statistics, channels on axis 1 inside
    (NCHW images, (N, C) features; (N, L, C) sequences are turned to (N, C, L) and back)."""
    sequence = len(layer.input_shape) == 2
    if sequence:
        x = g.node("Transpose", [x], "ncl", perm=[0, 2, 1])
    channels = layer.input_shape[-1]
    gamma = np.ones(channels, np.float32) if layer.gamma is None else layer.gamma
    beta = np.zeros(channels, np.float32) if layer.beta is None else layer.beta
    inputs = [x, g.constant(gamma, "gamma"), g.constant(beta, "beta"),
              g.constant(layer.moving_mean, "moving_mean"), g.constant(layer.moving_variance, "moving_variance")]
    x = g.node("BatchNormalization", inputs, "batch_normalization", epsilon=float(layer.epsilon))
    if sequence:
        x = g.node("Transpose", [x], "nlc", perm=[0, 2, 1])
    act = layer.__dict__.get("act")
    return g.module(act, x) if act is not None else x


def _reshape(g: "_onnx.Graph", layer: Any, x: str) -> str:
    """Keras Reshape works in Keras's element order: images leave NCHW first, and a 3-D result
    goes back to NCHW."""
    if len(layer.input_shape) == 3:
        x = g.node("Transpose", [x], "nhwc", perm=[0, 2, 3, 1])
    shape = g.constant(np.array((-1,) + tuple(layer.output_shape), np.int64), "target_shape")
    x = g.node("Reshape", [x, shape], "reshaped")
    if len(layer.output_shape) == 3:
        x = g.node("Transpose", [x], "nchw", perm=[0, 3, 1, 2])
    return x


def register_all() -> None:
    from .models import Sequential

    # each class by name, never the Layer base: a layer kind added later has modules this
    # converter does not know, and must be refused (NotImplementedError) rather than skipped
    for cls in (_layers.InputLayer, _layers.Dense, _layers.Conv2D, _layers.MaxPooling2D,
                _layers.AveragePooling2D, _layers.Flatten, _layers.Dropout, _layers.Activation):
        _onnx.register(cls, _layer)  # Dropout and InputLayer have none of its modules: the identity
    # layers another change adds to deepkern.keras.layers; converted once they exist
    for name, converter in (("BatchNormalization", _batch_normalization), ("Reshape", _reshape)):
        if hasattr(_layers, name):
            _onnx.register(getattr(_layers, name), converter)
    _onnx.register(Sequential, _model)
