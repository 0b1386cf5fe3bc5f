"""``deepkern bench`` on tiny shapes: outputs are written and the agreement check bites.

No timing value is asserted anywhere (timings depend on the machine and its load).
"""
from __future__ import annotations

import numpy as np
import pytest

from deepkern import bench, cli
from deepkern._bench import numpy_peer as npk
from deepkern import ops

from .conftest import randn


def test_bench_smoke_writes_table_markdown_and_png(tmp_path, capsys):
    status = cli.main(["bench", "--smoke", "--no-torch", "--out-dir", str(tmp_path)])
    assert status == 0
    printed = capsys.readouterr().out
    md = (tmp_path / "kernels.md").read_text(encoding="utf-8")
    for op in ("matmul", "conv2d bwd", "max_pool2d fwd", "softmax bwd", "cross_entropy fwd", "adam_update"):
        assert op in printed
        assert f"| {op} |" in md
    assert "| cpu |" in md and "| threads |" in md
    png = (tmp_path / "kernels.png").read_bytes()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"


def test_bench_only_filters_rows_and_repeat_combines_runs(tmp_path, capsys):
    args = ["bench", "--smoke", "--no-torch", "--only", "relu", "--repeat", "2", "--out-dir", str(tmp_path)]
    assert cli.main(args) == 0
    md = (tmp_path / "kernels.md").read_text(encoding="utf-8")
    assert "| relu fwd |" in md and "| matmul |" not in md
    assert "| runs | 2 |" in md
    assert "medians over 2 runs" in capsys.readouterr().out
    assert cli.main(["bench", "--smoke", "--repeat", "0", "--out-dir", str(tmp_path)]) == 2


def test_bench_best_sample_statistic(tmp_path):
    args = ["bench", "--smoke", "--no-torch", "--only", "softmax", "--stat", "min", "--out-dir", str(tmp_path)]
    assert cli.main(args) == 0
    assert "| statistic | best sample |" in (tmp_path / "kernels.md").read_text(encoding="utf-8")
    assert "| statistic | median of samples |" in (tmp_path / "kernels-median.md").read_text(encoding="utf-8")


def test_timing_statistics():
    row = bench.Row(bench.kernel_cases("smoke")[0], stat="min")
    row.times["deepkern"] = bench.Timing(median_s=2.0, best_s=1.0, repeats=3, inner=1)
    row.times["numpy"] = bench.Timing(median_s=3.0, best_s=3.0, repeats=3, inner=1)
    assert row.ratio("numpy") == 3.0
    row.stat = "median"
    assert row.ratio("numpy") == 1.5
    assert row.ratio("torch") is None


def test_bench_with_torch_when_installed(tmp_path):
    pytest.importorskip("torch")
    assert cli.main(["bench", "--smoke", "--only", "pool", "--threads", "1", "--out-dir", str(tmp_path)]) == 0
    md = (tmp_path / "kernels.md").read_text(encoding="utf-8")
    row = next(line for line in md.splitlines() if line.startswith("| max_pool2d bwd |"))
    assert row.split("|")[7].strip() != "—"   # the torch time column is filled


def test_check_agree_rejects_a_wrong_peer():
    ours = np.arange(12, dtype=np.float32).reshape(3, 4)
    bench.check_agree("case", "peer", ours, ours * (1 + 1e-5))   # within tolerance
    wrong = ours.copy()
    wrong[2, 1] += 0.5
    with pytest.raises(bench.MismatchError, match="peer result 0 disagrees"):
        bench.check_agree("case", "peer", ours, wrong)
    with pytest.raises(bench.MismatchError, match="shape"):
        bench.check_agree("case", "peer", ours, ours.T)
    with pytest.raises(bench.MismatchError, match="returned 1 arrays"):
        bench.check_agree("case", "peer", (ours, ours), ours)


def test_table_stops_on_a_disagreeing_peer():
    def build(dev, torch):
        x = np.ones((4, 5), np.float32)
        return {"deepkern": lambda: ops.relu(x), "numpy": lambda: np.zeros_like(x)}
    case = bench.Case("broken", "4x5", "GB/s", 160.0, build)
    with pytest.raises(bench.MismatchError, match="broken 4x5: numpy"):
        bench.run_kernel_table([case], bench.Device("cpu"), None, bench.Settings.for_profile("smoke"))


def test_cli_reports_missing_gpu_backend(tmp_path, capsys):
    from .conftest import gpu_available
    if gpu_available():
        pytest.skip("a GPU backend is usable here")
    assert cli.main(["bench", "--smoke", "--device", "cuda", "--out-dir", str(tmp_path)]) == 2
    assert "no usable GPU backend" in capsys.readouterr().err


def test_unknown_profile_is_a_value_error():
    with pytest.raises(ValueError, match="profile"):
        bench.kernel_cases("huge")


@pytest.mark.parametrize("shape", [(1, 1, 2, 2), (2, 3, 7, 5), (3, 2, 6, 9)])
def test_numpy_pool_peers_match_deepkern(rng, shape):
    # the peers are compared with deepkern inside the table; check them directly on odd sizes too
    x = randn(rng, *shape)
    y = ops.max_pool2d(x, 2)
    g = randn(rng, *y.shape)
    np.testing.assert_allclose(npk.max_pool2d(x), y, rtol=1e-6)
    np.testing.assert_allclose(npk.max_pool2d_backward(g, x), ops.max_pool2d_backward(g, x, 2), rtol=1e-6)
    np.testing.assert_allclose(npk.avg_pool2d(x), ops.avg_pool2d(x, 2), rtol=1e-5, atol=1e-6)
    np.testing.assert_allclose(npk.avg_pool2d_backward(g, x), ops.avg_pool2d_backward(g, x, 2), rtol=1e-6)


def test_numpy_conv_peer_matches_deepkern(rng):
    x, w, b = randn(rng, 2, 3, 7, 6), randn(rng, 5, 3, 3, 2), randn(rng, 5)
    y = ops.conv2d(x, w, b)
    np.testing.assert_allclose(npk.conv2d(x, w, b), y, rtol=1e-4, atol=1e-4)
    g = randn(rng, *y.shape)
    for ours, peer in zip(ops.conv2d_backward(g, x, w, bias=True), npk.conv2d_backward(g, x, w)):
        np.testing.assert_allclose(peer, ours, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("kind", ["mlp", "cnn"])
def test_numpy_trainer_loss_decreases(kind):
    net = npk.SEED_NETS[kind](seed=3)
    data = bench.train_data(kind, 16, n_batches=1)
    x, y = data[0]
    first = net.train_step(x, y)
    for _ in range(15):
        last = net.train_step(x, y)
    assert np.isfinite(first) and last < first   # Adam fits one fixed batch


# ---------------------------------------------------------------------------- the NumPy peer's OpenBLAS
def test_bench_header_names_the_openblas_kernel(tmp_path):
    from deepkern._bench import blas_env
    assert cli.main(["bench", "--smoke", "--no-torch", "--only", "relu", "--out-dir", str(tmp_path)]) == 0
    md = (tmp_path / "kernels.md").read_text(encoding="utf-8")
    assert "| OpenBLAS overrides |" in md
    kernels = blas_env.openblas_kernels()
    if kernels:   # NumPy on OpenBLAS (the wheels): the header names the kernel threadpoolctl saw
        assert f"| numpy OpenBLAS kernel | {', '.join(kernels)} |" in md


def test_clean_env_drops_only_the_openblas_overrides():
    from deepkern._bench import blas_env
    env = {"OPENBLAS_CORETYPE": "Haswell", "OPENBLAS_L2_SIZE": "1048576", "OPENBLAS_NUM_THREADS": "2", "A": "b"}
    out = blas_env.clean_env(env)
    assert "OPENBLAS_CORETYPE" not in out and "OPENBLAS_L2_SIZE" not in out
    assert out["OPENBLAS_NUM_THREADS"] == "2" and out["A"] == "b"
    assert out[blas_env.CHILD_MARK] == "OPENBLAS_CORETYPE=Haswell,OPENBLAS_L2_SIZE=1048576"
    assert blas_env.overrides(out) == {}


def test_bench_reruns_itself_without_openblas_coretype(tmp_path, monkeypatch, capsys):
    """With OPENBLAS_CORETYPE set, bench runs again in a child without it: the child's header
    (passed through) says the override was dropped, and only this run's environment lost it."""
    import os
    from deepkern._bench import blas_env
    monkeypatch.setenv("OPENBLAS_CORETYPE", "Haswell")
    monkeypatch.delenv(blas_env.CHILD_MARK, raising=False)
    pkg_root = os.path.dirname(os.path.dirname(os.path.abspath(bench.__file__)))
    monkeypatch.setenv("PYTHONPATH", pkg_root + os.pathsep + os.environ.get("PYTHONPATH", ""))
    args = ["bench", "--smoke", "--no-torch", "--only", "relu fwd", "--out-dir", str(tmp_path)]
    assert cli.main(args) == 0
    printed = capsys.readouterr().out
    assert "running again without OPENBLAS_CORETYPE" in printed
    assert "OpenBLAS overrides: dropped for this run (OPENBLAS_CORETYPE=Haswell)" in printed
    assert "| OpenBLAS overrides | dropped for this run (OPENBLAS_CORETYPE=Haswell) |" in (
        tmp_path / "kernels.md").read_text(encoding="utf-8")
    assert os.environ["OPENBLAS_CORETYPE"] == "Haswell"   # this process keeps its environment
