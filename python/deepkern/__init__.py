"""deepkern: compiled-kernel deep learning for Python.

    import deepkern as dk
    dk.info()                      # which backends are built and usable
    dk.set_num_threads(1)          # threads of the CPU kernels (also DEEPKERN_NUM_THREADS)
    y = dk.ops.matmul(a, b, bias, activation="relu")
"""
from __future__ import annotations

from ._version import __version__

from . import ops
from .backends import get_backend, set_backend
from ._info import info
from ._threads import get_num_threads, set_num_threads
from .autograd import Tensor, from_dlpack, no_grad, enable_grad, is_grad_enabled
from .nn.init import manual_seed
from . import nn, optim, models
from . import data, train
from ._precision import get_precision, precision, set_precision

__all__ = ["__version__", "ops", "info", "set_backend", "get_backend", "get_num_threads", "set_num_threads",
           "Tensor", "from_dlpack", "no_grad", "enable_grad", "is_grad_enabled", "manual_seed", "nn", "optim",
           "models", "data", "train", "set_precision", "get_precision", "precision"]


def __getattr__(name: str):
    # dk.keras and dk.sklearn load on first use: they pull in scikit-learn, which a plain
    # `import deepkern` should not pay for; dk.onnx is only needed to export
    if name in ("keras", "sklearn", "onnx"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
