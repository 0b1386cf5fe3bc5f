"""Export a trained model to ONNX (needs the ``onnx`` package: ``pip install deepkern[onnx]``).

    import deepkern as dk
    model = dk.models.CNN()
    ...                                               # train it
    dk.onnx.export(model, "cnn.onnx", sample_input=x_test[:1])

    import onnxruntime as ort                         # any ONNX runtime can now run it
    session = ort.InferenceSession("cnn.onnx")
    logits = session.run(None, {"input": x_test})[0]

The graph is built layer by layer with ``onnx.helper`` from the modules' weights -- no trace of
a forward pass -- and mirrors what the model computes in eval mode: ``Dropout`` is the identity,
``BatchNorm`` uses its running statistics. The batch axis is dynamic (named ``"N"``); the other
axes are those of ``sample_input``. Supported: ``nn.Sequential`` of ``Linear`` (with its fused
ReLU), ``Conv2d``, ``MaxPool2d``, ``AvgPool2d``, ``ReLU``, ``Sigmoid``, ``Tanh``, ``Softmax``,
``LogSoftmax``, ``Flatten``, ``Dropout``, ``BatchNorm1d``/``BatchNorm2d``; ``dk.models``'
``Perceptron``, ``MLP`` and ``CNN``; and the Keras facade's models (``model.export(path)``),
whose converters ``deepkern.keras`` registers with :func:`register`. Any other module is a
NotImplementedError naming it.
"""
from __future__ import annotations

import os
from typing import Any, Callable, Dict, List, Optional, Sequence, Union

import numpy as np

from . import models as _models
from . import nn
from .autograd import Tensor, no_grad

__all__ = ["export", "register", "Graph", "OPSET"]

#: The ONNX opset the exported graphs use (onnxruntime 1.14 and newer run it).
OPSET = 17
#: IR version written into the file: the one that goes with ``OPSET`` (newer IR versions are
#: refused by older runtimes although nothing in these graphs needs them).
_IR_VERSION = 8
PathLike = Union[str, "os.PathLike[str]"]


def _require_onnx() -> Any:
    try:
        import onnx
    except ImportError:
        raise ImportError("deepkern.onnx.export needs the onnx package: pip install deepkern[onnx]") from None
    return onnx


def _host(array: Any) -> np.ndarray:
    if isinstance(array, Tensor):
        return array.numpy()
    return array.get() if hasattr(array, "get") and not isinstance(array, np.ndarray) else np.asarray(array)


class Graph:
    """The graph under construction: nodes and weights (initializers) with unique names.

    Converters receive it with the name of their input value and return the name of their output.
    """

    def __init__(self, input_rank: int) -> None:
        self.onnx = _require_onnx()
        #: rank of the graph's input (models that accept several layouts convert by it)
        self.input_rank = input_rank
        self.nodes: List[Any] = []
        self.initializers: List[Any] = []
        self._used: Dict[str, int] = {}

    def unique(self, hint: str) -> str:
        count = self._used.get(hint, 0)
        self._used[hint] = count + 1
        return hint if count == 0 else f"{hint}_{count}"

    def constant(self, array: Any, hint: str) -> str:
        """Add ``array`` as a weight; returns its name."""
        name = self.unique(hint)
        self.initializers.append(self.onnx.numpy_helper.from_array(np.ascontiguousarray(_host(array)), name))
        return name

    def node(self, op: str, inputs: Sequence[str], hint: Optional[str] = None, **attributes: Any) -> str:
        """Add one node with a single output; returns the output's name."""
        output = self.unique(hint or op.lower())
        self.nodes.append(self.onnx.helper.make_node(op, list(inputs), [output], name=output, **attributes))
        return output

    def module(self, module: nn.Module, x: str) -> str:
        """Convert ``module`` applied to the value ``x`` (dispatch on its class)."""
        for cls in type(module).__mro__:
            converter = _CONVERTERS.get(cls)
            if converter is not None:
                return converter(self, module, x)
        raise NotImplementedError(
            f"onnx export: no converter for {type(module).__name__}; supported: "
            f"{', '.join(sorted(c.__name__ for c in _CONVERTERS))}")


Converter = Callable[[Graph, Any, str], str]
_CONVERTERS: Dict[type, Converter] = {}


def register(cls: type, converter: Converter) -> None:
    """Make :func:`export` handle modules of ``cls`` (and its subclasses) with ``converter``,
    a function ``(graph, module, input_name) -> output_name``."""
    _CONVERTERS[cls] = converter


# ------------------------------------------------------------------------------ converters
def _linear(g: Graph, m: nn.Linear, x: str, activation: Optional[str] = None) -> str:
    inputs = [x, g.constant(m.weight, "weight")]
    if m.bias is not None:
        inputs.append(g.constant(m.bias, "bias"))
    out = g.node("Gemm", inputs, "linear", transB=1)
    return g.node("Relu", [out]) if (activation or m.activation) == "relu" else out


def _conv2d(g: Graph, m: nn.Conv2d, x: str) -> str:
    inputs = [x, g.constant(m.weight, "weight")]
    if m.bias is not None:
        inputs.append(g.constant(m.bias, "bias"))
    (ph, pw) = m.padding
    return g.node("Conv", inputs, "conv", kernel_shape=list(m.kernel_size), strides=list(m.stride),
                  pads=[ph, pw, ph, pw])


def _pool(op: str, **extra: Any) -> Converter:
    def convert(g: Graph, m: Any, x: str) -> str:
        (ph, pw) = m.padding
        return g.node(op, [x], op.lower(), kernel_shape=list(m.kernel_size), strides=list(m.stride),
                      pads=[ph, pw, ph, pw], **extra)
    return convert


def _unary(op: str) -> Converter:
    return lambda g, m, x: g.node(op, [x])


def _flatten(g: Graph, m: nn.Flatten, x: str) -> str:
    if m.start_axis == 1:
        return g.node("Flatten", [x], axis=1)
    # keep the leading axes, merge the rest (ONNX Flatten always makes a 2-D result)
    shape = g.constant(np.array([0] * m.start_axis + [-1], np.int64), "shape")
    return g.node("Reshape", [x, shape], "flatten")


def _sequential(g: Graph, m: nn.Sequential, x: str) -> str:
    for layer in m:
        x = g.module(layer, x)
    return x


def _batch_norm(g: Graph, m: Any, x: str) -> str:
    if m.running_mean is None:  # track_running_stats=False: eval mode normalises by the batch
        raise NotImplementedError(f"onnx export: {type(m).__name__} without running statistics "
                                  f"(track_running_stats=False) has no ONNX inference form")
    channels = m.running_mean.shape[0]
    weight = getattr(m, "weight", None)
    bias = getattr(m, "bias", None)
    scale = np.ones(channels, np.float32) if weight is None else _host(weight)
    shift = np.zeros(channels, np.float32) if bias is None else _host(bias)
    inputs = [x, g.constant(scale, "bn_scale"), g.constant(shift, "bn_bias"),
              g.constant(m.running_mean, "running_mean"), g.constant(m.running_var, "running_var")]
    return g.node("BatchNormalization", inputs, "batch_norm", epsilon=float(m.eps))


def _perceptron(g: Graph, m: _models.Perceptron, x: str) -> str:
    return g.node("Sigmoid", [_linear(g, m.linear, x)])


def _mlp(g: Graph, m: _models.MLP, x: str) -> str:
    if g.input_rank != 2:  # images are flattened first, as MLP.forward does
        x = g.node("Flatten", [x], axis=1)
    return g.module(m.layers, x)


def _cnn(g: Graph, m: _models.CNN, x: str) -> str:
    if g.input_rank != 4:  # (N, H, W) grayscale or flattened images, as CNN.forward accepts them
        shape = g.constant(np.array((-1, m.in_channels) + tuple(m.image_size), np.int64), "image_shape")
        x = g.node("Reshape", [x, shape], "images")
    return g.module(m.layers, x)


for _cls, _fn in ((nn.Sequential, _sequential), (nn.Linear, _linear), (nn.Conv2d, _conv2d),
                  (nn.MaxPool2d, _pool("MaxPool")), (nn.AvgPool2d, _pool("AveragePool", count_include_pad=1)),
                  (nn.ReLU, _unary("Relu")), (nn.Sigmoid, _unary("Sigmoid")), (nn.Tanh, _unary("Tanh")),
                  (nn.Softmax, lambda g, m, x: g.node("Softmax", [x], axis=m.axis)),
                  (nn.LogSoftmax, lambda g, m, x: g.node("LogSoftmax", [x], axis=m.axis)),
                  (nn.Flatten, _flatten), (nn.Dropout, lambda g, m, x: x),
                  (_models.Perceptron, _perceptron), (_models.MLP, _mlp), (_models.CNN, _cnn)):
    register(_cls, _fn)
for _name in ("BatchNorm1d", "BatchNorm2d"):  # running statistics; layers added by deepkern.nn
    if hasattr(nn, _name):
        register(getattr(nn, _name), _batch_norm)


# ------------------------------------------------------------------------------ export
def _reference_output(model: nn.Module, sample: np.ndarray) -> np.ndarray:
    with no_grad(), nn.eval_mode():
        return _host(model(Tensor(sample)))


def export(model: nn.Module, path: PathLike, sample_input: Any, input_name: str = "input",
           output_name: str = "output", check: bool = True) -> str:
    """Write ``model`` (in eval mode) as an ONNX file at ``path``; returns the path.

    Args:
        model: a supported module (see the module notes), with weights on the CPU or a GPU.
        sample_input: an example batch (array or Tensor); it fixes every axis but the first and
            is run once through the model to record the output's shape.
        input_name, output_name: the graph's value names (what ``session.run`` takes and returns).
        check: run ``onnx.checker`` on the result before writing.

    Raises NotImplementedError naming the first module that has no ONNX converter.
    """
    onnx = _require_onnx()
    if not isinstance(model, nn.Module):
        raise TypeError(f"model: expected a deepkern Module, got {type(model).__name__}")
    sample = np.ascontiguousarray(_host(sample_input), dtype=np.float32)
    if sample.ndim < 1 or sample.shape[0] < 1:
        raise ValueError(f"sample_input: expected a batch of shape (N, ...) with N >= 1, got {sample.shape}")
    out = _reference_output(model, sample)  # also builds a model that builds itself from data

    graph = Graph(input_rank=sample.ndim)
    result = graph.module(model, input_name)
    graph.nodes.append(onnx.helper.make_node("Identity", [result], [output_name], name=output_name))
    helper = onnx.helper
    inputs = [helper.make_tensor_value_info(input_name, onnx.TensorProto.FLOAT, ["N", *sample.shape[1:]])]
    outputs = [helper.make_tensor_value_info(output_name, onnx.TensorProto.FLOAT, ["N", *out.shape[1:]])]
    body = helper.make_graph(graph.nodes, type(model).__name__, inputs, outputs, graph.initializers)
    proto = helper.make_model(body, producer_name="deepkern", opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = _IR_VERSION
    if check:
        onnx.checker.check_model(proto)
    path = os.fspath(path)
    onnx.save(proto, path)
    return path
