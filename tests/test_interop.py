"""Zero-copy interop: DLPack with PyTorch, NumPy and CuPy, and the NumPy array protocol."""
from __future__ import annotations

import numpy as np
import pytest

import deepkern as dk
from deepkern.device import gpu_available

torch = pytest.importorskip("torch")


def _tensor() -> dk.Tensor:
    return dk.Tensor(np.arange(12, dtype=np.float32).reshape(3, 4))


def test_torch_from_dlpack_shares_memory_both_ways():
    t = _tensor()
    view = torch.from_dlpack(t)
    assert view.shape == (3, 4) and view.dtype == torch.float32
    assert view.data_ptr() == t.data.ctypes.data
    view[1, 2] = -5.0                      # a write through torch is seen by deepkern
    assert t.data[1, 2] == -5.0
    t.data[0, 0] = 7.0                     # and the other way
    assert view[0, 0].item() == 7.0
    back = dk.from_dlpack(view)            # round trip: still the same memory
    assert back.data.ctypes.data == t.data.ctypes.data
    np.testing.assert_array_equal(back.numpy(), t.numpy())


def test_dk_from_dlpack_of_torch_tensor_is_zero_copy():
    source = torch.linspace(0, 1, 10, dtype=torch.float32).reshape(2, 5)
    t = dk.from_dlpack(source, requires_grad=True)
    assert t.requires_grad and t.shape == (2, 5) and t.dtype == np.float32
    assert t.data.ctypes.data == source.data_ptr()
    source.mul_(2.0)
    np.testing.assert_allclose(t.numpy(), source.numpy())
    indices = torch.arange(4)
    labels = dk.from_dlpack(indices)           # integer data keeps its dtype, still shared
    assert labels.dtype == np.int64 and labels.data.ctypes.data == indices.data_ptr()
    # a float64 source cannot be float32 without a conversion: the result is a copy
    converted = dk.from_dlpack(torch.ones(3, dtype=torch.float64))
    assert converted.dtype == np.float32


def test_torch_as_tensor_and_scalars():
    t = _tensor()
    shared = torch.as_tensor(t)
    assert shared.data_ptr() == t.data.ctypes.data
    assert torch.as_tensor(dk.Tensor(3.5)).item() == 3.5   # 0-d: the reported len() failure
    loss = (dk.Tensor(np.ones(3, np.float32), requires_grad=True) * 2).sum()
    assert float(torch.from_dlpack(loss)) == 6.0


def test_dlpack_device_and_numpy_from_dlpack():
    t = _tensor()
    assert t.__dlpack_device__() == (1, 0)
    arr = np.from_dlpack(t)
    assert np.shares_memory(arr, t.data)
    with pytest.raises(TypeError, match="__dlpack__"):
        dk.from_dlpack([1.0, 2.0])


def test_array_protocol_dtype_and_copy():
    t = _tensor()
    assert np.asarray(t) is t.data
    assert np.shares_memory(np.array(t, copy=False), t.data)
    copied = np.array(t, copy=True)
    assert not np.shares_memory(copied, t.data)
    np.testing.assert_array_equal(copied, t.data)
    as64 = np.asarray(t, dtype=np.float64)
    assert as64.dtype == np.float64 and np.array_equal(as64, t.data)
    with pytest.raises(ValueError, match="copy"):
        np.array(t, dtype=np.float64, copy=False)
    assert np.add(np.asarray(t), 1).shape == (3, 4)


@pytest.mark.skipif(not gpu_available(), reason="needs a CUDA GPU and CuPy")
def test_cupy_round_trip_shares_device_memory():
    import cupy

    t = dk.Tensor(cupy.arange(6, dtype=cupy.float32).reshape(2, 3))
    assert t.__dlpack_device__()[0] == 2
    view = cupy.from_dlpack(t)
    assert view.data.ptr == t.data.data.ptr
    view[0, 0] = 42.0
    assert float(t.data[0, 0]) == 42.0
    back = dk.from_dlpack(view)
    assert back.device == "cuda" and back.data.data.ptr == t.data.data.ptr
    with pytest.raises(ValueError, match="GPU"):
        np.array(t, copy=False)
    np.testing.assert_array_equal(np.asarray(t), np.arange(6, dtype=np.float32).reshape(2, 3))
