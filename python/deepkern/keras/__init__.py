"""A Keras-style API on deepkern: the seeds' Keras programs run by changing their imports.

    from deepkern.keras import layers, models, regularizers, callbacks, optimizers, datasets, metrics
    from deepkern.keras import Input, Model, Sequential    # tensorflow.keras's paths
    from deepkern.keras.preprocessing.image import ImageDataGenerator
    from deepkern.keras.wrappers.scikit_learn import KerasClassifier

Everything is built on deepkern's own pieces: layers are ``dk.nn`` modules, ``fit`` is
``dk.train.fit`` with ``dk.optim`` optimizers and its callbacks, augmentation is
``dk.data.ImageDataGenerator``. Differences from Keras worth knowing:

* shapes are Keras's (channels-last); internally images are NCHW, and ``Flatten`` orders
  features (channel, row, column) -- see ``deepkern.keras.layers``;
* a softmax/sigmoid output trained with cross-entropy is fused into the loss (``forward``
  returns logits; ``predict`` returns probabilities);
* files from ``model.save`` are ``.npz`` archives (architecture as JSON text, weights,
  optimizer state); ``.h5``/``.keras`` names are refused, not written in another format;
  ``model.export("m.onnx")`` writes ONNX;
* functional models are single chains (no merge layers yet);
* ``fit`` shuffles with a seed drawn from ``dk.manual_seed``'s generator (or ``seed=``).
"""
from __future__ import annotations

from . import (callbacks, datasets, layers, losses, metrics, models, optimizers, preprocessing, regularizers,
               utils, wrappers)
from .layers import Input, KerasTensor
from .models import Model, Sequential, load_model
from ._onnx import register_all as _register_onnx_converters

_register_onnx_converters()

__all__ = ["callbacks", "datasets", "layers", "losses", "metrics", "models", "optimizers", "preprocessing",
           "regularizers", "utils", "wrappers", "Input", "KerasTensor", "Model", "Sequential", "load_model"]
