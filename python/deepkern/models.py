"""The seed tutorials' networks: Perceptron (OR gate), MLP and CNN (MNIST).

MLP and CNN return logits (train them with ``nn.CrossEntropyLoss``, which applies the softmax).
The Perceptron returns its sigmoid output in [0, 1]; ``predict`` thresholds it at 0.5 (the
step function) and ``fit`` is the seed's recipe: summed squared error and plain gradient descent.

    dk.manual_seed(0)
    p = dk.models.Perceptron(2)
    p.fit([[0, 0], [0, 1], [1, 0], [1, 1]], [0, 1, 1, 1])
    p.predict([[0, 0], [0, 1], [1, 0], [1, 1]])      # array([0, 1, 1, 1])
"""
from __future__ import annotations

from typing import Any, List, Optional, Sequence, Tuple, Union

import numpy as np

from . import nn
from .autograd import Tensor, no_grad
from .nn import functional as F
from .optim import SGD

__all__ = ["Perceptron", "MLP", "CNN"]


def _as_input(x: Any) -> Tensor:
    return x if isinstance(x, Tensor) else Tensor(x)


class Perceptron(nn.Module):
    """One neuron: ``sigmoid(x @ w.T + b)``, output shape (N, 1); ``predict`` applies the step
    function (output >= 0.5). The seed's TensorFlow version used ReLU, which can start dead
    (all outputs 0, no gradient); the sigmoid always learns a linearly separable gate."""

    def __init__(self, in_features: int = 2, rng: Optional[np.random.Generator] = None) -> None:
        super().__init__()
        self.linear = nn.Linear(in_features, 1, init="xavier", rng=rng)

    def forward(self, x: Any) -> Tensor:
        return F.sigmoid(self.linear(_as_input(x)))

    def predict(self, x: Any) -> np.ndarray:
        """0/1 per sample (the step function on the output at 0.5), shape (N,)."""
        with no_grad():
            out = self.forward(x).numpy()
        return (out[:, 0] >= 0.5).astype(np.int64)

    def fit(self, inputs: Any, targets: Any, epochs: int = 1000, lr: float = 0.5) -> List[float]:
        """Train with summed squared error and SGD on the whole set each epoch; returns the losses.

        The defaults learn the OR (and AND) gate exactly from any seed.
        """
        if isinstance(epochs, bool) or not isinstance(epochs, (int, np.integer)) or epochs < 1:
            raise ValueError(f"epochs: expected an int >= 1, got {epochs!r}")
        x = _as_input(inputs)
        y = np.asarray(targets.numpy() if isinstance(targets, Tensor) else targets, dtype=np.float32)
        y = y.reshape(-1, 1)
        if x.ndim != 2 or x.shape[0] != y.shape[0]:
            raise ValueError(f"inputs/targets: expected (N, {self.linear.in_features}) inputs and N targets, "
                             f"got {x.shape} and {y.shape[0]} targets")
        optimizer = SGD(self.parameters(), lr=lr)
        self.train()
        history = []
        for _ in range(int(epochs)):
            optimizer.zero_grad()
            loss = F.mse_loss(self.forward(x), y, reduction="sum")
            loss.backward()
            optimizer.step()
            history.append(loss.item())
        return history


class MLP(nn.Module):
    """Fully connected ReLU network: in_features -> hidden... -> num_classes logits.

    Accepts (N, in_features) or images (N, C, H, W) with C*H*W == in_features (flattened first).
    Each hidden Linear+ReLU runs as one fused kernel. ``dropout`` > 0 adds Dropout after each ReLU.
    """

    def __init__(self, in_features: int = 784, hidden: Sequence[int] = (256, 256), num_classes: int = 10,
                 dropout: float = 0.0) -> None:
        super().__init__()
        if isinstance(hidden, int):
            hidden = (hidden,)
        self.in_features = int(in_features)
        layers: List[nn.Module] = []
        width = in_features
        for h in hidden:
            layers.append(nn.Linear(width, h))
            layers.append(nn.ReLU())
            if dropout > 0:
                layers.append(nn.Dropout(dropout))
            width = h
        layers.append(nn.Linear(width, num_classes))
        self.layers = nn.Sequential(*layers)

    def forward(self, x: Any) -> Tensor:
        x = _as_input(x)
        if x.ndim != 2:
            x = x.flatten(1)
        if x.shape[1] != self.in_features:
            raise ValueError(f"x: expected {self.in_features} features per sample, got shape {x.shape}")
        return self.layers(x)


ImageSize = Union[int, Tuple[int, int]]


class CNN(nn.Module):
    """The seed CNN: Conv 32 3x3, ReLU, MaxPool 2, Conv 64 3x3, ReLU, MaxPool 2, Flatten,
    Dense 64, ReLU, Dense num_classes (121,930 parameters for 1x28x28 inputs, 10 classes).

    ``image_size`` (int or (H, W)) sets the flatten size; too small an image is a ValueError.
    """

    def __init__(self, in_channels: int = 1, num_classes: int = 10, image_size: ImageSize = 28) -> None:
        super().__init__()
        if isinstance(image_size, (tuple, list)):
            height, width = (int(v) for v in image_size)
        else:
            height = width = int(image_size)
        conv1 = nn.Conv2d(in_channels, 32, 3)
        pool1 = nn.MaxPool2d(2)
        conv2 = nn.Conv2d(32, 64, 3)
        pool2 = nn.MaxPool2d(2)
        h, w = height, width
        for layer in (conv1, pool1, conv2, pool2):
            h, w = layer.output_size(h, w)
            if h < 1 or w < 1:
                raise ValueError(f"image_size: {height}x{width} is too small for this CNN "
                                 f"(two 3x3 convolutions and two 2x2 poolings need at least 10x10)")
        self.in_channels = int(in_channels)
        self.image_size = (height, width)
        self.layers = nn.Sequential(
            conv1, nn.ReLU(), pool1,
            conv2, nn.ReLU(), pool2,
            nn.Flatten(),
            nn.Linear(64 * h * w, 64), nn.ReLU(),
            nn.Linear(64, num_classes),
        )

    def forward(self, x: Any) -> Tensor:
        x = _as_input(x)
        expected = (self.in_channels,) + self.image_size
        if x.ndim == 3 and self.in_channels == 1:
            x = x.reshape(x.shape[0], 1, *x.shape[1:])  # (N, H, W) grayscale
        elif x.ndim == 2 and x.shape[1] == int(np.prod(expected)):
            x = x.reshape((x.shape[0],) + expected)      # flattened images
        if x.ndim != 4 or x.shape[1:] != expected:
            raise ValueError(f"x: expected images of shape (N, {', '.join(map(str, expected))}), got {x.shape}")
        return self.layers(x)
