"""Is this benchmark run trustworthy? Flags measurements taken on a contended machine.

On a machine shared with other work, a multi-threaded kernel's wall time mostly measures how
long its threads waited for a core, and ratios between libraries swing by 10x from run to run.
``deepkern bench`` asks two questions and prints a visible warning when either says "busy":

- the load average: runnable tasks beyond what the benchmark itself adds, against the cores;
- the spread of the timings: a case whose median sample is far above its best sample, or whose
  runs (``--repeat``) disagree, was disturbed while it ran.
"""
from __future__ import annotations

import os
from dataclasses import dataclass, field
from typing import Any, List, Optional, Sequence

# Other work above half the cores (load average beyond the benchmark's own threads) disturbs
# multi-threaded timings; below it the scheduler usually finds an idle core.
LOAD_LIMIT = 0.5
# A median sample 1.5x the best one (or runs 1.5x apart) is not kernel-to-kernel variation
# (a quiet machine keeps both within ~10%): something else held the cores.
SPREAD_LIMIT = 1.5
# Warn on spread when at least this share of the timings is noisy.
NOISY_SHARE = 0.2


def load_average() -> Optional[float]:
    """The 1-minute load average (None where the OS has none)."""
    try:
        return os.getloadavg()[0]
    except (AttributeError, OSError):
        return None


@dataclass
class Contention:
    """What was seen around one benchmark: load before and after, and the noisy timings."""
    cores: int
    threads: int
    load_before: Optional[float]
    load_after: Optional[float]
    noisy: List[str] = field(default_factory=list)   # "case impl (spread)" for each noisy timing
    timings: int = 0

    def other_load(self) -> Optional[float]:
        """Load not explained by the benchmark: before it started, or after minus its threads."""
        seen = [x for x in (self.load_before,
                            None if self.load_after is None else self.load_after - self.threads) if x is not None]
        return max(seen) if seen else None

    def warnings(self) -> List[str]:
        out = []
        other = self.other_load()
        if other is not None and other > LOAD_LIMIT * self.cores:
            out.append(f"WARNING: contended machine: load average {other:.1f} besides this benchmark on "
                       f"{self.cores} cores; multi-thread timings and the ratios below mostly measure waits "
                       "for a core. Rerun on a quiet machine (or compare with --threads 1).")
        if self.timings and len(self.noisy) >= max(1, NOISY_SHARE * self.timings):
            shown = ", ".join(self.noisy[:4]) + (", ..." if len(self.noisy) > 4 else "")
            out.append(f"WARNING: unsteady timings: {len(self.noisy)} of {self.timings} spread more than "
                       f"{SPREAD_LIMIT:g}x between samples or runs ({shown}); treat their ratios as noise.")
        return out


def spread(times: Sequence[Any]) -> float:
    """Largest of median/best within a run and slowest/fastest median across runs, for one
    (case, implementation): ``times`` are its Timing objects (median_s, best_s), one per run."""
    worst = max((t.median_s / t.best_s for t in times if t.best_s > 0), default=1.0)
    medians = [t.median_s for t in times if t.median_s > 0]
    if len(medians) > 1:
        worst = max(worst, max(medians) / min(medians))
    return worst


def assess(runs: Sequence[Sequence[Any]], cores: int, threads: int, load_before: Optional[float],
           load_after: Optional[float] = None) -> Contention:
    """Contention over the kernel-table runs (each a list of rows with ``case.key`` and a
    ``times`` dict of implementation -> Timing); the same rows in every run."""
    found = Contention(cores, threads, load_before, load_after if load_after is not None else load_average())
    for rows in zip(*runs):
        for impl in rows[0].times:
            s = spread([r.times[impl] for r in rows if impl in r.times])
            found.timings += 1
            if s > SPREAD_LIMIT:
                found.noisy.append(f"{rows[0].case.key} {impl} ({s:.1f}x)")
    return found
