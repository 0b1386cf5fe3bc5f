"""Names shared by the training modules: path and loss types, the model check."""
from __future__ import annotations

import os
from typing import Any, Callable, Union

from ..autograd import Tensor

PathLike = Union[str, "os.PathLike[str]"]
LossFn = Callable[[Tensor, Any], Tensor]


def check_model(model: Any) -> None:
    if not callable(model) or not hasattr(model, "parameters"):
        raise TypeError(f"model must be a deepkern Module (callable, with parameters()), "
                        f"got {type(model).__name__}")

