"""Keras-style layers built from ``deepkern.nn`` modules.

Shapes are given and reported the Keras way, channels last and without the batch axis
(``input_shape=(28, 28, 1)``); inside, images travel as deepkern's NCHW and every layer is
a ``dk.nn.Module`` holding ordinary ``dk.nn`` layers (``Linear``, ``Conv2d``, ...), so the
model trains with ``dk.train.fit`` like any other deepkern module.

Weight layouts are deepkern's (PyTorch's): a ``Dense`` weight is ``(units, in_features)``,
a ``Conv2D`` weight ``(filters, in_channels, kh, kw)``. ``get_weights``/``set_weights`` speak
Keras's layouts instead (``(in, units)`` and ``(kh, kw, in, filters)``).

``Flatten`` flattens deepkern's NCHW activations in (channel, row, column) order, which
costs no transpose; Keras flattens (row, column, channel). Training is unaffected (the next
``Dense`` simply learns its rows in the other order); only weights copied from Keras into a
``Dense`` that follows ``Flatten`` would need their rows permuted.
"""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import nn
from .._device import device_name, move
from .._validate import pair, window_shape
from ..autograd import Tensor, xp_of
from ..nn import functional as F
from . import regularizers as _regularizers

__all__ = ["Layer", "InputLayer", "Input", "KerasTensor", "Dense", "Conv2D", "MaxPooling2D", "AveragePooling2D",
           "MaxPool2D", "AvgPool2D", "Flatten", "Dropout", "Activation", "BatchNormalization", "Reshape",
           "ACTIVATIONS", "get"]

Shape = Tuple[int, ...]

#: Activation names a layer accepts (None and "linear" mean no activation).
ACTIVATIONS = ("relu", "sigmoid", "tanh", "softmax", "linear")


def _check_activation(activation: Optional[str]) -> Optional[str]:
    if activation is None or activation == "linear":
        return None
    if not isinstance(activation, str) or activation not in ACTIVATIONS:
        raise ValueError(f"activation: expected one of {', '.join(ACTIVATIONS)} or None, got {activation!r}")
    return activation


def _positive_int(value: Any, name: str) -> int:
    if isinstance(value, (bool, np.bool_)) or not isinstance(value, (int, np.integer)) or value < 1:
        raise ValueError(f"{name}: expected an int >= 1, got {value!r}")
    return int(value)


def _pair(value: Any, name: str) -> Tuple[int, int]:
    return pair(value, name, 1)


def _padding(value: Any) -> str:
    if not isinstance(value, str) or value.lower() not in ("valid", "same"):
        raise ValueError(f"padding: expected 'valid' or 'same', got {value!r}")
    return value.lower()


def _shape(value: Any, name: str) -> Shape:
    if isinstance(value, (int, np.integer)) and not isinstance(value, bool):
        value = (value,)
    if not isinstance(value, (tuple, list)) or not value:
        raise ValueError(f"{name}: expected a tuple of positive ints (without the batch axis), got {value!r}")
    return tuple(_positive_int(v, name) for v in value)


def _same_padding(size: int, kernel: int, stride: int) -> Tuple[int, int, int]:
    """TensorFlow's 'same': output ceil(size / stride); returns (before, after, output)."""
    out = -(-size // stride)
    total = max((out - 1) * stride + kernel - size, 0)
    return total // 2, total - total // 2, out


class _Pad2d(nn.Module):
    """Pad NCHW images by (top, bottom, left, right) with a constant (asymmetric 'same' padding)."""

    def __init__(self, pads: Tuple[int, int, int, int], value: float = 0.0) -> None:
        super().__init__()
        self.pads = pads
        self.value = float(value)

    def forward(self, x: Tensor) -> Tensor:
        top, bottom, left, right = self.pads
        data = x.data
        xp = xp_of(data)
        n, c, h, w = data.shape
        out = xp.full((n, c, h + top + bottom, w + left + right), self.value, dtype=data.dtype)
        out[:, :, top:top + h, left:left + w] = data

        def backward(g: Any) -> None:
            x._accumulate(xp.ascontiguousarray(g[:, :, top:top + h, left:left + w]))
        return Tensor._make(out, (x,), backward)

    def extra_repr(self) -> str:
        return f"pads={self.pads}, value={self.value:g}"


class _Scale(nn.Module):
    """Multiply by a constant (rows, cols) map: turns a zero-padded average into TF's
    'same' average, which divides by the number of real pixels in each window."""

    def __init__(self, factor: np.ndarray) -> None:
        super().__init__()
        self.factor = factor.astype(np.float32)
        self._placed: Dict[str, Any] = {"cpu": self.factor}   # the map on each device it was used on

    def forward(self, x: Tensor) -> Tensor:
        # on the input's own GPU ("cuda:N"), copied there once rather than at every call
        where = device_name(x.data)
        if where not in self._placed:
            self._placed[where] = move(self.factor, where)
        return x * self._placed[where]


def _activation_module(activation: Optional[str], image: bool) -> Optional[nn.Module]:
    if activation is None:
        return None
    if activation == "softmax":
        return nn.Softmax(axis=1 if image else -1)  # over channels, which are axis 1 in NCHW
    return {"relu": nn.ReLU, "sigmoid": nn.Sigmoid, "tanh": nn.Tanh}[activation]()


class Layer(nn.Module):
    """Base class: a Keras layer that builds its ``dk.nn`` modules once the input shape is known.

    Subclasses implement ``_build(input_shape) -> output_shape`` (Keras shapes, no batch axis)
    and ``call(x)`` (the layer's work before its activation, on deepkern's layout).
    """

    _kind = "layer"

    def __init__(self, name: Optional[str] = None, input_shape: Optional[Sequence[int]] = None,
                 activation: Optional[str] = None, input_dim: Optional[int] = None) -> None:
        super().__init__()
        if name is not None and (not isinstance(name, str) or not name):
            raise ValueError(f"name: expected a non-empty str, got {name!r}")
        self.name = name
        if input_dim is not None:  # Keras's older spelling of input_shape=(input_dim,)
            if input_shape is not None:
                raise ValueError("give input_shape or input_dim, not both")
            input_shape = (input_dim,)
        self.declared_input_shape: Optional[Shape] = (
            None if input_shape is None else _shape(input_shape, "input_shape"))
        self.activation = _check_activation(activation)
        self.input_shape: Optional[Shape] = None
        self.output_shape: Optional[Shape] = None
        self.built = False

    # -- building ------------------------------------------------------------------------
    def build(self, input_shape: Sequence[int]) -> Shape:
        """Create the weights for inputs of ``input_shape`` (no batch axis); returns the output shape."""
        input_shape = _shape(input_shape, "input_shape")
        if self.built:
            if input_shape != self.input_shape:
                raise ValueError(f"{self.name}: built for inputs {self.input_shape}, got {input_shape}")
            return self.output_shape
        output_shape = self._build(input_shape)
        self.act = _activation_module(self.activation, image=len(output_shape) == 3)
        self.input_shape, self.output_shape = input_shape, output_shape
        self.built = True
        return output_shape

    def _build(self, input_shape: Shape) -> Shape:
        return input_shape

    # -- running -------------------------------------------------------------------------
    def __call__(self, x: Any, *args: Any, **kwargs: Any) -> Any:
        if isinstance(x, KerasTensor):  # the functional API
            return x._through(self)
        return super().__call__(x, *args, **kwargs)

    def call(self, x: Tensor) -> Tensor:
        return x

    def forward(self, x: Tensor, activation: bool = True) -> Tensor:
        """The layer's output; ``activation=False`` stops before the activation (the model uses
        it to hand logits to a fused softmax/sigmoid cross-entropy)."""
        x = self.call(x)
        act = self.__dict__.get("act")
        return act(x) if activation and act is not None else x

    # -- weights -------------------------------------------------------------------------
    def count_params(self) -> int:
        """Number of scalar weights (after ``build``), non-trainable ones (moving statistics) included."""
        return sum(w.size for w in self._keras_weights())

    @property
    def weights(self) -> List[nn.Parameter]:
        return self.parameters()

    def _keras_weights(self) -> List[Tensor]:
        """The arrays Keras lists for this layer, in its order (trainable ones, then the rest)."""
        return list(self.parameters())

    def get_weights(self) -> List[np.ndarray]:
        """Weights as NumPy arrays in Keras's layouts (copies)."""
        return [np.array(a) for a in self._to_keras([w.numpy() for w in self._keras_weights()])]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set the weights from arrays in Keras's layouts (as ``get_weights`` returns them)."""
        params = self._keras_weights()
        expected = [a.shape for a in self._to_keras([np.empty(p.shape, np.float32) for p in params])]
        if len(weights) != len(params):
            raise ValueError(f"{self.name}: set_weights expected {len(params)} arrays of shapes "
                             f"{expected}, got {len(weights)}")
        given = [np.asarray(w, dtype=np.float32) for w in weights]
        for i, (a, shape) in enumerate(zip(given, expected)):
            if a.shape != shape:  # compared in Keras's layout, the one the caller wrote
                raise ValueError(f"{self.name}: weight {i} has shape {a.shape}, expected {shape} "
                                 f"(Keras layout, as get_weights() returns it)")
        arrays = self._from_keras(given)
        for p, a in zip(params, arrays):
            p.data[...] = a if isinstance(p.data, np.ndarray) else move(a, device_name(p.data))

    def _to_keras(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        return arrays

    def _from_keras(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        return arrays

    def regularization_terms(self) -> List[Tuple[nn.Parameter, "_regularizers.Regularizer"]]:
        """(parameter, regularizer) pairs whose penalties join the loss."""
        return []

    # -- serialisation -------------------------------------------------------------------
    def get_config(self) -> Dict[str, Any]:
        """JSON-ready constructor arguments (``from_config`` rebuilds the layer)."""
        config: Dict[str, Any] = {"name": self.name}
        if self.declared_input_shape is not None:
            config["input_shape"] = list(self.declared_input_shape)
        if "activation" in self._config_keys():
            config["activation"] = self.activation
        return config

    def _config_keys(self) -> Tuple[str, ...]:
        return ()

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Layer":
        return cls(**config)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


class InputLayer(Layer):
    """Declares the input shape (no weights, no computation): ``InputLayer(input_shape=(28, 28, 1))``."""

    _kind = "input_layer"

    def __init__(self, input_shape: Optional[Sequence[int]] = None, shape: Optional[Sequence[int]] = None,
                 name: Optional[str] = None, **kwargs: Any) -> None:
        if (input_shape is None) == (shape is None):
            raise ValueError("InputLayer: give exactly one of input_shape or shape")
        super().__init__(name=name, input_shape=input_shape if shape is None else shape, **kwargs)


class KerasTensor:
    """A symbolic batch of shape ``(None,) + shape`` (Keras's functional API): what ``Input``
    returns and what a layer returns when called on one. It holds no data; calling a layer on
    it builds the layer for its shape. ``keras.Model(inputs, outputs)`` follows ``parent``
    links from the outputs back to the input."""

    #: what ``Layer.__call__`` and ``Sequential.add`` look for
    _keras_symbolic = True

    def __init__(self, shape: Shape, layer: Layer, parent: Optional["KerasTensor"]) -> None:
        self.shape: Tuple[Optional[int], ...] = (None,) + tuple(shape)
        self.layer = layer
        self.parent = parent

    def _through(self, layer: Layer) -> "KerasTensor":
        """``layer(self)``: build the layer for this shape and return its symbolic output."""
        if isinstance(layer, InputLayer):
            raise ValueError("an InputLayer takes no inputs; use keras.Input(shape=...) to start a graph")
        return KerasTensor(layer.build(self.shape[1:]), layer, self)

    def chain(self) -> List[Layer]:
        """The layers from the input to this value, the InputLayer first."""
        chain: List[Layer] = []
        node: Optional[KerasTensor] = self
        while node is not None:
            chain.append(node.layer)
            node = node.parent
        return chain[::-1]

    def __repr__(self) -> str:
        return f"<KerasTensor shape={self.shape} from {type(self.layer).__name__}>"


def Input(shape: Sequence[int], batch_size: Optional[int] = None, name: Optional[str] = None,
          dtype: Any = None) -> KerasTensor:
    """``Input(shape=(28, 28, 1))``: the start of a functional model (``keras.Model``), or the
    first entry of a ``Sequential`` list. ``batch_size`` and ``dtype`` are accepted for
    compatibility (deepkern batches are any size, float32)."""
    layer = InputLayer(shape=shape, name=name)
    return KerasTensor(layer.build(layer.declared_input_shape), layer, None)


class Dense(Layer):
    """Fully connected: ``activation(x @ kernel + bias)`` on inputs of shape ``(features,)``.

    ``activation="relu"`` runs as one fused matmul+bias+ReLU kernel. Inputs with more axes
    than one are refused for images (use ``Flatten`` first); ``kernel_regularizer`` /
    ``bias_regularizer`` add their penalty to the training loss.
    """

    _kind = "dense"

    def __init__(self, units: int, activation: Optional[str] = None, use_bias: bool = True,
                 kernel_initializer: str = "glorot_uniform", kernel_regularizer: Any = None,
                 bias_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(activation=activation, **kwargs)
        self.units = _positive_int(units, "units")
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializer(kernel_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)

    def _build(self, input_shape: Shape) -> Shape:
        if len(input_shape) == 3:
            raise ValueError(f"{self.name}: Dense got images of shape {input_shape}; add Flatten() before it")
        self.linear = nn.Linear(input_shape[-1], self.units, bias=self.use_bias,
                                init=self.kernel_initializer)
        return input_shape[:-1] + (self.units,)

    def call(self, x: Tensor) -> Tensor:
        return self.linear(x)

    def forward(self, x: Tensor, activation: bool = True) -> Tensor:
        if activation and self.activation == "relu":
            return self.linear(x, activation="relu")  # one fused kernel
        return super().forward(x, activation)

    def _to_keras(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        return [arrays[0].T] + arrays[1:]

    def _from_keras(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        return [np.ascontiguousarray(arrays[0].T)] + arrays[1:]

    def regularization_terms(self) -> List[Tuple[nn.Parameter, "_regularizers.Regularizer"]]:
        return _terms(self.linear, self.kernel_regularizer, self.bias_regularizer)

    def _config_keys(self) -> Tuple[str, ...]:
        return ("activation",)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(units=self.units, use_bias=self.use_bias,
                      kernel_initializer=_INITIALIZER_NAMES[self.kernel_initializer],
                      kernel_regularizer=_regularizers.serialize(self.kernel_regularizer),
                      bias_regularizer=_regularizers.serialize(self.bias_regularizer))
        return config


class Conv2D(Layer):
    """2-D convolution over ``(rows, cols, channels)`` images: ``Conv2D(32, (3, 3), activation="relu")``.

    ``padding="valid"`` (no padding) or ``"same"`` (output ``ceil(size / stride)``, padded as
    TensorFlow does: any odd pixel goes at the bottom/right).
    """

    _kind = "conv2d"

    def __init__(self, filters: int, kernel_size: Union[int, Tuple[int, int]],
                 strides: Union[int, Tuple[int, int]] = (1, 1),
                 padding: str = "valid", activation: Optional[str] = None, use_bias: bool = True,
                 kernel_initializer: str = "glorot_uniform", kernel_regularizer: Any = None,
                 bias_regularizer: Any = None, **kwargs: Any) -> None:
        super().__init__(activation=activation, **kwargs)
        self.filters = _positive_int(filters, "filters")
        self.kernel_size = _pair(kernel_size, "kernel_size")
        self.strides = _pair(strides, "strides")
        self.padding = _padding(padding)
        self.use_bias = bool(use_bias)
        self.kernel_initializer = _initializer(kernel_initializer)
        self.kernel_regularizer = _regularizers.get(kernel_regularizer)
        self.bias_regularizer = _regularizers.get(bias_regularizer)

    def _build(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: Conv2D needs images (rows, cols, channels), got input shape {input_shape}")
        rows, cols, channels = input_shape
        (kh, kw), (sh, sw) = self.kernel_size, self.strides
        conv_padding = (0, 0)
        if self.padding == "same":
            top, bottom, out_rows = _same_padding(rows, kh, sh)
            left, right, out_cols = _same_padding(cols, kw, sw)
            if (top, left) == (bottom, right):
                conv_padding = (top, left)
            else:
                self.pad = _Pad2d((top, bottom, left, right))
        else:
            out_rows, out_cols = window_shape(rows, cols, (kh, kw), (sh, sw), (0, 0))
            if rows < kh or cols < kw:
                raise ValueError(f"{self.name}: kernel {self.kernel_size} is larger than the input "
                                 f"{(rows, cols)} with padding='valid'")
        self.conv = nn.Conv2d(channels, self.filters, self.kernel_size, stride=self.strides,
                              padding=conv_padding, bias=self.use_bias, init=self.kernel_initializer)
        return (out_rows, out_cols, self.filters)

    def call(self, x: Tensor) -> Tensor:
        pad = self.__dict__.get("pad")
        return self.conv(pad(x) if pad is not None else x)

    def forward(self, x: Tensor, activation: bool = True, pool: bool = False) -> Tensor:
        """With ``activation="relu"``: conv, bias and ReLU as one fused kernel, and with ``pool=True``
        (a 2x2 ``MaxPooling2D`` follows: :func:`pools_into`) the max-pool too."""
        if not (activation and self.activation == "relu"):
            return super().forward(x, activation)
        pad = self.__dict__.get("pad")
        return self.conv.forward_relu(pad(x) if pad is not None else x, pool)

    def _to_keras(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        return [arrays[0].transpose(2, 3, 1, 0)] + arrays[1:]

    def _from_keras(self, arrays: List[np.ndarray]) -> List[np.ndarray]:
        return [np.ascontiguousarray(arrays[0].transpose(3, 2, 0, 1))] + arrays[1:]

    def regularization_terms(self) -> List[Tuple[nn.Parameter, "_regularizers.Regularizer"]]:
        return _terms(self.conv, self.kernel_regularizer, self.bias_regularizer)

    def _config_keys(self) -> Tuple[str, ...]:
        return ("activation",)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(filters=self.filters, kernel_size=list(self.kernel_size), strides=list(self.strides),
                      padding=self.padding, use_bias=self.use_bias,
                      kernel_initializer=_INITIALIZER_NAMES[self.kernel_initializer],
                      kernel_regularizer=_regularizers.serialize(self.kernel_regularizer),
                      bias_regularizer=_regularizers.serialize(self.bias_regularizer))
        return config


class _Pooling2D(Layer):
    _pool_class: Any = None

    def __init__(self, pool_size: Union[int, Tuple[int, int]] = (2, 2),
                 strides: Union[None, int, Tuple[int, int]] = None,
                 padding: str = "valid", **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.pool_size = _pair(pool_size, "pool_size")
        self.strides = self.pool_size if strides is None else _pair(strides, "strides")
        self.padding = _padding(padding)

    def _build(self, input_shape: Shape) -> Shape:
        if len(input_shape) != 3:
            raise ValueError(f"{self.name}: pooling needs images (rows, cols, channels), got input shape {input_shape}")
        rows, cols, channels = input_shape
        (kh, kw), (sh, sw) = self.pool_size, self.strides
        if self.padding == "same":
            top, bottom, out_rows = _same_padding(rows, kh, sh)
            left, right, out_cols = _same_padding(cols, kw, sw)
            if top or bottom or left or right:
                self._build_same_padding((top, bottom, left, right), (rows, cols), (out_rows, out_cols))
        else:
            if rows < kh or cols < kw:
                raise ValueError(f"{self.name}: pool {self.pool_size} is larger than the input {(rows, cols)}")
            out_rows, out_cols = window_shape(rows, cols, (kh, kw), (sh, sw), (0, 0))
        self.pool = self._pool_class(self.pool_size, stride=self.strides)
        return (out_rows, out_cols, channels)

    def _build_same_padding(self, pads: Tuple[int, int, int, int], size: Tuple[int, int],
                            out: Tuple[int, int]) -> None:
        raise NotImplementedError

    def call(self, x: Tensor) -> Tensor:
        pad, scale = self.__dict__.get("pad"), self.__dict__.get("scale")
        out = self.pool(pad(x) if pad is not None else x)
        return scale(out) if scale is not None else out

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(pool_size=list(self.pool_size), strides=list(self.strides), padding=self.padding)
        return config


class MaxPooling2D(_Pooling2D):
    """Max over ``pool_size`` windows (``strides`` default to ``pool_size``)."""

    _kind = "max_pooling2d"
    _pool_class = nn.MaxPool2d

    def _build_same_padding(self, pads, size, out) -> None:
        # padded pixels must never win the max, as in TensorFlow
        self.pad = _Pad2d(pads, value=float(np.finfo(np.float32).min))


def pools_into(layer: Layer, following: Optional[Layer]) -> bool:
    """``Conv2D(activation="relu")`` then an unpadded ``MaxPooling2D((2, 2))``: one fused kernel for the model."""
    return (type(layer) is Conv2D and layer.activation == "relu" and type(following) is MaxPooling2D
            and following.pool_size == (2, 2) and following.strides == (2, 2)
            and following.__dict__.get("pad") is None)


class AveragePooling2D(_Pooling2D):
    """Mean over ``pool_size`` windows (``strides`` default to ``pool_size``); with
    ``padding="same"`` each window averages only its real pixels, as in TensorFlow."""

    _kind = "average_pooling2d"
    _pool_class = nn.AvgPool2d

    def _build_same_padding(self, pads, size, out) -> None:
        top, _, left, _ = pads
        (kh, kw), (sh, sw) = self.pool_size, self.strides

        def real(n_out: int, stride: int, kernel: int, before: int, size_: int) -> np.ndarray:
            starts = np.arange(n_out) * stride - before
            return np.minimum(starts + kernel, size_) - np.maximum(starts, 0)

        counts = np.outer(real(out[0], sh, kh, top, size[0]), real(out[1], sw, kw, left, size[1]))
        self.pad = _Pad2d(pads)
        self.scale = _Scale((kh * kw) / counts)


MaxPool2D = MaxPooling2D
AvgPool2D = AveragePooling2D


class Flatten(Layer):
    """``(rows, cols, channels)`` (or any shape) -> one feature axis; see the module notes on order."""

    _kind = "flatten"

    def _build(self, input_shape: Shape) -> Shape:
        return (int(np.prod(input_shape)),)

    def call(self, x: Tensor) -> Tensor:
        return F.flatten(x, 1)


class Dropout(Layer):
    """Zero a fraction ``rate`` of the inputs while training (scaled by 1/(1-rate)); identity otherwise."""

    _kind = "dropout"

    def __init__(self, rate: float, seed: Optional[int] = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(rate, bool) or not isinstance(rate, (int, float)) or not 0.0 <= rate < 1.0:
            raise ValueError(f"rate: expected a fraction in [0, 1), got {rate!r}")
        self.rate = float(rate)
        self.seed = seed
        self.dropout = nn.Dropout(self.rate, rng=None if seed is None else np.random.default_rng(seed))

    def call(self, x: Tensor) -> Tensor:
        return self.dropout(x)

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(rate=self.rate, seed=self.seed)
        return config


class Activation(Layer):
    """An activation on its own: ``Activation("relu")``."""

    _kind = "activation"

    def __init__(self, activation: str, **kwargs: Any) -> None:
        super().__init__(activation=activation, **kwargs)

    def _config_keys(self) -> Tuple[str, ...]:
        return ("activation",)


def _keras_layout(x: Tensor) -> Tensor:
    """Images travel as NCHW inside; Keras's (rows, cols, channels) order for anything else."""
    return x.transpose(0, 2, 3, 1) if x.ndim == 4 else x


class BatchNormalization(Layer):
    """Normalise each channel (the last Keras axis) with the batch's statistics while training
    and with moving averages otherwise, then scale by ``gamma`` and shift by ``beta``.

    Keras's semantics and defaults: ``moving = momentum * moving + (1 - momentum) * batch``
    with momentum 0.99, the biased batch variance, ``epsilon`` 1e-3. The moving statistics
    are buffers (``moving_mean``, ``moving_variance``): saved with the model, not trained.
    ``get_weights`` returns gamma and beta (the trainable weights).
    """

    _kind = "batch_normalization"

    def __init__(self, axis: int = -1, momentum: float = 0.99, epsilon: float = 1e-3, center: bool = True,
                 scale: bool = True, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if axis != -1:
            raise ValueError(f"axis: only -1 (the channels, Keras's default) is supported, got {axis!r}")
        if isinstance(momentum, bool) or not isinstance(momentum, (int, float)) or not 0.0 <= momentum <= 1.0:
            raise ValueError(f"momentum: expected a number in [0, 1], got {momentum!r}")
        if isinstance(epsilon, bool) or not isinstance(epsilon, (int, float)) or not epsilon > 0:
            raise ValueError(f"epsilon: expected a number > 0, got {epsilon!r}")
        self.axis, self.momentum, self.epsilon = axis, float(momentum), float(epsilon)
        self.center, self.scale = bool(center), bool(scale)

    def _build(self, input_shape: Shape) -> Shape:
        c = input_shape[-1]
        self.gamma = nn.Parameter(np.ones(c, dtype=np.float32)) if self.scale else None
        self.beta = nn.Parameter(np.zeros(c, dtype=np.float32)) if self.center else None
        self.register_buffer("moving_mean", np.zeros(c, dtype=np.float32))
        self.register_buffer("moving_variance", np.ones(c, dtype=np.float32))
        return input_shape

    def _keras_weights(self) -> List[Tensor]:
        return self.parameters() + [self.moving_mean, self.moving_variance]

    def call(self, x: Tensor) -> Tensor:
        # channels are axis 1 for NCHW images and (N, C); (N, L, C) sequences are turned to (N, C, L)
        seq = x.ndim == 3
        h = x.transpose(0, 2, 1) if seq else x
        y = F.batch_norm(h, self.moving_mean, self.moving_variance, self.gamma, self.beta, self.training,
                         momentum=1.0 - self.momentum, eps=self.epsilon, unbiased=False)
        return y.transpose(0, 2, 1) if seq else y

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(axis=self.axis, momentum=self.momentum, epsilon=self.epsilon, center=self.center,
                      scale=self.scale)
        return config


class Reshape(Layer):
    """Reshape each sample to ``target_shape`` (Keras order, no batch axis; one entry may be -1).

    Works in Keras's element order: images are read as (rows, cols, channels) and a 3-D
    target is handed on as an image, so the result matches Keras's whatever the layout inside.
    """

    _kind = "reshape"

    def __init__(self, target_shape: Sequence[int], **kwargs: Any) -> None:
        super().__init__(**kwargs)
        if isinstance(target_shape, (int, np.integer)):
            target_shape = (target_shape,)
        target = tuple(target_shape) if isinstance(target_shape, (tuple, list)) else None
        if not target or any(isinstance(v, bool) or not isinstance(v, (int, np.integer)) or (v < 1 and v != -1)
                             for v in target) or sum(v == -1 for v in target) > 1:
            raise ValueError(f"target_shape: expected positive ints with at most one -1, got {target_shape!r}")
        self.target_shape = tuple(int(v) for v in target)

    def _build(self, input_shape: Shape) -> Shape:
        size = int(np.prod(input_shape))
        known = int(np.prod([v for v in self.target_shape if v != -1]))
        if -1 in self.target_shape:
            if size % known:
                raise ValueError(f"{self.name}: cannot reshape {input_shape} into {self.target_shape}")
            return tuple(size // known if v == -1 else v for v in self.target_shape)
        if known != size:
            raise ValueError(f"{self.name}: cannot reshape {input_shape} ({size} values) into "
                             f"{self.target_shape} ({known})")
        return self.target_shape

    def call(self, x: Tensor) -> Tensor:
        y = _keras_layout(x).reshape((x.shape[0],) + self.output_shape)
        return y.transpose(0, 3, 1, 2) if y.ndim == 4 else y

    def get_config(self) -> Dict[str, Any]:
        config = super().get_config()
        config.update(target_shape=list(self.target_shape))
        return config


# ------------------------------------------------------------------------------ helpers
# Keras initializer names -> deepkern's schemes (uniform Glorot/He as in dk.nn.init)
_INITIALIZERS = {"glorot_uniform": "xavier", "xavier": "xavier", "he_uniform": "he", "he": "he"}
_INITIALIZER_NAMES = {"xavier": "glorot_uniform", "he": "he_uniform"}


def _initializer(name: str) -> str:
    if name not in _INITIALIZERS:
        raise ValueError(f"kernel_initializer: expected one of {', '.join(_INITIALIZERS)}, got {name!r}")
    return _INITIALIZERS[name]


def _terms(module: nn.Module, kernel_reg: Any, bias_reg: Any) -> List[Tuple[nn.Parameter, Any]]:
    terms = []
    if kernel_reg is not None:
        terms.append((module.weight, kernel_reg))
    if bias_reg is not None and module.bias is not None:
        terms.append((module.bias, bias_reg))
    return terms


_LAYER_CLASSES: Dict[str, type] = {cls.__name__: cls for cls in (
    InputLayer, Dense, Conv2D, MaxPooling2D, AveragePooling2D, Flatten, Dropout, Activation, BatchNormalization,
    Reshape)}


def get(class_name: str) -> type:
    """The layer class called ``class_name`` (for rebuilding saved models)."""
    if class_name not in _LAYER_CLASSES:
        raise ValueError(f"unknown layer class {class_name!r}; known: {', '.join(_LAYER_CLASSES)}")
    return _LAYER_CLASSES[class_name]
