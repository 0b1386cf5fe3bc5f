"""Neural-network building blocks: Module, Parameter, layers, losses, ``functional`` and ``init``."""
from __future__ import annotations

from . import functional, init
from .layers import (AvgPool2d, BatchNorm1d, BatchNorm2d, Conv2d, Dropout, Flatten, Linear, LogSoftmax,
                     MaxPool2d, ReLU, Sequential, Sigmoid, Softmax, Tanh)
from .losses import BCEWithLogitsLoss, CrossEntropyLoss, MSELoss
from .module import Module, Parameter, eval_mode

__all__ = ["functional", "init", "Module", "Parameter", "eval_mode", "Sequential", "Linear", "Conv2d", "MaxPool2d",
           "AvgPool2d", "ReLU", "Sigmoid", "Tanh", "Softmax", "LogSoftmax", "Flatten", "Dropout",
           "BatchNorm1d", "BatchNorm2d", "CrossEntropyLoss", "MSELoss", "BCEWithLogitsLoss"]
