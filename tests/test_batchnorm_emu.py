"""The CUDA batch-norm kernels (csrc/cuda/batchnorm.cu) on the CPU emulator against the NumPy
reference: both reduction paths (rows of (N, C), and (N, C, S) with S > 1), several channel
blocks and batch pieces, no affine, eval mode and NaN. Selected with ``pytest -k emul``."""
from __future__ import annotations

import numpy as np
import pytest

from deepkern.backends import numpy as ref

from .conftest import assert_close, randn
from .cuda_emu import emu

pytestmark = pytest.mark.emul


# (130, 1100) and (2, 3, 16, 17) fill every lane of the row and spatial reductions (more than 8 rows,
# more than 224 values per batch piece)
@pytest.mark.parametrize("shape", [(2, 1), (7, 13), (5, 70), (300, 3), (130, 1100), (1, 3, 5, 7), (3, 5, 11),
                                   (4, 2, 9, 9), (2, 3, 16, 17)])
@pytest.mark.parametrize("training", [True, False])
def test_emul_batch_norm_matches_the_reference(shape, training, rng):
    c = shape[1]
    x = randn(rng, *shape) * 2 + np.float32(3)
    affine = c != 13
    w, b = (randn(rng, c), randn(rng, c)) if affine else (None, None)
    rm, rv = randn(rng, c), np.abs(randn(rng, c)) + np.float32(0.5)
    g = randn(rng, *shape)
    runs = {}
    for name, mod in (("emu", emu), ("ref", ref)):
        rm_, rv_ = rm.copy(), rv.copy()
        y, mean, invstd = mod.batch_norm(x, w, b, rm_, rv_, training, 0.1, 1e-5, True)
        grads = mod.batch_norm_backward(g, x, w, mean, invstd, training, affine)
        runs[name] = (y, mean, invstd, rm_, rv_) + tuple(grads)
    for i, (got, want) in enumerate(zip(runs["emu"], runs["ref"])):
        if want is None:
            assert got is None
            continue
        assert_close(got, want, rtol=1e-4, atol=2e-5, what=f"{shape} training={training} output {i}")


def test_emul_batch_norm_nan_stays_in_its_channel(rng):
    x = randn(rng, 6, 3, 4)
    x[3, 2, 1] = np.nan
    rm, rv = np.zeros(3, np.float32), np.ones(3, np.float32)
    y, _, _ = emu.batch_norm(x, None, None, rm, rv, True, 0.1, 1e-5, False)
    assert np.isnan(y[:, 2]).all() and np.isfinite(y[:, :2]).all()
    assert np.isnan(rv[2]) and np.isfinite(rv[:2]).all()
