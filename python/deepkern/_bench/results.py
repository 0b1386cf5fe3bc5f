"""What a benchmark run measured: per-call timings, table rows, training rates."""
from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Optional

from .cases import Case


@dataclass
class Timing:
    """Seconds per call over ``repeats`` samples of ``inner`` calls each: the median and the
    best sample. On a machine shared with other work the best is the steadier estimate of
    what the code can do: a descheduled thread stalls a parallel region for a whole time slice."""
    median_s: float
    best_s: float
    repeats: int
    inner: int

    def value(self, stat: str = "median") -> float:
        return self.best_s if stat == "min" else self.median_s


@dataclass
class Row:
    case: Case
    times: Dict[str, Timing] = field(default_factory=dict)
    stat: str = "median"            # which Timing value the table reports: "median" or "min"

    def seconds(self, impl: str) -> Optional[float]:
        t = self.times.get(impl)
        return t.value(self.stat) if t else None

    def rate(self, impl: str = "deepkern") -> Optional[float]:
        t = self.seconds(impl)
        return self.case.work / t / 1e9 if t else None

    def ratio(self, peer: str) -> Optional[float]:
        """peer time / deepkern time: > 1 means deepkern is faster."""
        ours, theirs = self.seconds("deepkern"), self.seconds(peer)
        return None if ours is None or theirs is None else theirs / ours


@dataclass
class TrainResult:
    model: str
    batch: int
    samples_per_s: Dict[str, float]
