"""The ``deepkern`` command: argparse and the entry points of info, train and bench.

Each subcommand imports its module only when it runs: ``deepkern info`` never loads the models,
matplotlib or torch."""
from __future__ import annotations

import argparse
import json
import sys
from typing import List, Optional


def _cmd_info(args: argparse.Namespace) -> int:
    from .._info import format_info, info
    report = info()
    print(json.dumps(report, indent=2, default=str) if args.json else format_info(report))
    return 0


def _cmd_bench(args: argparse.Namespace) -> int:
    from .bench import run  # lazy: NumPy peers, matplotlib and torch load only here
    return run(args)


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
    p.add_argument("--repeat", type=int, default=1,
                   help="run the table this many times and report each row's median over the runs")
    p.add_argument("--stat", choices=("median", "min"), default="median",
                   help="report each call's median time (default) or its best sample (steadier on a busy machine)")
    p.add_argument("--smoke", action="store_true", help=argparse.SUPPRESS)  # tiny shapes, for the tests
    p.set_defaults(func=_cmd_bench)


def _cmd_train(args: argparse.Namespace) -> int:
    from .train import run  # lazy: the models, tqdm and matplotlib load only here
    return run(args)


def _add_train_parser(sub) -> None:
    p = sub.add_parser("train", help="train a seed network (perceptron, MLP, CNN) on the embedded data",
                       description="Train a seed network, print its test accuracy and training "
                                   "samples/s, save a checkpoint and a plot of its history. "
                                   "Unset options take per-model defaults.")
    p.add_argument("--model", default="cnn", choices=("perceptron", "mlp", "cnn"),
                   help="network to train (default cnn; perceptron learns the OR gate)")
    p.add_argument("--dataset", default=None, choices=("mnist5k", "digits", "or"),
                   help="mnist5k (real MNIST, 4,000/1,000), digits (sklearn 8x8) or or "
                        "(default: or for the perceptron, else mnist5k)")
    p.add_argument("--epochs", type=int, default=None, help="passes over the training data")
    p.add_argument("--batch-size", type=int, default=None, help="samples per update")
    p.add_argument("--lr", type=float, default=None, help="learning rate")
    p.add_argument("--optimizer", default=None, choices=("sgd", "adam", "rmsprop"),
                   help="default adam (sgd for the perceptron)")
    p.add_argument("--validation-split", type=float, default=None,
                   help="fraction of the training data held out for validation curves")
    p.add_argument("--patience", type=int, default=None,
                   help="early stopping: end after N epochs without a better val_loss and keep the best "
                        "epoch's weights (default 2; 0 turns it off; needs a validation split)")
    p.add_argument("--limit", type=int, default=None, help="train on only the first N training samples")
    p.add_argument("--device", default="cpu", choices=("cpu", "cuda"), help="where to train")
    p.add_argument("--backend", default=None, choices=("cpu", "numba", "numpy", "cuda", "cupy"),
                   help="force a kernel backend (default: the fastest available)")
    p.add_argument("--precision", default="fp32", choices=("fp32", "bf16"),
                   help="matmul and conv2d products in fp32 or bf16 (AVX512-BF16 CPUs only; weights stay fp32)")
    p.add_argument("--seed", type=int, default=0, help="seed of the split, the weights and the shuffling")
    p.add_argument("--save", default=None, metavar="PATH",
                   help="checkpoint path (default ./deepkern-<model>.npz)")
    p.add_argument("--plot", default=None, metavar="PATH",
                   help="history plot path (default ./deepkern-<model>-history.png)")
    p.add_argument("--no-progress", action="store_true", help="no progress bar (one line per epoch instead)")
    p.set_defaults(func=_cmd_train)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="deepkern", description="Compiled-kernel deep learning.")
    sub = parser.add_subparsers(dest="command", required=True)
    p_info = sub.add_parser("info", help="show built backends, CPU features and GPUs")
    p_info.add_argument("--json", action="store_true", help="print the report as JSON")
    p_info.set_defaults(func=_cmd_info)
    _add_bench_parser(sub)
    _add_train_parser(sub)
    # train: added by the training layer; bench: added by the benchmarks (each imports lazily)
    return parser


def main(argv: Optional[List[str]] = None) -> int:
    parser = build_parser()
    args = parser.parse_args(argv)
    args.argv = list(sys.argv[1:] if argv is None else argv)   # bench may run itself again with them
    return int(args.func(args) or 0)
