"""_device owns every "which device / move this array" decision; "cuda:N" keeps its index.

No GPU is needed: a stand-in for CuPy records which GPU each copy lands on.
"""
from __future__ import annotations

import types

import numpy as np
import pytest

import deepkern as dk
from deepkern import _device


class _FakeGPUArray:
    """Enough of a cupy.ndarray for moves: data on the host, the GPU index it claims."""

    __cuda_array_interface__ = {}

    def __init__(self, host: np.ndarray, gpu: int) -> None:
        self.host = np.ascontiguousarray(host)
        self.device = types.SimpleNamespace(id=gpu)

    flags = property(lambda self: self.host.flags)
    shape = property(lambda self: self.host.shape)
    dtype = property(lambda self: self.host.dtype)

    def get(self) -> np.ndarray:
        return self.host.copy()

    def __setitem__(self, key, value) -> None:
        # an in-place copy from another GPU would be a peer copy (or an error) on a real one
        if isinstance(value, _FakeGPUArray) and value.device.id != self.device.id:
            raise AssertionError(f"copy from GPU {value.device.id} into an array on GPU {self.device.id}")
        self.host[key] = value.host if isinstance(value, _FakeGPUArray) else value


class _FakeCupy:
    current = 0

    class cuda:
        runtime = types.SimpleNamespace(getDeviceCount=lambda: 2)

        class Device:
            def __init__(self, index: int) -> None:
                self.index = index

            def __enter__(self):
                self.saved, _FakeCupy.current = _FakeCupy.current, self.index

            def __exit__(self, *exc):
                _FakeCupy.current = self.saved

    @staticmethod
    def asarray(a):
        return _FakeGPUArray(a.host if isinstance(a, _FakeGPUArray) else np.asarray(a), _FakeCupy.current)

    @staticmethod
    def ascontiguousarray(a):
        return a


@pytest.fixture
def two_gpus(monkeypatch):
    monkeypatch.setattr(_device, "gpu_array_module", lambda: _FakeCupy)
    return _FakeCupy


def test_cuda_index_is_kept_by_tensor_and_module_moves(two_gpus):
    t = dk.Tensor(np.ones(3, np.float32)).to("cuda:1")
    assert t.data.device.id == 1
    assert _device.device_name(t.data) == "cuda:1"
    assert t.to("cuda:1") is t and t.to("cuda:0").data.device.id == 0
    model = dk.nn.Linear(3, 2)
    model.to("cuda:1")
    assert {p.data.device.id for p in model.parameters()} == {1}
    assert isinstance(dk.Tensor(np.ones(2, np.float32)).to("cuda:1").cpu().data, np.ndarray)


def test_device_spellings():
    assert _device.parse_device("CUDA:1") == ("cuda", 1)
    assert _device.canonical_device("gpu") == "cuda"
    assert _device.canonical_device("cuda:3") == "cuda:3"
    assert _device.device_name(np.zeros(1)) == "cpu"
    with pytest.raises(ValueError, match="device"):
        _device.parse_device("cuda:x")


def test_a_missing_gpu_index_is_an_error(two_gpus):
    with pytest.raises(ValueError, match="does not exist"):
        dk.Tensor(np.ones(3, np.float32)).to("cuda:2")


def test_load_state_dict_writes_on_the_parameters_own_gpu(two_gpus):
    model = dk.nn.Linear(3, 2)
    state = {k: v + 1 for k, v in model.state_dict().items()}
    model.to("cuda:1")
    model.load_state_dict(state)   # the current GPU is 0: the values must still go to GPU 1
    for (name, p), want in zip(model.named_parameters(), state.values()):
        assert p.data.device.id == 1
        np.testing.assert_array_equal(p.data.host, want, err_msg=name)


def test_keras_same_average_map_is_placed_once_on_the_inputs_gpu(two_gpus, monkeypatch):
    from deepkern.keras import layers as klayers
    scale = klayers._Scale(np.full((2, 2), 2.0))
    placed = []
    real_move = klayers.move
    monkeypatch.setattr(klayers, "move", lambda a, where: placed.append(where) or real_move(a, where))
    seen = []

    class _Input:   # just what _Scale.forward touches: .data and multiplication
        data = _FakeGPUArray(np.ones((1, 1, 2, 2), np.float32), 1)

        def __mul__(self, factor):
            seen.append(factor.device.id)
            return self

    for _ in range(3):
        scale(_Input())
    assert placed == ["cuda:1"] and seen == [1, 1, 1]
