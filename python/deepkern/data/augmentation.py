"""Image augmentation: ``ImageDataGenerator`` and the batch source its ``flow`` returns."""
from __future__ import annotations

from typing import Any, Dict, List, Optional, Tuple, Union

import numpy as np

from ._common import check_seed as _check_seed
from .batching import BatchIterator

__all__ = ["ImageDataGenerator", "ImageFlow"]

# ---------------------------------------------------------------------------
# Image augmentation (the options of Keras's ImageDataGenerator used by the seeds)
# ---------------------------------------------------------------------------

#: fill_mode names (Keras's) -> scipy.ndimage boundary modes. Keras's "wrap" tiles the
#: image (abcd|abcd), which is scipy's "grid-wrap"; scipy's own "wrap" is a different rule.
_FILL_MODES = {"constant": "constant", "nearest": "nearest", "reflect": "reflect", "wrap": "grid-wrap"}
_DATA_FORMATS = ("channels_first", "channels_last")


def _non_negative(value: float, name: str) -> float:
    if isinstance(value, bool) or not isinstance(value, (int, float, np.integer, np.floating)):
        raise TypeError(f"{name}: expected a number >= 0, got {value!r}")
    if not (np.isfinite(value) and value >= 0):
        raise ValueError(f"{name}: expected a finite number >= 0, got {value!r}")
    return float(value)


def _rng_from(seed: Union[None, int, np.random.Generator]) -> np.random.Generator:
    if isinstance(seed, np.random.Generator):
        return seed
    return np.random.default_rng(None if seed is None else _check_seed(seed))


class ImageDataGenerator:
    """Random affine augmentation of image batches, with the options of Keras's generator.

    Each image gets its own random rotation (degrees in ``[-rotation_range, rotation_range]``),
    shifts (``width_shift_range`` / ``height_shift_range``: a fraction of the width/height
    when < 1, else pixels), shear (degrees in ``[-shear_range, shear_range]``) and zoom
    (``zoom_range=z`` draws row and column factors independently from ``[1 - z, 1 + z]``; a
    pair ``(lo, hi)`` gives the interval; > 1 zooms out, as in Keras). They are composed into
    one matrix about the image centre and applied by ``scipy.ndimage.affine_transform``
    (bilinear by default); pixels sampled from outside follow ``fill_mode``
    (``"nearest"``, ``"constant"`` with ``cval``, ``"reflect"``, ``"wrap"``).
    ``horizontal_flip`` / ``vertical_flip`` mirror half of the images at random, and
    ``rescale`` multiplies the result (Keras applies it after the transform too).

    ``data_format`` says where the channels are: ``"channels_first"`` (deepkern's NCHW,
    the default here) or ``"channels_last"`` (NHWC, the default of ``deepkern.keras``).
    Batches of shape ``(N, H, W)`` are treated as single-channel images and keep their shape.

        gen = dk.data.ImageDataGenerator(rotation_range=10, zoom_range=0.1)
        for xb, yb in gen.flow(x_train, y_train, batch_size=32, seed=0):
            ...
    """

    def __init__(self, rotation_range: float = 0.0, width_shift_range: float = 0.0,
                 height_shift_range: float = 0.0, shear_range: float = 0.0,
                 zoom_range: Union[float, Tuple[float, float]] = 0.0, fill_mode: str = "nearest",
                 cval: float = 0.0, horizontal_flip: bool = False, vertical_flip: bool = False,
                 rescale: Optional[float] = None, data_format: str = "channels_first",
                 interpolation_order: int = 1) -> None:
        self.rotation_range = _non_negative(rotation_range, "rotation_range")
        self.width_shift_range = _non_negative(width_shift_range, "width_shift_range")
        self.height_shift_range = _non_negative(height_shift_range, "height_shift_range")
        self.shear_range = _non_negative(shear_range, "shear_range")
        if isinstance(zoom_range, (tuple, list)):
            if len(zoom_range) != 2:
                raise ValueError(f"zoom_range: expected a number or a pair (lo, hi), got {zoom_range!r}")
            lo, hi = (_non_negative(z, "zoom_range") for z in zoom_range)
        else:
            z = _non_negative(zoom_range, "zoom_range")
            lo, hi = 1.0 - z, 1.0 + z
        if not 0.0 < lo <= hi:
            raise ValueError(f"zoom_range: the zoom interval must satisfy 0 < lo <= hi, got ({lo:g}, {hi:g})")
        self.zoom_range = (lo, hi)
        if fill_mode not in _FILL_MODES:
            raise ValueError(f"fill_mode: expected one of {', '.join(_FILL_MODES)}, got {fill_mode!r}")
        self.fill_mode = fill_mode
        self.cval = float(cval)
        self.horizontal_flip = bool(horizontal_flip)
        self.vertical_flip = bool(vertical_flip)
        if rescale is not None and (isinstance(rescale, bool) or not np.isfinite(float(rescale))):
            raise ValueError(f"rescale: expected a finite number or None, got {rescale!r}")
        self.rescale = None if rescale is None else float(rescale)
        if data_format not in _DATA_FORMATS:
            raise ValueError(f"data_format: expected one of {', '.join(_DATA_FORMATS)}, got {data_format!r}")
        self.data_format = data_format
        if interpolation_order not in (0, 1, 2, 3, 4, 5):
            raise ValueError(f"interpolation_order: expected a spline order 0-5, got {interpolation_order!r}")
        self.interpolation_order = int(interpolation_order)

    # -- the random matrices -------------------------------------------------------------

    def get_random_transform(self, n: int, height: int, width: int,
                             seed: Union[None, int, np.random.Generator] = None) -> Dict[str, np.ndarray]:
        """Draw the parameters of ``n`` random transforms, as arrays under Keras's keys.

        ``theta`` (rotation, degrees), ``tx``/``ty`` (row/column shift, pixels), ``shear``
        (degrees), ``zx``/``zy`` (row/column zoom), ``flip_horizontal``/``flip_vertical``.
        """
        rng = _rng_from(seed)

        def shift(fraction: float, size: int) -> np.ndarray:
            limit = fraction * size if fraction < 1 else fraction  # < 1 is a fraction, else pixels
            return rng.uniform(-limit, limit, n)

        params = {
            "theta": rng.uniform(-self.rotation_range, self.rotation_range, n),
            "tx": shift(self.height_shift_range, height),
            "ty": shift(self.width_shift_range, width),
            "shear": rng.uniform(-self.shear_range, self.shear_range, n),
        }
        params["zx"], params["zy"] = rng.uniform(self.zoom_range[0], self.zoom_range[1], (2, n))
        params["flip_horizontal"] = (rng.random(n) < 0.5) & self.horizontal_flip
        params["flip_vertical"] = (rng.random(n) < 0.5) & self.vertical_flip
        return params

    @staticmethod
    def _sampling_matrices(params: Dict[str, np.ndarray], height: int, width: int) -> np.ndarray:
        """``(n, 3, 3)`` homogeneous maps from output (row, col) to input (row, col)."""
        # sampling with R(-theta) turns the content by +theta: counter-clockwise as displayed
        # (row 0 at the top), the convention of scipy.ndimage.rotate
        theta, shear = -np.deg2rad(params["theta"]), np.deg2rad(params["shear"])
        zoom_row, zoom_col = params["zx"], params["zy"]
        n = len(theta)
        cos, sin = np.cos(theta), np.sin(theta)
        linear = np.zeros((n, 2, 2))
        # rotation @ shear @ zoom, written out: R = [[c, -s], [s, c]], S = [[1, -sin(sh)], [0, cos(sh)]]
        linear[:, 0, 0] = cos * zoom_row
        linear[:, 0, 1] = (-cos * np.sin(shear) - sin * np.cos(shear)) * zoom_col
        linear[:, 1, 0] = sin * zoom_row
        linear[:, 1, 1] = (-sin * np.sin(shear) + cos * np.cos(shear)) * zoom_col
        centre = np.array([(height - 1) / 2.0, (width - 1) / 2.0])
        # input = centre + L (output - centre) + shift
        offset = centre - linear @ centre + np.stack([params["tx"], params["ty"]], axis=1)
        matrices = np.zeros((n, 3, 3))
        matrices[:, :2, :2] = linear
        matrices[:, :2, 2] = offset
        matrices[:, 2, 2] = 1.0
        return matrices

    # -- applying them --------------------------------------------------------------------

    def _spatial_axes(self, ndim: int) -> Tuple[int, int]:
        """Row and column axes of one image of rank ``ndim`` (2 or 3)."""
        if ndim == 2:
            return 0, 1
        return (1, 2) if self.data_format == "channels_first" else (0, 1)

    def _warp(self, image: np.ndarray, matrix: np.ndarray) -> np.ndarray:
        try:
            from scipy import ndimage
        except ImportError:
            raise ImportError("ImageDataGenerator's transforms need SciPy: pip install 'deepkern[augment]'") from None

        rows, cols = self._spatial_axes(image.ndim)
        full = np.eye(image.ndim)
        offset = np.zeros(image.ndim)
        # the channel axis (if any) maps to itself; the 2x2 block acts on (rows, cols)
        full[np.ix_([rows, cols], [rows, cols])] = matrix[:2, :2]
        offset[[rows, cols]] = matrix[:2, 2]
        return ndimage.affine_transform(image, full, offset=offset, order=self.interpolation_order,
                                        mode=_FILL_MODES[self.fill_mode], cval=self.cval,
                                        prefilter=self.interpolation_order > 1)

    def _check_batch(self, x: np.ndarray) -> np.ndarray:
        x = np.asarray(x)
        if x.ndim not in (3, 4):
            raise ValueError(f"x: expected a batch of images (N, H, W) or 4-D "
                             f"({'N, C, H, W' if self.data_format == 'channels_first' else 'N, H, W, C'}), "
                             f"got shape {x.shape}")
        if not np.issubdtype(x.dtype, np.number) or np.issubdtype(x.dtype, np.complexfloating):
            raise TypeError(f"x: expected real numeric images, got dtype {x.dtype}")
        return x

    def _apply(self, x: np.ndarray, params: Dict[str, np.ndarray]) -> np.ndarray:
        """Transform the batch ``x`` (a float32 copy) with one parameter set per image."""
        out = np.array(x, dtype=np.float32, copy=True)
        n = len(out)
        rows, cols = (a + 1 for a in self._spatial_axes(out.ndim - 1))
        if n:
            matrices = self._sampling_matrices(params, out.shape[rows], out.shape[cols])
            identity = np.all(np.abs(matrices - np.eye(3)) < 1e-12, axis=(1, 2))
            for i in np.flatnonzero(~identity):  # one scipy call per image, all channels at once
                out[i] = self._warp(out[i], matrices[i])
        for key, axis in (("flip_horizontal", cols), ("flip_vertical", rows)):
            flip = np.asarray(params[key], dtype=bool)
            if flip.any():
                out[flip] = np.flip(out[flip], axis=axis)
        if self.rescale is not None:
            out *= np.float32(self.rescale)
        return out

    def augment(self, x: np.ndarray, seed: Union[None, int, np.random.Generator] = None) -> np.ndarray:
        """A randomly transformed float32 copy of the batch ``x`` (one draw per image).

        ``seed`` is an int (reproducible), a ``numpy.random.Generator`` (continues its
        stream) or None (fresh entropy).
        """
        x = self._check_batch(x)
        rows, cols = (a + 1 for a in self._spatial_axes(x.ndim - 1))
        params = self.get_random_transform(len(x), x.shape[rows], x.shape[cols], seed)
        return self._apply(x, params)

    def apply_transform(self, x: np.ndarray, transform_parameters: Dict[str, Any]) -> np.ndarray:
        """Apply one given transform to one image (``(C, H, W)``/``(H, W, C)`` or ``(H, W)``).

        ``transform_parameters`` uses the keys of :meth:`get_random_transform` (scalars);
        missing keys mean "no change". Like Keras's ``apply_transform``.
        """
        x = np.asarray(x)
        if x.ndim not in (2, 3):
            raise ValueError(f"x: expected one image of rank 2 or 3, got shape {x.shape}")
        defaults = {"theta": 0.0, "tx": 0.0, "ty": 0.0, "shear": 0.0, "zx": 1.0, "zy": 1.0,
                    "flip_horizontal": False, "flip_vertical": False}
        unknown = set(transform_parameters) - set(defaults)
        if unknown:
            raise ValueError(f"transform_parameters: unknown keys {sorted(unknown)}; "
                             f"expected some of {sorted(defaults)}")
        params = {key: np.asarray([transform_parameters.get(key, value)])
                  for key, value in defaults.items()}
        return self._apply(self._check_batch(x[None]), params)[0]

    def random_transform(self, x: np.ndarray, seed: Union[None, int, np.random.Generator] = None) -> np.ndarray:
        """One randomly transformed image (``(C, H, W)``/``(H, W, C)`` or ``(H, W)``), like Keras's."""
        x = np.asarray(x)
        if x.ndim not in (2, 3):
            raise ValueError(f"x: expected one image of rank 2 or 3, got shape {x.shape}")
        return self.augment(x[None], seed)[0]

    def flow(self, x: np.ndarray, y: Optional[np.ndarray] = None, batch_size: int = 32,
             shuffle: bool = True, seed: Optional[int] = None) -> "ImageFlow":
        """Augmented mini-batches of ``x`` (and the matching ``y``): see :class:`ImageFlow`."""
        return ImageFlow(self, x, y, batch_size=batch_size, shuffle=shuffle, seed=seed)


class ImageFlow:
    """Mini-batches ``(x_batch, y_batch)`` (``x_batch`` alone without ``y``), freshly augmented.

    ``for batch in flow`` runs one pass over the data (``len(flow)`` batches, reshuffled each
    pass when ``shuffle``), so a plain loop ends, unlike Keras's endless iterator; ``next(flow)``
    continues indefinitely like Keras's. Model ``fit`` functions of deepkern accept a flow in
    place of arrays and take ``len(flow)`` batches per epoch. One ``seed`` fixes both the
    order and the augmentation.
    """

    def __init__(self, generator: ImageDataGenerator, x: np.ndarray, y: Optional[np.ndarray] = None,
                 batch_size: int = 32, shuffle: bool = True, seed: Optional[int] = None) -> None:
        self.generator = generator
        self.x = generator._check_batch(x)
        self.y = None if y is None else np.asarray(y)
        if self.y is not None and len(self.y) != len(self.x):
            raise ValueError(f"x has {len(self.x)} samples but y has {len(self.y)}")
        if len(self.x) == 0:
            raise ValueError("x: expected at least one image, got an empty batch")
        self._batches = BatchIterator(np.arange(len(self.x)), batch_size=batch_size,
                                      shuffle=shuffle, seed=seed)
        # a separate stream for the transforms, so the order does not depend on them
        self._rng = np.random.default_rng(None if seed is None else [_check_seed(seed), 1])
        self._pending: List[np.ndarray] = []

    @property
    def batch_size(self) -> int:
        return self._batches.batch_size

    @property
    def n(self) -> int:
        """Number of samples (Keras's name)."""
        return len(self.x)

    def __len__(self) -> int:
        return len(self._batches)

    def _batch(self, idx: np.ndarray):
        xb = self.generator.augment(self.x[idx], self._rng)
        return xb if self.y is None else (xb, self.y[idx])

    def __iter__(self):
        for idx in self._batches:
            yield self._batch(idx)

    def __next__(self):
        if not self._pending:
            self._pending = list(self._batches)[::-1]
        return self._batch(self._pending.pop())

