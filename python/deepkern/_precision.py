"""``dk.set_precision``: compute precision of the C++ CPU backend's matrix products: ``"fp32"`` or ``"bf16"``.

With ``"bf16"`` every matmul and conv2d of the ``cpu`` backend (forward, input gradient and
weight gradient; the dense and convolution layers) rounds the operands of its products to
bfloat16 (round to nearest even) and sums the products in fp32 with the AVX512-BF16
``vdpbf16ps`` instruction: about twice the multiplies per cycle. The operands are the inputs
(x, w, the output gradient) for matmuls and im2col convolutions, and the fp32-transformed tiles
and weights for the 3x3 stride-1 convolutions that run Winograd (``DEEPKERN_WINOGRAD``, as in
fp32; ``off`` keeps every convolution on im2col). Weights, gradients, biases and
optimizer state stay fp32 (the "master weights"); only the products are narrower (a bias
gradient is a plain fp32 sum). Two kinds of work stay fp32 where bf16 cannot win (in
``DEEPKERN_WINOGRAD``'s automatic mode; bit for bit fp32's): the backward of a convolution whose
output gradient is mostly zero (behind a 2x2 max-pool, on small planes), and the forward and weight
gradient of a few-tap convolution (C*KH*KW <= 9, e.g. a 3x3 first layer on one-channel images).
Pooling, normalisation and the elementwise kernels stay fp32, and so do the other backends. A
layer's backward runs in the precision its forward ran in.

``"bf16"`` needs a CPU with AVX512-BF16 (``avx512_bf16`` in /proc/cpuinfo; AMD Zen 4 and later,
Intel Cooper Lake / Sapphire Rapids and later): elsewhere :func:`set_precision` raises
``RuntimeError`` rather than silently running fp32, so a measured speed or accuracy is never
attributed to the wrong precision.

    dk.set_precision("bf16")            # process-wide
    with dk.precision("bf16"): ...      # for a block
    fit(model, X, y, precision="bf16")  # for one training run
"""
from __future__ import annotations

import contextlib
from typing import Iterator

PRECISIONS = ("fp32", "bf16")
_current = "fp32"


def bf16_supported() -> bool:
    """Whether ``"bf16"`` can be chosen: the C++ backend is built and the CPU has AVX512-BF16."""
    try:
        from . import _cpu  # type: ignore[attr-defined]
    except ImportError:
        return False
    return bool(_cpu.bf16_available())


def _check(name: str) -> str:
    if name not in PRECISIONS:
        raise ValueError(f"precision: expected one of {', '.join(PRECISIONS)}, got {name!r}")
    if name == "bf16" and not bf16_supported():
        raise RuntimeError("precision 'bf16' needs the C++ CPU backend on a CPU with AVX512-BF16 "
                           "(avx512_bf16); this one has none: use 'fp32'")
    return name


def set_precision(name: str) -> None:
    """Use ``"fp32"`` (default) or ``"bf16"`` products in the CPU backend's matmuls and convolutions from now on."""
    global _current
    _current = _check(name)


def get_precision() -> str:
    """The precision set by :func:`set_precision` (``"fp32"`` unless changed)."""
    return _current


@contextlib.contextmanager
def precision(name: str) -> Iterator[None]:
    """``with precision("bf16"):`` the block runs with that precision, then the previous one returns."""
    global _current
    old, _current = _current, _check(name)
    try:
        yield
    finally:
        _current = old
