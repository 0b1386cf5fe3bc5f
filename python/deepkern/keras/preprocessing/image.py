"""``ImageDataGenerator`` with Keras's channels-last default.

It is ``dk.data.ImageDataGenerator`` (random rotation, shifts, shear, zoom and flips composed
into one affine matrix per image and applied with ``scipy.ndimage``) with
``data_format="channels_last"``, so it takes Keras-layout batches ``(N, rows, cols, channels)``
(or ``(N, rows, cols)``). ``flow(x, y, batch_size, shuffle, seed)`` feeds ``model.fit``::

    datagen = ImageDataGenerator(rotation_range=10, width_shift_range=0.1, zoom_range=0.1)
    model.fit(datagen.flow(x_train, y_train, batch_size=32, seed=0), epochs=5)
"""
from __future__ import annotations

from typing import Optional, Tuple, Union

from ... import data

__all__ = ["ImageDataGenerator", "NumpyArrayIterator"]

#: What ``ImageDataGenerator.flow`` returns (Keras's name for it).
NumpyArrayIterator = data.ImageFlow


class ImageDataGenerator(data.ImageDataGenerator):
    """Keras's augmentation options on deepkern's generator; see ``dk.data.ImageDataGenerator``."""

    def __init__(self, rotation_range: float = 0.0, width_shift_range: float = 0.0,
                 height_shift_range: float = 0.0, shear_range: float = 0.0,
                 zoom_range: Union[float, Tuple[float, float]] = 0.0, fill_mode: str = "nearest",
                 cval: float = 0.0, horizontal_flip: bool = False, vertical_flip: bool = False,
                 rescale: Optional[float] = None, data_format: str = "channels_last",
                 interpolation_order: int = 1) -> None:
        super().__init__(rotation_range=rotation_range, width_shift_range=width_shift_range,
                         height_shift_range=height_shift_range, shear_range=shear_range,
                         zoom_range=zoom_range, fill_mode=fill_mode, cval=cval,
                         horizontal_flip=horizontal_flip, vertical_flip=vertical_flip,
                         rescale=rescale, data_format=data_format,
                         interpolation_order=interpolation_order)
