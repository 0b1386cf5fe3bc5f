"""Training samples/s of the seed MLP and CNN: deepkern, NumPy and PyTorch."""
from __future__ import annotations

from typing import Any, Callable, Dict, List, Optional, Tuple

import numpy as np

from .cases import BenchError, MismatchError
from . import numpy_peer as npk
from .results import TrainResult
from .timing import Settings, settle, time_call


# ---------------------------------------------------------------------------- training
def _seed_layers(nn: Any, kind: str) -> List[Any]:
    """The seed network as a layer list, for any framework with PyTorch-style nn."""
    if kind == "mlp":
        return [nn.Linear(784, 256), nn.ReLU(), nn.Linear(256, 256), nn.ReLU(), nn.Linear(256, 10)]
    return [nn.Conv2d(1, 32, 3), nn.ReLU(), nn.MaxPool2d(2), nn.Conv2d(32, 64, 3), nn.ReLU(), nn.MaxPool2d(2),
            nn.Flatten(), nn.Linear(1600, 64), nn.ReLU(), nn.Linear(64, 10)]


def train_data(kind: str, batch: int, n_batches: int = 4) -> List[Tuple[np.ndarray, np.ndarray]]:
    """A few fixed MNIST-shaped batches (uniform pixels, int64 labels) for "mlp" or "cnn"."""
    rng = np.random.default_rng(1)
    shape = (batch, 784) if kind == "mlp" else (batch, 1, 28, 28)
    return [(rng.random(shape, dtype=np.float32), rng.integers(0, 10, batch).astype(np.int64))
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


