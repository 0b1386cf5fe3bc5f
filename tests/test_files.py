"""Checkpoint and Keras model files: one atomic saver (fsync, temporaries a killed save leaves are
removed by the next save) and a reader for which every damaged or crafted file is a ValueError
naming the file."""
from __future__ import annotations

import io
import json
import os
import signal
import subprocess
import sys
import textwrap
import zipfile
from pathlib import Path

import numpy as np
import pytest

import deepkern as dk
from deepkern import _files, train
from deepkern.keras import layers, models

ROOT = Path(__file__).resolve().parents[1]


def _mlp(seed: int = 0) -> dk.models.MLP:
    dk.manual_seed(seed)
    return dk.models.MLP(5, (8,), 3)


def _keras_mlp() -> models.Sequential:
    model = models.Sequential([layers.Dense(8, activation="relu", input_shape=(5,)),
                               layers.Dense(3, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy", metrics=["accuracy"])
    return model


def _temporaries(folder: Path) -> list:
    return sorted(p.name for p in folder.iterdir() if p.name.endswith(_files.TEMP_SUFFIX) or p.name.endswith(".tmp"))


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


# ---------------------------------------------------------------------------- kill -9 during a save
_KILLED_SAVER = textwrap.dedent("""
    import sys, time
    import numpy as np
    import deepkern as dk
    from deepkern.keras import layers, models

    kind, path = sys.argv[1], sys.argv[2]

    def stall(f, **arrays):   # write part of the archive, then hang until killed
        f.write(b"PK\\x03\\x04" + b"\\0" * 4096)
        f.flush()
        print("writing", flush=True)
        time.sleep(600)

    np.savez = stall
    if kind == "checkpoint":
        dk.manual_seed(0)
        dk.train.save(dk.models.MLP(5, (8,), 3), path)
    else:
        model = models.Sequential([layers.Dense(8, input_shape=(5,)), layers.Dense(3)])
        model.save(path)
""")


@pytest.mark.parametrize("kind", ["checkpoint", "keras"])
def test_the_next_save_removes_what_a_killed_save_left(tmp_path, kind):
    path = tmp_path / "model.npz"
    env = dict(os.environ, PYTHONPATH=os.pathsep.join([str(ROOT / "python"), os.environ.get("PYTHONPATH", "")]))
    for _ in range(2):
        child = subprocess.Popen([sys.executable, "-c", _KILLED_SAVER, kind, str(path)], env=env,
                                 stdout=subprocess.PIPE, text=True)
        assert child.stdout.readline().strip() == "writing"   # killed in the middle of the write
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
    # the second save already removed the first one's temporary; its own is left
    assert len(_temporaries(tmp_path)) == 1 and not path.exists()
    if kind == "checkpoint":
        train.save(_mlp(), path)
        train.load(_mlp(seed=1), path)
    else:
        _keras_mlp().save(path)
        models.load_model(path)
    assert _temporaries(tmp_path) == []
    assert os.listdir(tmp_path) == ["model.npz"]


def test_a_live_process_temporary_is_left_alone(tmp_path):
    path = tmp_path / "ckpt.npz"
    sleeper = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
    try:
        live = tmp_path / f".ckpt.npz.{sleeper.pid}.abc{_files.TEMP_SUFFIX}"
        dead = tmp_path / f".ckpt.npz.{_dead_pid()}.def{_files.TEMP_SUFFIX}"
        other = tmp_path / f".other.npz.{_dead_pid()}.ghi{_files.TEMP_SUFFIX}"  # another target's
        for p in (live, dead, other):
            p.write_bytes(b"partial")
        train.save(_mlp(), path)
        assert live.exists() and other.exists() and not dead.exists()
    finally:
        sleeper.kill()
        sleeper.wait()


@pytest.mark.parametrize("kind", ["checkpoint", "keras"])
def test_both_writers_fsync(tmp_path, monkeypatch, kind):
    synced = []
    real = os.fsync
    monkeypatch.setattr(os, "fsync", lambda fd: (synced.append(fd), real(fd))[1])
    if kind == "checkpoint":
        train.save(_mlp(), tmp_path / "a.npz")
    else:
        _keras_mlp().save(tmp_path / "a.npz")
    assert synced  # the file (and its directory) reach the disk before the rename counts


# ---------------------------------------------------------------------------- damaged and crafted files
def _rewrite(src: Path, dst: Path, change) -> Path:
    with np.load(src) as npz:
        entries = {k: npz[k] for k in npz.files}
    change(entries)
    np.savez(dst, **entries)
    return dst


def _zip_version_needed(src: Path, dst: Path) -> Path:
    """Every 'version needed to extract' field set to 9.9 (zipfile: NotImplementedError)."""
    data = bytearray(src.read_bytes())
    for magic, offset in ((b"PK\x03\x04", 4), (b"PK\x01\x02", 6)):
        start = 0
        while (at := data.find(magic, start)) >= 0:
            data[at + offset] = 99
            start = at + 4
    dst.write_bytes(bytes(data))
    return dst


def _huge_member(src: Path, dst: Path, name: str) -> Path:
    """One member's .npy header claims shape (10**12,) while it holds a few bytes."""
    header = io.BytesIO()
    np.lib.format.write_array_header_1_0(header, {"descr": "<f4", "fortran_order": False, "shape": (10**12,)})
    with zipfile.ZipFile(src) as zin, zipfile.ZipFile(dst, "w") as zout:
        for info in zin.infolist():
            payload = zin.read(info.filename)
            if info.filename == name:
                payload = b"\x93NUMPY\x01\x00" + header.getvalue()[8:] + b"\0" * 16
            zout.writestr(info.filename, payload)
    return dst


@pytest.fixture
def checkpoint(tmp_path) -> Path:
    return Path(train.save(_mlp(), tmp_path / "good.npz", optimizer=dk.optim.Adam(_mlp().parameters())))


@pytest.fixture
def keras_file(tmp_path) -> Path:
    model = _keras_mlp()
    model.fit(np.random.default_rng(0).random((16, 5), dtype=np.float32), np.arange(16) % 3, epochs=1, verbose=0)
    return Path(model.save(tmp_path / "model.npz"))


def _checkpoint_cases(good: Path, folder: Path):
    yield _zip_version_needed(good, folder / "zipversion.npz")
    yield _huge_member(good, folder / "huge.npz", "model/layers.0.weight.npy")
    yield _rewrite(good, folder / "nan.npz", lambda e: e["model/layers.0.weight"].__setitem__((0, 0), np.nan))
    yield _rewrite(good, folder / "inf.npz", lambda e: e["model/layers.0.bias"].__setitem__(0, np.inf))
    yield _rewrite(good, folder / "f64.npz",
                   lambda e: e.__setitem__("model/layers.0.bias", np.full(8, 1e39, dtype=np.float64)))
    yield _rewrite(good, folder / "vector_version.npz", lambda e: e.__setitem__("__version__", np.array([1, 1])))


def test_every_crafted_checkpoint_is_a_value_error_naming_it(checkpoint, tmp_path):
    model = _mlp(seed=2)
    before = model.state_dict()
    for path in _checkpoint_cases(checkpoint, tmp_path):
        with pytest.raises(ValueError, match=path.name):
            train.load(model, path, optimizer=dk.optim.Adam(model.parameters()))
    for name, value in model.state_dict().items():
        np.testing.assert_array_equal(value, before[name])


def _keras_cases(good: Path, folder: Path):
    yield _zip_version_needed(good, folder / "zipversion.npz")
    yield _huge_member(good, folder / "huge.npz", "weights/dense.linear.weight.npy")
    yield _rewrite(good, folder / "vector_version.npz", lambda e: e.__setitem__("__version__", np.array([1, 1])))
    yield _rewrite(good, folder / "bad_json.npz", lambda e: e.__setitem__("compile", np.array("{not json")))
    yield _rewrite(good, folder / "no_loss.npz",
                   lambda e: e.__setitem__("compile", np.array(json.dumps({"metrics": []}))))
    yield _rewrite(good, folder / "bad_arch.npz", lambda e: e.__setitem__("architecture", np.array("[1, 2]")))
    yield _rewrite(good, folder / "nan.npz", lambda e: e["weights/dense.linear.weight"].__setitem__((0, 0), np.nan))
    yield _rewrite(good, folder / "f64.npz",
                   lambda e: e.__setitem__("weights/dense.linear.bias", np.full(8, -1e300, dtype=np.float64)))

    def huge_dense(entries):
        spec = json.loads(str(entries["architecture"]))
        spec["config"]["layers"][0]["config"]["units"] = 10**12   # 58 TiB of weights, never allocated
        entries["architecture"] = np.array(json.dumps(spec))
    yield _rewrite(good, folder / "huge_dense.npz", huge_dense)


def test_every_crafted_keras_file_is_a_value_error_naming_it(keras_file, tmp_path):
    cases = list(_keras_cases(keras_file, tmp_path))
    for path in cases:
        with pytest.raises(ValueError, match=path.name):
            models.load_model(path)
    assert models.load_model(keras_file).count_params() == 8 * 5 + 8 + 3 * 8 + 3


def test_damaged_bytes_never_escape_as_another_error(checkpoint, keras_file, tmp_path):
    """Truncations and byte flips anywhere in both kinds of file: loading works or raises ValueError."""
    rng = np.random.default_rng(0)
    damaged = tmp_path / "damaged.npz"
    for good, load in ((checkpoint, lambda p: train.load(_mlp(), p)), (keras_file, models.load_model)):
        data = good.read_bytes()
        variants = [data[:n] for n in range(0, len(data), max(1, len(data) // 40))]
        for _ in range(60):
            flipped = bytearray(data)
            flipped[int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))
            variants.append(bytes(flipped))
        for payload in variants:
            damaged.write_bytes(payload)
            try:
                load(damaged)
            except ValueError as exc:
                assert "damaged.npz" in str(exc)
