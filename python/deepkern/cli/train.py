"""``deepkern train``: train a seed network on the embedded data, report, save, plot."""
from __future__ import annotations

import sys
import time
from typing import Any, Dict, List

import numpy as np

from .. import data, distributed, models
from .._precision import get_precision, set_precision
from ..backends import set_backend
from ..nn.init import manual_seed
from ..train import Callback, EarlyStopping, EpochLogger, evaluate, fit, plot_history, predict, save
from ..train.callbacks import _progress_enabled
from ..train.loop import _resolve_optimizer

#: Per-model defaults of ``deepkern train``, chosen so the default run meets the accuracy
#: targets on the embedded data. The MLP and the CNN hold out 10% for validation and stop
#: early on val_loss (patience 2), keeping the best epoch's weights: on mnist5k the CNN's
#: validation loss bottoms out after about 3 epochs of Adam and the MLP's after about 8.
CLI_DEFAULTS: Dict[str, Dict[str, Any]] = {
    "perceptron": {"dataset": "or", "epochs": 1000, "batch_size": 4, "optimizer": "sgd", "lr": 2.0,
                   "loss": "mse", "validation_split": 0.0, "patience": 0},
    "mlp": {"dataset": "mnist5k", "epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": None,
            "loss": "cross_entropy", "validation_split": 0.1, "patience": 2},
    "cnn": {"dataset": "mnist5k", "epochs": 10, "batch_size": 32, "optimizer": "adam", "lr": None,
            "loss": "cross_entropy", "validation_split": 0.1, "patience": 2},
}


def _build_cli_model(name: str, x_train: np.ndarray, num_classes: int) -> Any:
    if name == "perceptron":
        return models.Perceptron(x_train.shape[1])
    if name == "mlp":
        return models.MLP(int(np.prod(x_train.shape[1:])), (256, 256), num_classes)
    return models.CNN(in_channels=x_train.shape[1], num_classes=num_classes, image_size=x_train.shape[2:])


def run(args: Any) -> int:
    """Run ``deepkern train`` from parsed arguments (see ``cli.build_parser``); returns the exit code.

    Under ``mpiexec -n N`` every rank trains its shard and rank 0 alone prints, saves and plots.
    The precision it sets (--precision) lasts for this run only."""
    before = get_precision()
    try:
        with distributed.root_output() as root:
            return _train(args, root)
    finally:
        set_precision(before)


def _train(args: Any, root: bool) -> int:
    def fail(message: str, code: int = 2) -> int:
        print(f"deepkern train: error: {message}", file=sys.stderr)
        return code

    model_name = args.model
    defaults = CLI_DEFAULTS[model_name]
    dataset = args.dataset or defaults["dataset"]
    if model_name == "perceptron" and dataset != "or":
        return fail(f"the perceptron is a single neuron for the OR gate; it cannot learn {dataset!r} "
                    f"(use --model mlp or --model cnn, or --dataset or)")
    if model_name != "perceptron" and dataset == "or":
        return fail("the OR gate is the perceptron's dataset; use --model perceptron")
    if args.patience is not None and args.patience < 0:
        return fail(f"--patience must be >= 0, got {args.patience}")
    for option in ("epochs", "batch_size", "limit"):
        value = getattr(args, option)
        if value is not None and value < 1:
            return fail(f"--{option.replace('_', '-')} must be >= 1, got {value}")
    if args.seed < 0:
        return fail(f"--seed must be >= 0, got {args.seed}")
    validation_split = defaults["validation_split"] if args.validation_split is None else args.validation_split
    if not 0.0 <= validation_split < 1.0:
        return fail(f"--validation-split must be in [0, 1), got {validation_split}")
    if args.lr is not None and not args.lr > 0:
        return fail(f"--lr must be > 0, got {args.lr}")
    try:
        if args.backend:
            set_backend(args.backend)
        set_precision(args.precision)   # for the whole run: training and the test evaluation
    except (RuntimeError, ValueError) as exc:
        return fail(str(exc))

    epochs = args.epochs or defaults["epochs"]
    batch_size = args.batch_size or defaults["batch_size"]
    optimizer = args.optimizer or defaults["optimizer"]
    lr = args.lr if args.lr is not None else (defaults["lr"] if optimizer == defaults["optimizer"] else None)
    save_path = args.save or f"deepkern-{model_name}.npz"
    plot_path = args.plot or f"deepkern-{model_name}-history.png"

    x_train, y_train, x_test, y_test = data.load_dataset(dataset, seed=args.seed)
    if args.limit is not None:
        x_train, y_train = x_train[:args.limit], y_train[:args.limit]
    manual_seed(args.seed)
    try:
        model = _build_cli_model(model_name, x_train, int(max(y_train.max(), y_test.max())) + 1)
    except ValueError as exc:
        return fail(f"--model {model_name} cannot take the {dataset} images "
                    f"{tuple(x_train.shape[1:])}: {exc}. Use --model mlp for {dataset}.")

    # A per-epoch bar for a 1000-step perceptron would be noise: it reports once at the end.
    quiet_epochs = model_name == "perceptron"
    progress = False if (args.no_progress or quiet_epochs) else None
    callbacks: List[Callback] = []
    patience = defaults["patience"] if args.patience is None else args.patience
    stopper = None
    if patience > 0 and validation_split > 0:
        stopper = EarlyStopping("val_loss", patience=patience, restore_best_weights=True)
        callbacks.append(stopper)
    if not quiet_epochs and not _progress_enabled(progress):
        callbacks.append(EpochLogger())
    # built here rather than inside fit so that its state goes into the checkpoint
    opt = _resolve_optimizer(optimizer, model, lr)
    ranks = distributed.world_size()
    per_rank = (f" per rank ({batch_size * ranks} in all), data parallel on {distributed.describe()}"
                if ranks > 1 else "")
    print(f"training {type(model).__name__} ({sum(p.size for p in model.parameters()):,} parameters) "
          f"on {dataset}: {len(x_train)} samples ({validation_split:.0%} held out for validation), "
          f"{epochs} epochs, batch {batch_size}{per_rank}, "
          f"{type(opt).__name__} lr={opt.lr:g}, device {args.device}, precision {args.precision}")
    started = time.perf_counter()
    try:
        history = fit(model, x_train, y_train, epochs=epochs, batch_size=batch_size, optimizer=opt,
                      loss=defaults["loss"], validation_split=validation_split, callbacks=callbacks,
                      seed=args.seed, progress=progress, device=args.device)
    except RuntimeError as exc:  # e.g. device cuda without a GPU
        return fail(str(exc), code=1)
    wall = time.perf_counter() - started
    if stopper is not None and stopper.best_epoch is not None and stopper.best_epoch != history.epoch[-1]:
        how = "stopped early" if len(history.epoch) < epochs else "finished"
        print(f"{how} after epoch {history.epoch[-1] + 1}; kept the weights of epoch "
              f"{stopper.best_epoch + 1} (best val_loss {stopper.best:.4f})")
    test_loss, test_acc = evaluate(model, x_test, y_test, loss=defaults["loss"])
    trained = history.params["samples"] * len(history.epoch)
    train_seconds = sum(history.params["samples"] / r for r in history.samples_per_second if r > 0)

    if model_name == "perceptron":
        outputs = predict(model, x_test)[:, 0]
        for inputs, out, target in zip(x_test, outputs, y_test):
            print(f"  OR{tuple(int(v) for v in inputs)} = {int(out >= 0.5)}  (output {out:.3f}, expected {target})")
    held_out = "truth table" if dataset == "or" else f"{len(x_test)} held-out samples"
    print(f"test accuracy: {test_acc:.4f} ({held_out}), test loss {test_loss:.4f}")
    print(f"training: {trained / train_seconds:,.0f} samples/s over {len(history.epoch)} epochs "
          f"({wall:.1f} s in all){f' on {ranks} ranks' if ranks > 1 else ''}")
    if root:  # the ranks hold the same weights: one writes
        save(model, save_path, optimizer=opt)
        print(f"checkpoint: {save_path}")
        plot_history(history, plot_path, title=f"{type(model).__name__} on {dataset}")
        print(f"history plot: {plot_path}")
    return 0
