"""The table as text and Markdown, and the bar chart of the ratios."""
from __future__ import annotations

from pathlib import Path
from typing import Dict, Optional, Sequence, Tuple

import numpy as np

from .results import Row, TrainResult


# ---------------------------------------------------------------------------- output
def _ms(seconds: Optional[float]) -> str:
    return "—" if seconds is None else f"{seconds * 1e3:.3f}"


def _x(r: Optional[float]) -> str:
    return "—" if r is None else f"{r:.2f}x"


TABLE_HEAD = ("op", "shape", "deepkern ms", "rate", "NumPy ms", "vs NumPy", "torch ms", "vs torch", "notes")


def _cells(row: Row) -> Tuple[str, ...]:
    rate = row.rate()
    notes = "; ".join(n for n in (f"NumPy: {row.case.numpy_note}" if row.case.numpy_note else "",
                                  f"torch: {row.case.torch_note}" if row.case.torch_note else "") if n)
    return (row.case.op, row.case.shape, _ms(row.seconds("deepkern")),
            "—" if rate is None else f"{rate:.1f} {row.case.unit}", _ms(row.seconds("numpy")),
            _x(row.ratio("numpy")), _ms(row.seconds("torch")), _x(row.ratio("torch")), notes)


def format_row(row: Row) -> str:
    c = _cells(row)
    return f"{c[0]:<20} {c[1]:<24} {c[2]:>10} {c[3]:>15} {c[4]:>10} {c[5]:>8} {c[6]:>10} {c[7]:>8}"


def format_table(rows: Sequence[Row]) -> str:
    head = (f"{'op':<20} {'shape':<24} {'deepkern ms':>10} {'rate':>15} {'NumPy ms':>10} {'vs NumPy':>8} "
            f"{'torch ms':>10} {'vs torch':>8}")
    return "\n".join([head, "-" * len(head)] + [format_row(r) for r in rows])


def markdown(rows: Sequence[Row], info: Dict[str, str], training: Sequence[TrainResult] = ()) -> str:
    """The kernel table (and training table) as Markdown, with the machine header."""
    out = ["# deepkern bench", "", "| | |", "|---|---|"]
    out += [f"| {k} | {v} |" for k, v in info.items()]
    out += ["", "Ratios are peer time / deepkern time (> 1: deepkern faster). Rates count the "
            "FLOPs (GFLOP/s) or the fewest bytes read + written (GB/s). Times per call after a warm-up "
            f"({info.get('statistic', 'median of samples')}).", ""]
    if rows:
        out += ["| " + " | ".join(TABLE_HEAD) + " |", "|" + "---|" * len(TABLE_HEAD)]
        out += ["| " + " | ".join(_cells(r)) + " |" for r in rows]
    if training:
        out += ["", "## Training (samples/s, one Adam step per batch)", "",
                "| model | batch | deepkern | NumPy | torch | deepkern / NumPy | deepkern / torch |",
                "|---|---|---|---|---|---|---|"]
        for t in training:
            r = t.samples_per_s

            def fmt(name: str) -> str:
                return f"{r[name]:,.0f}" if name in r else "—"

            def rel(name: str) -> str:
                return f"{r['deepkern'] / r[name]:.2f}x" if "deepkern" in r and name in r else "—"
            out.append(f"| {t.model} | {t.batch} | {fmt('deepkern')} | {fmt('numpy')} | {fmt('torch')} | "
                       f"{rel('numpy')} | {rel('torch')} |")
    return "\n".join(out) + "\n"


def plot(rows: Sequence[Row], path: Path, title: str) -> None:
    """Horizontal bars of deepkern's speed-up over each peer, one group per row, log scale."""
    import matplotlib
    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [r.case.key for r in rows]
    fig, ax = plt.subplots(figsize=(10, 0.32 * len(rows) + 1.5))
    ypos = np.arange(len(rows))
    for offset, peer, color in ((-0.2, "numpy", "tab:blue"), (0.2, "torch", "tab:orange")):
        vals = [r.ratio(peer) or 0.0 for r in rows]
        if any(vals):
            ax.barh(ypos + offset, vals, height=0.4, color=color, label=f"vs {peer}")
    ax.axvline(1.0, color="black", linewidth=0.8)
    ax.set_xscale("log")
    ax.set_yticks(ypos)
    ax.set_yticklabels(labels, fontsize=7)
    ax.invert_yaxis()
    ax.set_xlabel("speed-up of deepkern (peer time / deepkern time)")
    ax.set_title(title, fontsize=9)
    ax.legend(loc="lower right")
    fig.tight_layout()
    fig.savefig(path, dpi=110)
    plt.close(fig)


