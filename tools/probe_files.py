"""Probe of deepkern's files: damaged/crafted checkpoints and Keras model files, and kill -9 during saves.

    PYTHONPATH=python python tools/probe_files.py [--kills 50] [--flips 2000]

Damaged files: every truncation length on a grid, random byte flips and the crafted cases of
tests/test_files.py, on a checkpoint (with optimizer state) and a Keras model file. Each load
must raise ValueError naming the file, or give exactly the saved weights (a flip in zip
metadata that no reader uses); anything else is counted: an escape (another exception) or a
load with different weights (silently wrong).
kill -9: a child saves a 784-256-256-10 MLP with Adam state (checkpoint and Keras format in
turn) in a loop and is killed at a random moment; after each kill the target must load (old or
new, never half), and after the next save no temporary may remain. Prints the counts.
"""
from __future__ import annotations

import argparse
import importlib.util
import os
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT / "python"))

import deepkern as dk  # noqa: E402
from deepkern import _files, train  # noqa: E402
from deepkern.keras import models  # noqa: E402


def _test_helpers():
    """The crafted-file makers of tests/test_files.py (one definition of each case)."""
    spec = importlib.util.spec_from_file_location("test_files", ROOT / "tests" / "test_files.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def probe_damaged(folder: Path, flips: int) -> dict:
    helpers = _test_helpers()
    good_ckpt = Path(train.save(helpers._mlp(), folder / "good.npz",
                                optimizer=dk.optim.Adam(helpers._mlp().parameters())))
    keras_model = helpers._keras_mlp()
    keras_model.fit(np.random.default_rng(0).random((16, 5), dtype=np.float32), np.arange(16) % 3,
                    epochs=1, verbose=0)
    good_keras = Path(keras_model.save(folder / "model.npz"))
    rng = np.random.default_rng(1)
    counts = {"files": 0, "loaded_intact": 0, "loaded_different": 0, "value_error_naming_file": 0, "escaped": 0}
    damaged = folder / "damaged.npz"

    def load_ckpt(p: Path) -> list:
        model = helpers._mlp(seed=5)
        train.load(model, p, optimizer=dk.optim.Adam(model.parameters()))
        return [np.asarray(v) for v in model.state_dict().values()]

    def load_keras(p: Path) -> list:
        return models.load_model(p).get_weights()

    kinds = ((good_ckpt, load_ckpt, list(helpers._checkpoint_cases(good_ckpt, folder))),
             (good_keras, load_keras, list(helpers._keras_cases(good_keras, folder))))
    for good, load, crafted in kinds:
        reference = load(good)
        data = good.read_bytes()
        payloads = [data[:n] for n in range(0, len(data), max(1, len(data) // 200))]
        for _ in range(flips):
            flipped = bytearray(data)
            flipped[int(rng.integers(len(data)))] ^= int(rng.integers(1, 256))
            payloads.append(bytes(flipped))
        payloads += [p.read_bytes() for p in crafted]
        for payload in payloads:
            damaged.write_bytes(payload)
            counts["files"] += 1
            try:
                weights = load(damaged)
                same = len(weights) == len(reference) and all(
                    np.array_equal(a, b) for a, b in zip(weights, reference))
                counts["loaded_intact" if same else "loaded_different"] += 1
            except ValueError as exc:
                counts["value_error_naming_file" if "damaged.npz" in str(exc) else "escaped"] += 1
            except Exception as exc:  # noqa: BLE001 - an escape is what the probe counts
                counts["escaped"] += 1
                print(f"escaped: {type(exc).__name__}: {exc}", file=sys.stderr)
    return counts


_SAVER = """
import sys
import deepkern as dk
from deepkern.keras import layers, models
path, kind = sys.argv[1], sys.argv[2]
dk.manual_seed(0)
if kind == "checkpoint":
    model = dk.models.MLP(784, (256, 256), 10)
    opt = dk.optim.Adam(model.parameters())
    print("saving", flush=True)
    while True:
        dk.train.save(model, path, optimizer=opt)
else:
    model = models.Sequential([layers.Dense(256, activation="relu", input_shape=(784,)),
                               layers.Dense(256, activation="relu"), layers.Dense(10, activation="softmax")])
    model.compile(optimizer="adam", loss="sparse_categorical_crossentropy")
    print("saving", flush=True)
    while True:
        model.save(path)
"""


def probe_kills(folder: Path, rounds: int) -> dict:
    env = dict(os.environ, PYTHONPATH=str(ROOT / "python"))
    rng = np.random.default_rng(2)
    counts = {"rounds": rounds, "temporaries_seen_after_kill": 0, "target_unloadable": 0,
              "temporaries_left_after_next_save": 0}
    for i in range(rounds):
        kind = "checkpoint" if i % 2 == 0 else "keras"
        path = folder / f"{kind}.npz"
        child = subprocess.Popen([sys.executable, "-c", _SAVER, str(path), kind], env=env,
                                 stdout=subprocess.PIPE, text=True)
        child.stdout.readline()                       # in the save loop now
        time.sleep(float(rng.random()) * 0.4)         # a save takes tens of milliseconds
        child.send_signal(signal.SIGKILL)
        child.wait()
        child.stdout.close()
        counts["temporaries_seen_after_kill"] += sum(1 for p in folder.iterdir() if p.name.endswith(_files.TEMP_SUFFIX))
        if path.exists():
            try:
                if kind == "checkpoint":
                    model = dk.models.MLP(784, (256, 256), 10)
                    train.load(model, path, optimizer=dk.optim.Adam(model.parameters()))
                else:
                    models.load_model(path)
            except ValueError:
                counts["target_unloadable"] += 1
    # the next save to each target cleans up after the killed ones
    train.save(dk.models.MLP(784, (256, 256), 10), folder / "checkpoint.npz")
    helpers = _test_helpers()
    helpers._keras_mlp().save(folder / "keras.npz")
    counts["temporaries_left_after_next_save"] = sum(
        1 for p in folder.iterdir() if p.name.endswith(_files.TEMP_SUFFIX))
    return counts


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--kills", type=int, default=50, help="kill -9 rounds")
    parser.add_argument("--flips", type=int, default=2000, help="random byte flips per file kind")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        print("damaged files:", probe_damaged(Path(tmp), args.flips))
    with tempfile.TemporaryDirectory() as tmp:
        print("kill -9 during saves:", probe_kills(Path(tmp), args.kills))
    return 0


if __name__ == "__main__":
    sys.exit(main())
