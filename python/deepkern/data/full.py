"""Full-size MNIST and Fashion-MNIST from wherever the user already has them (never a download).

One resolver, :func:`load_mnist_arrays`, serves every front end (``keras.datasets.mnist`` and
``fashion_mnist``, ``torchvision.datasets.MNIST``/``FashionMNIST`` and the TF1
``input_data.read_data_sets``). It looks, in order, at:

1. ``source`` when given: a ``.npz`` file (Keras's layout), or a folder holding the four IDX
   files (plain or ``.gz``), directly or under ``MNIST/raw`` / ``FashionMNIST/raw``
   (torchvision's layout), or Keras's cache layout (``mnist.npz``, ``fashion-mnist/``);
   ``source="sample"`` asks for the embedded sample;
2. the folders in ``search`` (a torchvision ``root``, an ``input_data`` directory), same layouts;
3. ``$DEEPKERN_MNIST_DIR`` (MNIST) or ``$DEEPKERN_FASHION_MNIST_DIR`` (Fashion-MNIST);
4. Keras's cache: ``$KERAS_HOME/datasets`` or ``~/.keras/datasets``;
5. Fashion-MNIST only: the Debian package ``dataset-fashion-mnist``
   (``/usr/share/datasets/fashion-mnist``);
6. MNIST only: the embedded 5,000-digit sample (4,000 train / 1,000 test), with a notice on
   stderr saying how to get the full set and what shapes it returns. Fashion-MNIST has no
   embedded sample: a ``FileNotFoundError`` lists the ways to get it.

Arrays come back exactly as stored: images uint8 ``(N, 28, 28)``, labels uint8 ``(N,)``.
"""
from __future__ import annotations

import os
import sys
import zipfile
from typing import Iterable, List, Optional, Tuple

import numpy as np

from ._common import PathLike
from .datasets import load_mnist5k
from .idx import MNIST_DIR_ENV, MNIST_IDX_FILES, read_mnist_idx

__all__ = ["load_mnist_arrays", "KINDS", "FASHION_DIR_ENV", "DEBIAN_FASHION_DIR", "SAMPLE"]

Arrays = Tuple[Tuple[np.ndarray, np.ndarray], Tuple[np.ndarray, np.ndarray]]

#: Accepted ``kind`` values.
KINDS = ("mnist", "fashion")
#: Environment variable naming a folder with the four Fashion-MNIST IDX files.
FASHION_DIR_ENV = "DEEPKERN_FASHION_MNIST_DIR"
#: Where the Debian/Ubuntu package ``dataset-fashion-mnist`` installs the IDX files.
DEBIAN_FASHION_DIR = "/usr/share/datasets/fashion-mnist"
#: ``source`` value that selects the embedded sample.
SAMPLE = "sample"

# per kind: Keras cache entry, torchvision folder name, environment variable
_KERAS_NAME = {"mnist": "mnist.npz", "fashion": "fashion-mnist"}
_TORCHVISION_NAME = {"mnist": "MNIST", "fashion": "FashionMNIST"}
_ENV = {"mnist": MNIST_DIR_ENV, "fashion": FASHION_DIR_ENV}
_TITLE = {"mnist": "MNIST", "fashion": "Fashion-MNIST"}

_notices_shown: set = set()


def keras_cache_dir() -> str:
    """Keras's dataset cache: ``$KERAS_HOME/datasets``, else ``~/.keras/datasets``."""
    home = os.environ.get("KERAS_HOME") or os.path.join(os.path.expanduser("~"), ".keras")
    return os.path.join(home, "datasets")


def _has_idx(folder: str) -> bool:
    return all(os.path.isfile(os.path.join(folder, stem)) or os.path.isfile(os.path.join(folder, stem + ".gz"))
               for stem in MNIST_IDX_FILES.values())


def _read_npz(path: str) -> Arrays:
    try:
        with np.load(path, allow_pickle=False) as f:
            parts = [np.asarray(f[k]) for k in ("x_train", "y_train", "x_test", "y_test")]
    except (KeyError, ValueError, OSError, zipfile.BadZipFile) as exc:
        raise ValueError(f"{path}: not a Keras MNIST .npz (arrays x_train, y_train, x_test, y_test): "
                         f"{type(exc).__name__}: {exc}") from exc
    x_train, y_train, x_test, y_test = parts
    for name, x, y in (("train", x_train, y_train), ("test", x_test, y_test)):
        if x.dtype != np.uint8 or x.ndim != 3 or y.ndim != 1 or len(x) != len(y):
            raise ValueError(f"{path}: {name} split must be uint8 images (N, H, W) and N labels, got "
                             f"{x.dtype} {x.shape} and {y.shape}")
    return (x_train, y_train.astype(np.uint8)), (x_test, y_test.astype(np.uint8))


def _candidates(folder: str, kind: str) -> List[str]:
    """Files or folders under ``folder`` that may hold ``kind`` in one of the known layouts."""
    return [folder, os.path.join(folder, _TORCHVISION_NAME[kind], "raw"),
            os.path.join(folder, _KERAS_NAME[kind])]


def _read_from(path: str, kind: str) -> Optional[Arrays]:
    """The arrays at ``path`` (npz file or a folder in a known layout), None when absent."""
    for candidate in _candidates(path, kind) if os.path.isdir(path) else [path]:
        if os.path.isfile(candidate) and candidate.endswith(".npz"):
            return _read_npz(candidate)
        if os.path.isdir(candidate) and _has_idx(candidate):
            x_train, y_train, x_test, y_test = read_mnist_idx(candidate)
            return (x_train, y_train), (x_test, y_test)
    return None


def _sample() -> Arrays:
    x_train, y_train, x_test, y_test = load_mnist5k(seed=0)

    def as_uint8(images: np.ndarray) -> np.ndarray:
        # the sample stores integer pixels divided by 255, so rounding recovers them exactly
        return np.rint(images.reshape(-1, 28, 28) * 255.0).astype(np.uint8)

    return (as_uint8(x_train), y_train.astype(np.uint8)), (as_uint8(x_test), y_test.astype(np.uint8))


def _how_to_get(kind: str) -> str:
    ways = [f"set ${_ENV[kind]} to a folder of its four IDX files",
            f"put Keras's {_KERAS_NAME[kind]} in {keras_cache_dir()}"]
    if kind == "fashion":
        ways.append("install the Debian package: apt-get install dataset-fashion-mnist")
    return "; or ".join(ways)


def load_mnist_arrays(kind: str = "mnist", source: Optional[PathLike] = None,
                      search: Iterable[PathLike] = ()) -> Arrays:
    """``((x_train, y_train), (x_test, y_test))`` of MNIST or Fashion-MNIST, uint8, as stored.

    Args:
        kind: ``"mnist"`` or ``"fashion"``.
        source: where to read (see the module docstring); must hold the data when given.
            ``"sample"`` returns the embedded 5,000-digit MNIST sample (4,000 / 1,000).
        search: folders to try first without failing (a torchvision ``root``, say).

    Raises:
        ValueError: unknown ``kind``, or a file in the wrong format.
        FileNotFoundError: ``source`` holds nothing usable, or Fashion-MNIST is nowhere.
    """
    if kind not in KINDS:
        raise ValueError(f"kind: expected one of {KINDS}, got {kind!r}")
    if source is not None:
        if isinstance(source, str) and source == SAMPLE:
            if kind != "mnist":
                raise ValueError(f"source='sample': only MNIST has an embedded sample; {_how_to_get(kind)}")
            return _sample()
        path = os.fspath(source)
        found = _read_from(path, kind) if os.path.exists(path) else None
        if found is None:
            raise FileNotFoundError(f"{path}: no {_TITLE[kind]} there (expected a .npz or the four IDX files, "
                                    f"directly or under {_TORCHVISION_NAME[kind]}/raw)")
        return found
    places = [os.fspath(p) for p in search]
    env = os.environ.get(_ENV[kind])
    if env:
        places.append(env)
    places.append(os.path.join(keras_cache_dir(), _KERAS_NAME[kind]))  # only this kind's entry
    if kind == "fashion":
        places.append(DEBIAN_FASHION_DIR)
    for place in places:
        if os.path.exists(place):
            found = _read_from(place, kind)
            if found is not None:
                return found
    if kind == "fashion":
        raise FileNotFoundError(f"Fashion-MNIST not found (looked in {', '.join(places)}); "
                                f"{_how_to_get(kind)}")
    arrays = _sample()
    if kind not in _notices_shown:
        _notices_shown.add(kind)
        (xt, _), (xv, _) = arrays
        print(f"deepkern: the full MNIST was not found (looked in {', '.join(places)}); using the embedded "
              f"sample: x_train {xt.shape}, x_test {xv.shape} (uint8). For the full 60,000 / 10,000: "
              f"{_how_to_get(kind)}.", file=sys.stderr)
    return arrays
