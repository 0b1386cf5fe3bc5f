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


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepkern", description="Compiled-kernel deep learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="show built backends, CPU features and GPUs")
    p_info.add_argument("--json", action="store_true", help="print the report as JSON")
    p_info.set_defaults(func=_cmd_info)
    # train: added by the training layer; bench: added by the benchmarks (each imports lazily)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    return int(args.func(args) or 0)


if __name__ == "__main__":
    sys.exit(main())
