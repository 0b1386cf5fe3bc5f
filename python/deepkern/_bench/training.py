"""Training samples/s of the seed MLP and CNN: deepkern, NumPy and PyTorch."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .cases import BenchError, MismatchError
from . import numpy_peer as npk
from .results import TrainResult
from .timing import Settings, settle, time_call


# ---------------------------------------------------------------------------- training
# The benchmarked networks: the seed MLP and CNN (MNIST), and seed 000's first model (150x150
# RGB images, 4 convolutions, 2 classes); input shape (no batch axis), classes, usual batch.
SEED_NETS: Dict[str, Tuple[Tuple[int, ...], int, int]] = {
    "mlp": ((784,), 10, 100), "cnn": ((1, 28, 28), 10, 128), "cnn150": ((3, 150, 150), 2, 32)}


def _seed_layers(nn: Any, kind: str) -> List[Any]:
    """The network ``kind`` (a SEED_NETS key) as a layer list, for any framework with PyTorch-style nn."""
    if kind == "mlp":
        return [nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)]
    if kind == "cnn":
        return [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
                nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10)]
    if kind != "cnn150":
        raise ValueError(f"network: expected one of {', '.join(SEED_NETS)}, got {kind!r}")
    layers: List[Any] = []
    for c_in, c_out in ((3, 32), (32, 64), (64, 64), (64, 64)):   # 150 -> 74 -> 36 -> 17 -> 7
        layers += [nn.Conv2d(c_in, c_out, 3), nn.ReLU(), nn.MaxPool2d(2)]
    return layers + [nn.Flatten(), nn.Linear(64 * 7 * 7, 64), nn.ReLU(), nn.Linear(64, 2)]


def train_data(kind: str, batch: int, n_batches: int = 4) -> List[Tuple[np.ndarray, np.ndarray]]:
    """A few fixed batches of network ``kind``'s input shape (uniform pixels, int64 labels)."""
    rng = np.random.default_rng(1)
    shape, classes, _ = SEED_NETS[kind]
    return [(rng.random((batch,) + shape, dtype=np.float32), rng.integers(0, classes, batch).astype(np.int64))
            for _ in range(n_batches)]


def deepkern_train_step(kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """step(x, labels) -> loss: one Adam step of the seed network on deepkern's nn/optim."""
    from .. import nn, optim
    from ..autograd import Tensor

    model = nn.Sequential(*_seed_layers(nn, kind))
    loss_fn = nn.CrossEntropyLoss()
    opt = optim.Adam(model.parameters(), lr=1e-3)

    def step(x: np.ndarray, y: np.ndarray) -> float:
        opt.zero_grad()
        loss = loss_fn(model(Tensor(x)), y)
        loss.backward()
        opt.step()
        return float(np.asarray(loss.data))
    return step


def torch_train_step(torch: Any, kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """step(x, labels) -> loss: the same network and optimizer in PyTorch (CPU)."""
    model = torch.nn.Sequential(*_seed_layers(torch.nn, kind))
    loss_fn = torch.nn.CrossEntropyLoss()
    opt = torch.optim.Adam(model.parameters(), lr=1e-3)

    def step(x: np.ndarray, y: np.ndarray) -> float:
        opt.zero_grad()
        loss = loss_fn(model(torch.from_numpy(x)), torch.from_numpy(y))
        loss.backward()
        opt.step()
        return loss.item()
    return step


def numpy_train_step(kind: str) -> Callable[[np.ndarray, np.ndarray], float]:
    """step(x, labels) -> loss: the layered NumPy trainer in deepkern._bench_numpy."""
    net = npk.SEED_NETS[kind]()
    return net.train_step


def run_training(torch: Any, settings: Settings, progress: Optional[Callable[[str], None]] = None
                 ) -> List[TrainResult]:
    """Samples/s of one Adam training step for the seed MLP (batch 100) and CNN (batch 128)."""
    results = []
    budget = {"full": 3.0, "quick": 0.8, "smoke": 0.0}[settings.profile]
    for kind, batch in (("mlp", 100), ("cnn", 128)):
        if settings.profile == "smoke":
            batch = 8
        data = train_data(kind, batch)
        steps: Dict[str, Callable[[np.ndarray, np.ndarray], float]] = {}
        try:
            steps["deepkern"] = deepkern_train_step(kind)
        except BenchError as exc:
            if progress:
                progress(f"  deepkern training skipped: {exc}")
        steps["numpy"] = numpy_train_step(kind)
        if torch is not None:
            steps["torch"] = torch_train_step(torch, kind)
        rates = {}
        for name, step in steps.items():
            counter = iter(range(1 << 62))

            def one() -> None:
                x, y = data[next(counter) % len(data)]
                loss = step(x, y)
                if not np.isfinite(loss):
                    raise MismatchError(f"training {kind}: {name} produced a non-finite loss")
            settle(settings)   # the previous framework's spinning pool goes idle first
            t = time_call(one, lambda: None, budget, settings.min_repeats, 200, min_sample_s=0.0)
            rates[name] = batch / t.value(settings.stat)
        results.append(TrainResult(kind, batch, rates))
        if progress:
            progress("  " + ", ".join(f"{kind} {n}: {r:,.0f} samples/s" for n, r in rates.items()))
    return results


