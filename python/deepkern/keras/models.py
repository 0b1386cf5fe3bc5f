"""``Sequential``: a Keras-style model that trains with ``dk.train.fit``.

    from deepkern.keras import layers, models

    model = models.Sequential([
        layers.Conv2D(32, (3, 3), activation="relu", input_shape=(28, 28, 1)),
        layers.MaxPooling2D((2, 2)),
        layers.Flatten(),
        layers.Dense(10, activation="softmax"),
    ])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    history = model.fit(x_train, y_train, epochs=5, batch_size=128, validation_split=0.2)
    test_loss, test_acc = model.evaluate(x_test, y_test)

The model is itself a ``dk.nn.Module`` whose layers hold ordinary ``dk.nn`` modules; ``fit``
calls ``dk.train.fit`` with a ``dk.optim`` optimizer and deepkern's loss modules, so nothing
here re-implements training. Inputs are channels-last like Keras's and are transposed to
deepkern's NCHW inside ``forward``. A softmax (sigmoid) output trained with cross-entropy is
split off during training: ``forward`` then returns logits, the loss uses the fused stable
kernels, and ``predict`` applies the softmax (sigmoid) -- see ``deepkern.keras.losses``.
"""
from __future__ import annotations

import contextlib
import contextvars
import json
import os
from collections import OrderedDict
from typing import Any, Dict, Iterator, List, Optional, Sequence, Tuple, Union

import numpy as np

from .. import distributed as _distributed
from .. import nn, optim, train
from .._files import check_float32_values, read_npz, save_npz
from ..autograd import Tensor
from ..nn.init import get_generator
from . import layers as _layers
from . import losses as _losses
from . import metrics as _metrics
from . import optimizers as _optimizers
from . import training as _training

__all__ = ["Sequential", "Model", "load_model", "model_from_json", "SAVE_FORMAT", "SAVE_VERSION"]

PathLike = Union[str, "os.PathLike[str]"]

#: Marker stored in every file ``Sequential.save`` writes.
SAVE_FORMAT = "deepkern-keras-model"
#: Layout version of those files.
SAVE_VERSION = 1
#: File name endings ``save`` refuses: formats deepkern does not write (it writes ``.npz``).
_FOREIGN_FORMATS = {".h5": "HDF5", ".hdf5": "HDF5", ".keras": "Keras v3 (.keras)", ".pb": "SavedModel",
                    ".tf": "SavedModel"}


def _npz_path(filepath: PathLike, what: str) -> str:
    """``filepath`` as a string, refusing names that promise another file format."""
    path = os.fspath(filepath)
    ending = os.path.splitext(path)[1].lower()
    if ending in _FOREIGN_FORMATS or path.lower().endswith(".weights.h5"):
        stem = path[:-len(".weights.h5")] if path.lower().endswith(".weights.h5") else os.path.splitext(path)[0]
        raise ValueError(f"{what}: {path!r} asks for the {_FOREIGN_FORMATS.get(ending, 'HDF5')} format, which "
                         f"deepkern does not write; it saves .npz archives: use {what}({stem + '.npz'!r}) "
                         f"(read back with deepkern.keras.models.load_model), or model.export('model.onnx') "
                         f"to run the model in another framework")
    return path


# While a file is loaded: how many weights its architecture may still allocate (what the file holds)
_BUDGET: "contextvars.ContextVar[Optional[List[int]]]" = contextvars.ContextVar("deepkern_keras_budget",
                                                                               default=None)


_BUDGET_SLACK = 1 << 20  # weights (4 MiB) beyond the file's that a load may allocate


@contextlib.contextmanager
def _weight_budget(limit: int) -> Iterator[None]:
    token = _BUDGET.set([int(limit)])
    try:
        yield
    finally:
        _BUDGET.reset(token)


def _weights_needed(layer: _layers.Layer, shape: Tuple[int, ...]) -> int:
    """Weights a layer whose size grows with its arguments will allocate for inputs of ``shape``."""
    if layer.built:
        return 0
    if isinstance(layer, _layers.Dense) and shape:
        return int(shape[-1]) * layer.units + (layer.units if layer.use_bias else 0)
    if isinstance(layer, _layers.Conv2D) and len(shape) == 3:
        kh, kw = layer.kernel_size
        return kh * kw * int(shape[-1]) * layer.filters + (layer.filters if layer.use_bias else 0)
    return 0


def _build_layer(layer: _layers.Layer, shape: Tuple[int, ...]) -> Tuple[int, ...]:
    """``layer.build(shape)``; while a file is loaded, a layer needing more weights than the file
    holds is refused before it allocates them (a crafted ``Dense(10**12)`` costs nothing)."""
    budget = _BUDGET.get()
    if budget is None:
        return layer.build(shape)
    need = _weights_needed(layer, tuple(shape))
    if need > budget[0]:
        raise ValueError(f"layer {layer.name!r} needs {need:,} weights for inputs {tuple(shape)}, "
                         f"more than the file holds ({budget[0]:,} left)")
    out = layer.build(shape)
    budget[0] -= layer.count_params()
    if budget[0] < 0:
        raise ValueError(f"layer {layer.name!r} needs more weights than the file holds")
    return out


class Sequential(nn.Module):
    """A linear stack of :mod:`deepkern.keras.layers`, with Keras's compile/fit/evaluate/predict.

    The first layer (or an ``InputLayer``) should give ``input_shape``; otherwise the model
    is built from the first data it sees.
    """

    _json_class = "Sequential"

    def __init__(self, layers: Optional[Sequence[_layers.Layer]] = None, name: Optional[str] = None) -> None:
        super().__init__()
        self.name = name or "sequential"
        self._stack: List[_layers.Layer] = []
        self._kind_counts: Dict[str, int] = {}
        self.built = False
        self.input_shape: Optional[Tuple[int, ...]] = None
        self.output_shape: Optional[Tuple[int, ...]] = None
        self.optimizer: Any = None
        self.loss: Optional[_losses.Loss] = None
        self.metrics_names: List[str] = ["loss"]
        self.compiled = False
        self.stop_training = False
        self.history: Optional[train.History] = None
        self._dk_optimizer: Optional[optim.Optimizer] = None
        self._fused = False
        self._metric_specs: List[Any] = []
        for layer in layers or []:
            self.add(layer)

    # ------------------------------------------------------------------------ structure
    @property
    def layers(self) -> List[_layers.Layer]:
        """The layers, without an ``InputLayer`` (as Keras lists them)."""
        return [layer for layer in self._stack if not isinstance(layer, _layers.InputLayer)]

    def add(self, layer: _layers.Layer) -> None:
        """Append a layer (built at once when the model already is); ``keras.Input(shape)``
        may start the model."""
        if isinstance(layer, _layers.KerasTensor):
            if layer.parent is not None:
                raise ValueError("a Sequential takes layers; only a keras.Input tensor may start it")
            layer = layer.layer
        if not isinstance(layer, _layers.Layer):
            raise TypeError(f"layer: expected a deepkern.keras.layers.Layer, got {type(layer).__name__}")
        if any(layer is other for other in self._stack):
            raise ValueError(f"layer {layer.name!r} is already in this model")
        if isinstance(layer, _layers.InputLayer) and self._stack:
            raise ValueError("an InputLayer can only be the first layer")
        if layer.name is None:
            count = self._kind_counts.get(layer._kind, 0)
            layer.name = layer._kind if count == 0 else f"{layer._kind}_{count}"
            self._kind_counts[layer._kind] = count + 1
        if any(layer.name == other.name for other in self._stack):
            raise ValueError(f"a layer named {layer.name!r} is already in this model")
        if hasattr(self, layer.name):
            raise ValueError(f"layer name {layer.name!r} clashes with an attribute of Sequential")
        if self.built:
            _build_layer(layer, self.output_shape)
            self.output_shape = layer.output_shape
        elif layer.declared_input_shape is not None and self._stack:
            raise ValueError(f"{layer.name}: only the first layer takes input_shape")
        self._stack.append(layer)
        self.add_module(layer.name, layer)
        if not self.built and self._stack[0].declared_input_shape is not None:
            self.build()
        self._invalidate_training_state()

    def pop(self) -> _layers.Layer:
        """Remove and return the last layer."""
        if not self._stack:
            raise IndexError("pop from an empty model")
        layer = self._stack.pop()
        delattr(self, layer.name)
        self.output_shape = self._stack[-1].output_shape if self._stack and self.built else None
        self._invalidate_training_state()
        return layer

    def _invalidate_training_state(self) -> None:
        # the parameter list changed: the optimizer must be rebuilt over the new one
        self._dk_optimizer = None
        if self.compiled and self.built:
            self._configure_loss()

    def build(self, input_shape: Optional[Sequence[int]] = None) -> None:
        """Create every layer's weights for inputs of ``input_shape`` (Keras shape, no batch axis)."""
        if not self._stack:
            raise ValueError("cannot build an empty model; add layers first")
        if input_shape is None:
            input_shape = self._stack[0].declared_input_shape
            if input_shape is None:
                raise ValueError("the model has no input shape: give input_shape to its first layer, "
                                 "or call build(input_shape), or fit/predict on data")
        shape = tuple(int(v) for v in input_shape)
        if len(shape) and shape[0] is None:
            shape = shape[1:]
        self.input_shape = shape
        for layer in self._stack:
            shape = _build_layer(layer, shape)
        self.output_shape = shape
        self.built = True
        if self.compiled:
            self._configure_loss()

    def _build_from(self, x: Any) -> None:
        if not self.built:
            self.build(np.shape(x)[1:])

    def count_params(self) -> int:
        """Number of scalar weights (non-trainable ones included, as in Keras)."""
        self._require_built("count_params")
        return sum(layer.count_params() for layer in self.layers)

    def _require_built(self, what: str) -> None:
        if not self.built:
            raise ValueError(f"{what}: the model is not built yet; give the first layer input_shape "
                             f"or call build(input_shape)")

    # ------------------------------------------------------------------------ forward
    def forward(self, x: Any) -> Tensor:
        """Training-time output for a channels-last batch: logits when the output activation is
        fused into the loss (after ``compile``), else the model's outputs. ``dk.train`` calls
        this; use :meth:`predict` for probabilities."""
        x = x if isinstance(x, Tensor) else Tensor(x)
        if not self.built:
            self._build_from(x.data)
        expected = self.input_shape
        if tuple(x.shape[1:]) != expected:
            raise ValueError(f"input: expected samples of shape {expected}, got {tuple(x.shape[1:])}"
                             + (" (images are channels-last: (rows, cols, channels))" if len(expected) == 3 else ""))
        if len(expected) == 3:
            x = x.transpose(0, 3, 1, 2)  # NHWC -> NCHW
        last = len(self._stack) - 1
        i = 0
        while i <= last:
            layer = self._stack[i]
            if i < last and _layers.pools_into(layer, self._stack[i + 1]):  # (a pool has no activation to fuse)
                x = layer(x, pool=True)  # Conv2D(relu) + MaxPooling2D(2) as one kernel
                i += 2
                continue
            x = layer(x, activation=not (self._fused and i == last))
            i += 1
        if len(self.output_shape) == 3:
            x = x.transpose(0, 2, 3, 1)  # NCHW -> NHWC
        return x

    # ------------------------------------------------------------------------ compile
    def compile(self, optimizer: Any = "rmsprop", loss: Any = None, metrics: Optional[Sequence[Any]] = None) -> None:
        """Choose the optimizer, loss and metrics (Keras's names).

        Args:
            optimizer: ``"adam"``, ``"sgd"``, ``"rmsprop"`` (Keras's default settings), a
                ``deepkern.keras.optimizers`` instance, or a ``dk.optim`` optimizer already
                made over this model's parameters.
            loss: ``"sparse_categorical_crossentropy"``, ``"categorical_crossentropy"``,
                ``"binary_crossentropy"``, ``"mse"`` or a ``deepkern.keras.losses`` instance.
            metrics: names (``"accuracy"``/``"acc"``, ``"sparse_categorical_accuracy"``,
                ``"top_k_categorical_accuracy"``, ``"precision"``, ...) or
                ``deepkern.keras.metrics`` instances; see that module.
        """
        if loss is None:
            raise ValueError("compile: loss is required")
        self.loss = _losses.get(loss)
        if isinstance(optimizer, optim.Optimizer):
            self.optimizer = optimizer
        else:
            self.optimizer = _optimizers.get(optimizer)
        if isinstance(metrics, (str, _metrics.Metric)):
            metrics = [metrics]
        specs: List[Any] = []
        names = ["loss"]
        for metric in metrics or []:
            name = _metrics.name_of(metric)
            if name not in names:  # Keras logs a metric once however often it is listed
                names.append(name)
                specs.append(metric)
        self.metrics_names = names
        self._metric_specs = specs
        self._dk_optimizer = optimizer if isinstance(optimizer, optim.Optimizer) else None
        self.compiled = True
        if self.built:
            self._configure_loss()

    def _configure_loss(self) -> None:
        last_activation = self._stack[-1].activation if self._stack else None
        self._fused = _losses.fuses_head(self.loss, last_activation)
        metric_objects = _metrics.resolve(self._metric_specs, self.loss.name, self._units)
        # kept out of the module tree (it holds no weights and must not show up as a layer)
        object.__setattr__(self, "_objective",
                           _training.Objective(self, self.loss, self._fused, self._penalty, metric_objects))

    @property
    def _units(self) -> int:
        return int(self.output_shape[-1]) if self.output_shape else 0

    def _penalty(self) -> Optional[Tensor]:
        total = None
        for layer in self._stack:
            for param, regularizer in layer.regularization_terms():
                term = regularizer(param)
                total = term if total is None else total + term
        return total

    def _require_compiled(self, what: str) -> None:
        if not self.compiled:
            raise RuntimeError(f"{what}: you must compile the model before training or evaluating it")

    def _optimizer(self) -> optim.Optimizer:
        if self._dk_optimizer is None:
            self._dk_optimizer = self.optimizer.build(self.parameters())
        return self._dk_optimizer

    def _packed(self, y: Any, name: str, sample_weight: Any = None, class_weight: Any = None) -> np.ndarray:
        """Targets checked against the loss and packed with their per-sample weights."""
        targets = _training.prepare_targets(y, self.loss, self._units, name)
        weight_name = "sample_weight" if name == "y" else f"{name} sample_weight"
        weights = _training.sample_weights(targets, sample_weight, class_weight, weight_name)
        return _training.pack(targets, weights)

    # ------------------------------------------------------------------------ fit
    def fit(self, x: Any = None, y: Any = None, batch_size: Optional[int] = None, epochs: int = 1,
            verbose: Union[int, str] = "auto", callbacks: Optional[Sequence[train.Callback]] = None,
            validation_split: float = 0.0, validation_data: Optional[Tuple[Any, ...]] = None,
            shuffle: bool = True, class_weight: Optional[Dict[int, float]] = None, sample_weight: Any = None,
            steps_per_epoch: Optional[int] = None, seed: Optional[int] = None,
            distributed: Optional[bool] = None) -> train.History:
        """Train for ``epochs`` passes; returns a History whose ``.history`` has Keras's keys
        (``loss``, each compiled metric, ``val_loss``, ``val_<metric>``).

        ``x`` is an array (with targets ``y``) or a batch source yielding ``(x, y)`` or
        ``(x, y, sample_weight)``, such as ``ImageDataGenerator.flow(...)`` (``len()`` batches
        per epoch, or ``steps_per_epoch``). ``sample_weight`` (N,) and ``class_weight``
        ``{class: weight}`` scale each sample's loss (their product when both are given);
        ``validation_data`` may be ``(x, y)`` or ``(x, y, sample_weight)``.
        ``verbose``: 0 silent; 1 (``"auto"``) a progress bar on a terminal or in Jupyter and
        one line per epoch otherwise (logs, pipes); 2 one line per epoch. ``seed`` fixes the
        shuffling; by default it is drawn from deepkern's global generator, so
        ``dk.manual_seed(n)`` makes a whole script reproducible. ``distributed``: data-parallel
        over MPI ranks, as in ``dk.train.fit`` (by default when launched by ``mpiexec`` with
        several ranks; ``batch_size`` is then per rank and rank 0 alone prints and checkpoints).
        """
        self._require_compiled("fit")
        if epochs is None or isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
        batch_size = _training.check_batch_size(batch_size)
        if steps_per_epoch is not None and (isinstance(steps_per_epoch, bool) or
                                            not isinstance(steps_per_epoch, (int, np.integer)) or steps_per_epoch < 1):
            raise ValueError(f"steps_per_epoch: expected None or an int >= 1, got {steps_per_epoch!r}")
        level = _training.verbosity(verbose)
        if x is None:
            raise ValueError("fit: x is required")
        if train.is_batch_source(x):
            if y is not None:
                raise ValueError("y must not be given when x yields (x, y) batches")
            if sample_weight is not None:
                raise ValueError("sample_weight applies to array inputs; a batch source yields "
                                 "(x, y, sample_weight) instead")
            if not hasattr(x, "__len__") and steps_per_epoch is None:
                raise ValueError("x is a generator without len(); give steps_per_epoch")
            if not self.built:
                if not hasattr(x, "x"):
                    raise ValueError("the model is not built; give its first layer input_shape")
                self._build_from(x.x)

            def convert(batch_y: Any, name: str, weights: Any) -> np.ndarray:
                return self._packed(batch_y, name, weights, class_weight)
            inputs, targets = _training.Batches(x, convert, steps_per_epoch), None
            steps = len(inputs) if steps_per_epoch is not None or hasattr(x, "__len__") else None
        else:
            if y is None:
                raise ValueError("fit: y is required with array inputs")
            if steps_per_epoch is not None:
                raise ValueError("steps_per_epoch applies to generator inputs, not arrays")
            self._build_from(x)
            inputs, targets = x, self._packed(y, "y", sample_weight, class_weight)
            n_train = len(targets) if validation_data is not None else int(len(targets) * (1.0 - validation_split))
            steps = -(-n_train // batch_size)
        if validation_data is not None:
            if not isinstance(validation_data, (tuple, list)) or len(validation_data) not in (2, 3):
                raise ValueError("validation_data must be (x_val, y_val) or (x_val, y_val, sample_weight)")
            weights = validation_data[2] if len(validation_data) == 3 else None
            validation_data = (validation_data[0], self._packed(validation_data[1], "validation_data[1]", weights))

        prints, user_callbacks = _distributed.rank_view(distributed, list(callbacks or []))
        if targets is not None:  # arrays: the steps of this rank's share (all of them on one process)
            steps = -(-(n_train // _distributed.world_size()) // batch_size)
        run = _training.KerasRun(self, self._objective, user_callbacks, level if prints else 0, int(epochs), steps)
        if seed is None:
            seed = int(get_generator().integers(2 ** 31))
        self.stop_training = False
        history = train.fit(self, inputs, targets, epochs=int(epochs), batch_size=batch_size,
                            optimizer=self._optimizer(), loss=self._objective,
                            validation_split=validation_split, validation_data=validation_data,
                            shuffle=bool(shuffle), callbacks=[run], seed=seed, progress=False,
                            distributed=distributed)
        history.history = run.history
        history.model = self
        self.history = history
        return history

    # ------------------------------------------------------------------------ evaluate / predict
    def evaluate(self, x: Any, y: Any, batch_size: Optional[int] = None, verbose: Union[int, str] = "auto",
                 sample_weight: Any = None, return_dict: bool = False) -> Union[float, List[float], Dict[str, float]]:
        """Loss (with the layers' penalties, as Keras reports it; weighted by ``sample_weight``)
        and the compiled metrics on ``(x, y)``: ``[loss, metric, ...]``, or the loss alone
        without metrics; ``return_dict=True`` gives ``{name: value}``."""
        self._require_compiled("evaluate")
        batch_size = _training.check_batch_size(batch_size)
        level = _training.verbosity(verbose)
        self._build_from(x)
        packed = self._packed(y, "y", sample_weight)
        self._objective.reset("eval")
        loss, _ = train.evaluate(self, x, packed, batch_size=batch_size, loss=self._objective)
        values = OrderedDict([("loss", float(loss))])
        values.update(self._objective.results("eval"))
        if level:
            print(" - ".join(f"{k}: {v:.4f}" for k, v in values.items()))
        if return_dict:
            return dict(values)
        return list(values.values()) if len(values) > 1 else values["loss"]

    def predict(self, x: Any, batch_size: Optional[int] = None, verbose: Union[int, str] = 0) -> np.ndarray:
        """Outputs for ``x`` as float32: probabilities after a softmax/sigmoid output layer."""
        batch_size = _training.check_batch_size(batch_size)
        _training.verbosity(verbose)
        self._build_from(x)
        out = train.predict(self, x, batch_size=batch_size)
        if self._fused:
            out = self._objective.predictions(out)
        return out

    # ------------------------------------------------------------------------ summary
    def summary(self, line_length: int = 65, print_fn: Any = None) -> None:
        """Print the layers, their output shapes and parameter counts, like Keras."""
        self._require_built("summary")
        emit = print_fn or print
        stops = (int(line_length * 0.45), int(line_length * 0.85))  # where columns 2 and 3 start
        rows = [("Layer (type)", "Output Shape", "Param #")]
        for layer in self.layers:
            shape = "(None, " + ", ".join(str(d) for d in layer.output_shape) + ")"
            rows.append((f"{layer.name} ({type(layer).__name__})", shape, f"{layer.count_params():,}"))

        def line(cells: Tuple[str, str, str]) -> str:
            text = cells[0]
            for cell, stop in zip(cells[1:], stops):
                text = (text.ljust(stop) if len(text) < stop else text + " ") + cell
            return text

        total = self.count_params()
        emit(f'Model: "{self.name}"')
        emit("_" * line_length)
        emit(line(rows[0]))
        emit("=" * line_length)
        for i, row in enumerate(rows[1:]):
            emit(line(row))
            emit("_" * line_length if i < len(rows) - 2 else "=" * line_length)
        if len(rows) == 1:
            emit("=" * line_length)
        emit(f"Total params: {total:,}")
        trainable = sum(p.size for p in self.parameters())
        emit(f"Trainable params: {trainable:,}")
        emit(f"Non-trainable params: {total - trainable:,}")
        emit("_" * line_length)

    # ------------------------------------------------------------------------ weights
    def get_weights(self) -> List[np.ndarray]:
        """Every layer's weights, in order, in Keras's layouts."""
        self._require_built("get_weights")
        return [w for layer in self.layers for w in layer.get_weights()]

    def set_weights(self, weights: Sequence[Any]) -> None:
        """Set all weights from a list like :meth:`get_weights` returns."""
        self._require_built("set_weights")
        weights = list(weights)
        expected = sum(len(layer._keras_weights()) for layer in self.layers)
        if len(weights) != expected:
            shapes = [tuple(w.shape) for w in self.get_weights()]
            raise ValueError(f"set_weights: expected {expected} arrays (shapes {shapes}, as get_weights() "
                             f"returns them), got {len(weights)}")
        start = 0
        for layer in self.layers:
            count = len(layer._keras_weights())
            layer.set_weights(weights[start:start + count])
            start += count

    def save_weights(self, filepath: PathLike) -> str:
        """Write the weights to an ``.npz`` (``dk.train.save``'s checkpoint format); an ``.h5``
        name is refused rather than written in another format."""
        self._require_built("save_weights")
        return train.save(self, _npz_path(filepath, "save_weights"))

    def load_weights(self, filepath: PathLike) -> None:
        """Read weights written by :meth:`save_weights` (checked against this architecture)."""
        self._require_built("load_weights")
        train.load(self, filepath)

    # ------------------------------------------------------------------------ serialisation
    def get_config(self) -> Dict[str, Any]:
        """The architecture as JSON-ready data."""
        return {"name": self.name,
                "build_input_shape": None if self.input_shape is None else list(self.input_shape),
                "layers": [{"class_name": type(layer).__name__, "config": layer.get_config()}
                           for layer in self._stack]}

    def to_json(self) -> str:
        """The architecture as JSON text (rebuild with :func:`model_from_json`)."""
        return json.dumps({"class_name": self._json_class, "config": self.get_config()})

    @classmethod
    def _empty(cls, name: Optional[str]) -> "Sequential":
        return cls(name=name)

    @classmethod
    def from_config(cls, config: Dict[str, Any]) -> "Sequential":
        model = cls._empty(config.get("name"))
        for entry in config["layers"]:
            model.add(_layers.get(entry["class_name"]).from_config(dict(entry["config"])))
        if not model.built and config.get("build_input_shape") is not None:
            model.build(config["build_input_shape"])
        return model

    def save(self, filepath: PathLike) -> str:
        """Write architecture (JSON text), weights, compile settings and optimizer state to one
        ``.npz`` (plain arrays only: it loads with ``allow_pickle=False``). Returns the path.

        deepkern writes no HDF5 or ``.keras`` files: names ending ``.h5``, ``.hdf5`` or
        ``.keras`` raise ValueError naming the ``.npz`` to use instead (never a file in a
        format other than its name says). ``export`` writes ONNX for other frameworks.
        """
        path = _npz_path(filepath, "save")
        self._require_built("save")
        arrays: Dict[str, np.ndarray] = {
            "__format__": np.array(SAVE_FORMAT),
            "__version__": np.array(SAVE_VERSION, dtype=np.int64),
            "architecture": np.array(self.to_json()),
        }
        for name, value in self.state_dict().items():
            arrays["weights/" + name] = value
        if self.compiled:
            settings: Dict[str, Any] = {"loss": _losses.serialize(self.loss),
                                        "metrics": [_metrics.serialize(m) for m in self._metric_specs]}
            if isinstance(self.optimizer, _optimizers.Optimizer):
                settings["optimizer"] = {"class_name": type(self.optimizer).__name__,
                                         "config": self.optimizer.get_config()}
                if self._dk_optimizer is not None:
                    for key, value in self._dk_optimizer.state_dict().items():
                        arrays["optimizer/" + key] = np.asarray(value)
            arrays["compile"] = np.array(json.dumps(settings))
        return save_npz(path, arrays)

    def export(self, filepath: PathLike, sample_input: Any = None) -> str:
        """Write the model as an ONNX file (``deepkern.onnx.export``; needs ``deepkern[onnx]``).

        The graph takes channels-last inputs like ``predict`` and returns what ``predict``
        returns. ``sample_input`` (a batch) is needed only when the model is not built yet.
        """
        from .. import onnx as _onnx

        if sample_input is None:
            self._require_built("export")
            sample_input = np.zeros((1,) + tuple(self.input_shape), np.float32)
        return _onnx.export(self, filepath, sample_input)

    def extra_repr(self) -> str:
        return f"name={self.name!r}"


def _single(value: Any, what: str) -> _layers.KerasTensor:
    if isinstance(value, (list, tuple)):
        if len(value) != 1:
            raise ValueError(f"Model: deepkern.keras models have one {what}, got {len(value)}")
        value = value[0]
    if not isinstance(value, _layers.KerasTensor):
        raise TypeError(f"Model: {what} must be a KerasTensor (from keras.Input or a layer call), "
                        f"got {type(value).__name__}")
    return value


class Model(Sequential):
    """A functional-API model: ``Model(inputs=keras.Input(...), outputs=...)``.

    It follows the outputs back to the input and is a ``Sequential`` of those layers (compile,
    fit, evaluate, predict, save, export). Graphs are single chains -- one input, one output,
    each layer fed by the one before -- as deepkern.keras has no merge layers (Add,
    Concatenate) yet; anything else is a ValueError.
    """

    _json_class = "Functional"

    def __init__(self, inputs: Any = None, outputs: Any = None, name: Optional[str] = None) -> None:
        if inputs is None or outputs is None:
            raise TypeError("Model: give inputs and outputs (Model(inputs=keras.Input(...), outputs=...)); "
                            "subclassing keras.Model with call() is not supported, write a dk.nn.Module")
        source, result = _single(inputs, "input"), _single(outputs, "output")
        chain = result.chain()
        if chain[0] is not source.layer:
            raise ValueError("Model: outputs do not come from inputs (each layer must be called on the "
                             "value of the one before, starting at keras.Input)")
        super().__init__(chain, name=name or "model")
        self.inputs, self.outputs = [source], [result]

    @classmethod
    def _empty(cls, name: Optional[str]) -> "Model":
        model = cls.__new__(cls)
        Sequential.__init__(model, name=name or "model")
        model.inputs, model.outputs = [], []
        return model


def model_from_json(text: str) -> Sequential:
    """Rebuild an (untrained) model from :meth:`Sequential.to_json` text."""
    try:
        spec = json.loads(text)
    except json.JSONDecodeError as exc:
        raise ValueError(f"model_from_json: not JSON: {exc}") from exc
    classes = {cls._json_class: cls for cls in (Sequential, Model)}
    if not isinstance(spec, dict) or spec.get("class_name") not in classes:
        raise ValueError("model_from_json: expected the JSON of a Sequential or functional model")
    return classes[spec["class_name"]].from_config(spec["config"])


def load_model(filepath: PathLike, compile: bool = True) -> Sequential:  # noqa: A002 - Keras's name
    """Load a model written by :meth:`Sequential.save`: architecture, weights and (with
    ``compile=True``) the compile settings and optimizer state, so training can continue.

    Raises FileNotFoundError for a missing file and ValueError naming the file for a corrupt,
    foreign, crafted or newer-format file: an architecture needing more weights than the file
    holds is refused before any of them is allocated, and NaN, infinite or out-of-float32-range
    weights are refused.
    """
    path = os.fspath(filepath)
    entries = read_npz(path, "deepkern.keras model file")
    marker = entries.get("__format__")
    if marker is None or marker.dtype.kind != "U" or marker.ndim != 0 or str(marker) != SAVE_FORMAT:
        raise ValueError(f"{path}: not a deepkern.keras model file (no {SAVE_FORMAT!r} marker)")
    version = entries.get("__version__")
    if version is None or version.dtype.kind not in "iu" or version.ndim != 0 or int(version) > SAVE_VERSION:
        shown = None if version is None else version.tolist()
        raise ValueError(f"{path}: unsupported model file version {shown} (this deepkern reads up to {SAVE_VERSION})")
    weights = {k[len("weights/"):]: v for k, v in entries.items() if k.startswith("weights/")}
    check_float32_values(path, ((k, v) for k, v in entries.items() if k.startswith(("weights/", "optimizer/"))))
    model = _rebuild(path, entries.get("architecture"), sum(int(v.size) for v in weights.values()))
    try:
        model.load_state_dict(weights)
    except ValueError as exc:
        raise ValueError(f"{path}: {exc}") from exc
    if compile and "compile" in entries:
        _compile_from(path, model, entries)
    return model


def _rebuild(path: str, architecture: Optional[np.ndarray], stored: int) -> Sequential:
    """The model of the stored architecture, built within the ``stored`` weights the file holds."""
    if architecture is None or architecture.dtype.kind != "U" or architecture.ndim != 0:
        raise ValueError(f"{path}: the stored architecture is missing or not text")
    # slack: a small mismatch is reported by name by load_state_dict, after building
    with _weight_budget(stored + _BUDGET_SLACK):
        try:
            return model_from_json(str(architecture))
        except (KeyError, ValueError, TypeError, AttributeError, IndexError) as exc:
            raise ValueError(f"{path}: the stored architecture cannot be rebuilt: {exc}") from exc


def _compile_from(path: str, model: Sequential, entries: Dict[str, np.ndarray]) -> None:
    """Apply the stored compile settings and optimizer state."""
    text = entries["compile"]
    try:
        if text.dtype.kind != "U" or text.ndim != 0:
            raise ValueError("not text")
        settings = json.loads(str(text))
        if not isinstance(settings, dict) or "loss" not in settings:
            raise ValueError("no 'loss' in the settings")
        model.compile(optimizer=settings.get("optimizer", "rmsprop"), loss=settings["loss"],
                      metrics=settings.get("metrics") or None)
    except (ValueError, TypeError, KeyError, AttributeError) as exc:  # JSONDecodeError is a ValueError
        raise ValueError(f"{path}: the stored compile settings are unusable: {exc}") from exc
    state = {k[len("optimizer/"):]: v for k, v in entries.items() if k.startswith("optimizer/")}
    if state:
        try:
            model._optimizer().load_state_dict(state)
        except (KeyError, ValueError, TypeError) as exc:
            raise ValueError(f"{path}: optimizer state does not fit: {exc}") from exc
