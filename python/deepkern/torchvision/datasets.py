"""``deepkern.torchvision.datasets``: ``MNIST`` and ``FashionMNIST`` as in torchvision, never downloading.

``MNIST(root, train=True, download=True, transform=None, target_transform=None)`` reads
``root/MNIST/raw`` (torchvision's layout) or any copy ``dk.data.load_mnist_arrays`` finds; without
one it uses the embedded 5,000-digit sample (4,000 train / 1,000 test) and says so. ``download`` is
accepted and ignored: nothing is fetched.
"""
from __future__ import annotations

from typing import Any, Callable, Optional, Tuple

import numpy as np

from .. import data as _data
from ..torch._tensor import Tensor
from ..torch.utils.data import Dataset

__all__ = ["MNIST", "FashionMNIST"]


class MNIST(Dataset):
    """Handwritten digits: ``(image, label)`` pairs; ``image`` is uint8 ``(28, 28)`` before ``transform``."""

    kind = "mnist"
    classes = ["0 - zero", "1 - one", "2 - two", "3 - three", "4 - four", "5 - five", "6 - six",
               "7 - seven", "8 - eight", "9 - nine"]

    def __init__(self, root: Any = "data", train: bool = True, download: bool = False,
                 transform: Optional[Callable[[Any], Any]] = None,
                 target_transform: Optional[Callable[[Any], Any]] = None) -> None:
        (x_train, y_train), (x_test, y_test) = _data.load_mnist_arrays(self.kind, search=[root])
        self.root = root
        self.train = bool(train)
        self.transform = transform
        self.target_transform = target_transform
        images, labels = (x_train, y_train) if self.train else (x_test, y_test)
        self.data = Tensor._wrap(np.ascontiguousarray(images))                # uint8 (N, 28, 28)
        self.targets = Tensor._wrap(labels.astype(np.int64))                 # int64 (N,)

    def __len__(self) -> int:
        return len(self.targets)

    def __getitem__(self, index: int) -> Tuple[Any, Any]:
        image = self.data.data.view(np.ndarray)[index]
        target = int(self.targets.data[index])
        if self.transform is not None:
            image = self.transform(image)
        if self.target_transform is not None:
            target = self.target_transform(target)
        return image, target

    def _batch(self, indices: np.ndarray) -> Tuple[Any, Any]:
        """A whole mini-batch at once when the transforms allow it (same values as item by item)."""
        images = self.data.data.view(np.ndarray)[indices]
        can_batch = self.transform is None or hasattr(self.transform, "batch")
        if not can_batch or self.target_transform is not None or \
                (hasattr(self.transform, "batchable") and not self.transform.batchable):
            from ..torch.utils.data import default_collate
            return default_collate([self[int(i)] for i in indices])
        batch = Tensor._wrap(images) if self.transform is None else self.transform.batch(images)
        return batch, Tensor._wrap(self.targets.data.view(np.ndarray)[indices])

    def __repr__(self) -> str:
        split = "Train" if self.train else "Test"
        return f"Dataset {type(self).__name__}\n    Number of datapoints: {len(self)}\n    Split: {split}"


class FashionMNIST(MNIST):
    """Zalando's Fashion-MNIST (same layout as MNIST); there is no embedded sample of it."""

    kind = "fashion"
    classes = ["T-shirt/top", "Trouser", "Pullover", "Dress", "Coat", "Sandal", "Shirt", "Sneaker", "Bag",
               "Ankle boot"]
