"""The ``deepkern`` command: info (and train, bench)."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


def _cmd_info(args: argparse.Namespace) -> int:
    from ._info import format_info, info
    report = info()
    print(json.dumps(report, indent=2, default=str) if args.json else format_info(report))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import cli_entry  # lazy: NumPy peers, matplotlib and torch load only here
    return cli_entry(args)


def _add_bench_parser(sub) -> None:
    p = sub.add_parser("bench", help="time the kernels (and training) against NumPy and PyTorch")
    p.add_argument("--quick", action="store_true", help="fewer shapes and repeats (about 20 s)")
    p.add_argument("--train", action="store_true",
                   help="also measure training samples/s of the seed MLP and CNN (Adam)")
    p.add_argument("--threads", type=int, default=None,
                   help="threads for deepkern, NumPy's BLAS and PyTorch (default: all cores)")
    p.add_argument("--out-dir", default="deepkern-bench", help="where kernels.md and kernels.png go")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"),
                   help="array device (cuda needs a usable GPU backend)")
    p.add_argument("--no-torch", action="store_true", help="leave PyTorch out even when installed")
    p.add_argument("--only", default=None, help="run only the rows whose op name contains this text")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny shapes, for the tests
    p.set_defaults(func=_cmd_bench)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepkern", description="Compiled-kernel deep learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="show built backends, CPU features and GPUs")
    p_info.add_argument("--json", action="store_true", help="print the report as JSON")
    p_info.set_defaults(func=_cmd_info)
    _add_bench_parser(sub)
    # train: added by the training layer; bench: added by the benchmarks (each imports lazily)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
