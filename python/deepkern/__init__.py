"""deepkern: compiled-kernel deep learning for Python.

    import deepkern as dk
    dk.info()                      # which backends are built and usable
    y = dk.ops.matmul(a, b, bias, activation="relu")
"""
from __future__ import annotations

from ._version import __version__

from . import ops
from .backends import get_backend, set_backend
from ._info import info
from .autograd import Tensor, from_dlpack, no_grad, enable_grad, is_grad_enabled
from .nn.init import manual_seed
from . import nn, optim, models
from . import data, train

__all__ = ["__version__", "ops", "info", "set_backend", "get_backend",
           "Tensor", "from_dlpack", "no_grad", "enable_grad", "is_grad_enabled", "manual_seed", "nn", "optim", "models",
           "data", "train"]


def __getattr__(name: str):
    # dk.keras and dk.sklearn load on first use: they pull in scikit-learn, which a plain
    # `import deepkern` should not pay for; dk.onnx is only needed to export
    if name in ("keras", "sklearn", "onnx"):
        import importlib
        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
