"""deepkern bench's contention check (deepkern._contention): busy load or unsteady timings are
flagged with a visible warning, a quiet steady run is not."""
from __future__ import annotations

from types import SimpleNamespace

from deepkern import _contention


def _row(key: str, **times):
    case = SimpleNamespace(key=key)
    return SimpleNamespace(case=case, times={impl: SimpleNamespace(median_s=m, best_s=b)
                                             for impl, (m, b) in times.items()})


def _steady_runs(n_runs: int = 2):
    return [[_row("matmul 64", deepkern=(1.0e-3, 0.95e-3), torch=(2.0e-3, 1.9e-3)),
             _row("relu 1M", deepkern=(5.0e-4, 4.8e-4), torch=(6.0e-4, 5.9e-4))] for _ in range(n_runs)]


def test_quiet_steady_run_has_no_warning():
    c = _contention.assess(_steady_runs(), cores=2, threads=2, load_before=0.2, load_after=2.3)
    assert c.timings == 4 and c.noisy == []
    assert c.warnings() == []


def test_busy_load_is_flagged():
    # 3 other busy processes on 2 cores: load 3 before the benchmark starts
    c = _contention.assess(_steady_runs(), cores=2, threads=2, load_before=3.0, load_after=5.0)
    (warning,) = c.warnings()
    assert "contended machine" in warning and "3.0" in warning
    # the benchmark's own threads do not count as contention
    assert _contention.assess(_steady_runs(), 2, 2, load_before=0.0, load_after=2.9).warnings() == []


def test_sample_spread_is_flagged():
    runs = [[_row("matmul 64", deepkern=(9.0e-3, 1.0e-3), torch=(2.0e-3, 1.9e-3))]]
    c = _contention.assess(runs, cores=2, threads=2, load_before=0.1, load_after=0.1)
    assert c.noisy == ["matmul 64 deepkern (9.0x)"]
    (warning,) = c.warnings()
    assert "1 of 2" in warning and "unsteady" in warning


def test_run_to_run_spread_is_flagged():
    runs = _steady_runs(2)
    runs[1][1] = _row("relu 1M", deepkern=(2.0e-3, 1.9e-3), torch=(6.0e-4, 5.9e-4))
    c = _contention.assess(runs, cores=2, threads=2, load_before=0.1, load_after=0.1)
    assert [n.split(" (")[0] for n in c.noisy] == ["relu 1M deepkern"]
    assert any("unsteady" in w for w in c.warnings())


def test_unknown_load_is_not_an_error():
    quiet = _contention.Contention(cores=2, threads=1, load_before=None, load_after=None)
    assert quiet.other_load() is None
    assert quiet.warnings() == []
