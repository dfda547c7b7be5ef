#!/usr/bin/env python3
"""Train the lecture's iris MLP with mini-batch SGD and write a run folder.

    python scripts/train_mlp.py                          # 2 features, 10 hidden, 200 epochs
    python scripts/train_mlp.py --features 4 --seeds 20  # also: mean/min test accuracy, 20 seeds

The run folder (``--out``, default ``runs/mlp-<timestamp>``) gets ``config.json``,
``metrics.json``, ``history.csv`` (one row per epoch), ``params.npz``, ``curves.png`` and
``decision_regions.png``. The seed sets the train/test split, the initialization and the
shuffling.
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
from pathlib import Path

import matplotlib
import numpy as np
import sklearn

import mlp
from mlp.plots import plot_curves, plot_decision_regions
from mlp.train.folders import (
    RunFolderError,
    ScriptParser,
    default_run_dir,
    read_json,
    save_arrays,
    write_json,
)
from mlp.validation import positive


def parse_args(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = ScriptParser(prog="train_mlp.py", description=__doc__.split("\n\n")[0], allow_abbrev=False)
    p.add_argument("--features", type=int, choices=(2, 4), default=2, help="iris features")
    p.add_argument("--hidden", type=int, default=10, help="hidden units m")
    p.add_argument("--lr", type=float, default=0.1, help="initial learning rate")
    p.add_argument(
        "--schedule",
        choices=("constant", "inverse"),
        default="inverse",
        help="learning rate: constant, or lr / (1 + t / decay_steps), decay_steps = steps / 10",
    )
    p.add_argument("--batch-size", type=int, default=16, help="mini-batch size (1 to n_train)")
    p.add_argument("--epochs", type=int, default=200)
    p.add_argument("--seed", type=int, default=0, help="split, initialization and shuffling")
    p.add_argument("--scale", type=float, default=None, help="init scale (default: N(0, 1))")
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/mlp-<time>)")
    p.add_argument(
        "--seeds", type=int, default=1, help="also evaluate seeds 0..N-1: mean/min test accuracy"
    )
    p.add_argument(
        "--checkpoint-every",
        type=int,
        default=20,
        help="epochs between checkpoints (checkpoint.npz in the run folder; default 20)",
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue RUN_DIR from its last checkpoint with the run's own options; --epochs is "
        "the new total (the learning-rate schedule stays the run's own)",
    )
    args = p.parse_args(argv)
    words = sys.argv[1:] if argv is None else argv
    flags = {w.split("=")[0] for w in words if w.startswith("--")}
    args.given = {a.dest for a in p._actions if set(a.option_strings) & flags}
    return p, args


#: The options a resumed run takes from its own config.json (only --epochs may change).
FIXED_ON_RESUME = (
    "features",
    "hidden",
    "lr",
    "schedule",
    "batch_size",
    "seed",
    "scale",
    "seeds",
    "checkpoint_every",
)


def make_trainer(
    args: argparse.Namespace,
    seed: int,
    checkpoint: Path | None = None,
    decay_steps: float | None = None,
) -> tuple[mlp.IrisSplit, mlp.MLP, mlp.Trainer]:
    """The split, model and trainer of one run (raises ValueError on bad options).

    ``decay_steps`` of the inverse schedule: None is a tenth of the run's steps.
    """
    split = mlp.load_iris_split(features=args.features, seed=seed)
    model = mlp.MLP(args.features, args.hidden, len(mlp.CLASS_NAMES), seed=seed, scale=args.scale)
    train = mlp.Dataset(split.X_train, split.y_train)
    positive("batch_size", args.batch_size, integer=True)
    steps_per_epoch = math.ceil(len(train) / args.batch_size)
    steps = args.epochs * steps_per_epoch
    positive("checkpoint_every", args.checkpoint_every, integer=True)
    trainer = mlp.Trainer(
        model,
        mlp.SGD(),
        train,
        steps=steps,
        lr=mlp.make_schedule(
            args.schedule, args.lr, decay_steps=steps / 10 if decay_steps is None else decay_steps
        ),
        batch_size=args.batch_size,
        test=mlp.Dataset(split.X_test, split.y_test),
        eval_every=steps_per_epoch,
        seed=seed,
        checkpoint=checkpoint,
        checkpoint_every=args.checkpoint_every * steps_per_epoch if checkpoint else None,
        description=f"seed {seed}",
    )
    return split, model, trainer


def resumed_args(args: argparse.Namespace) -> tuple[argparse.Namespace, float | None]:
    """The options of the run in ``args.resume`` (its config.json), with ``--epochs`` if given;
    and the run's ``decay_steps``."""
    given = [f"--{k.replace('_', '-')}" for k in (*FIXED_ON_RESUME, "out") if k in args.given]
    if given:
        raise ValueError(
            f"--resume: the run continues with its own options from "
            f"{args.resume / 'config.json'}; only --epochs may be given, received {' '.join(given)}"
        )
    if not args.resume.is_dir():
        raise RunFolderError(f"resume: no run folder at {args.resume}")
    config = read_json(args.resume / "config.json")
    missing = [k for k in (*FIXED_ON_RESUME, "epochs") if k not in config]
    if missing:
        raise RunFolderError(f"resume: {args.resume / 'config.json'} lacks the options {missing}")
    new = argparse.Namespace(**{k: config[k] for k in (*FIXED_ON_RESUME, "epochs")})
    new.epochs = args.epochs if "epochs" in args.given else config["epochs"]
    new.out, new.resume = args.resume, args.resume
    return new, config.get("decay_steps")


def run(args: argparse.Namespace) -> Path:
    decay_steps = None
    if args.resume is not None:
        args, decay_steps = resumed_args(args)
    positive("epochs", args.epochs, integer=True)
    positive("seeds", args.seeds, integer=True)
    if args.scale is not None:
        positive("scale", args.scale)
    out = args.out or default_run_dir("mlp")
    split, model, trainer = make_trainer(  # validates the options
        args, args.seed, checkpoint=out / "checkpoint.npz", decay_steps=decay_steps
    )
    if args.resume is not None:
        trainer.resume(out / "checkpoint.npz")
        print(f"resuming {out} at step {trainer.step} of {trainer.steps}")
    else:
        out.mkdir(parents=True, exist_ok=True)
    config = {
        **{
            k: (str(v) if isinstance(v, Path) else v) for k, v in vars(args).items() if k != "given"
        },
        "out": str(out),
        "optimizer": "sgd",
        "steps": trainer.steps,
        "steps_per_epoch": trainer.steps_per_epoch,
        "decay_steps": (
            (trainer.steps / 10 if decay_steps is None else decay_steps)
            if args.schedule == "inverse"
            else None
        ),
        "n_train": len(split.y_train),
        "n_test": len(split.y_test),
        "feature_names": list(split.feature_names),
        "versions": {
            "python": platform.python_version(),
            "numpy": np.__version__,
            "scikit-learn": sklearn.__version__,
            "matplotlib": matplotlib.__version__,
        },
    }
    write_json(out / "config.json", config)  # before training: a killed run can be resumed

    history = trainer.run()
    last = history.last
    metrics: dict[str, object] = {
        "train_accuracy": last["train_accuracy"],
        "test_accuracy": last["test_accuracy"],
        "final_loss": last["train_loss"],
        "test_loss": last["test_loss"],
        "seed": args.seed,
    }
    print(
        f"seed {args.seed}: train accuracy {last['train_accuracy']:.4f}, "
        f"test accuracy {last['test_accuracy']:.4f}, final train loss {last['train_loss']:.4f}"
    )
    if args.seeds > 1:
        per_seed = []
        for s in range(args.seeds):
            h = history if s == args.seed else make_trainer(args, s)[2].run()  # no checkpoint
            row = h.last
            per_seed.append(
                {
                    "seed": s,
                    "train_accuracy": row["train_accuracy"],
                    "test_accuracy": row["test_accuracy"],
                }
            )
        test_accs = [r["test_accuracy"] for r in per_seed]
        metrics["per_seed"] = per_seed
        metrics["mean_test_accuracy"] = float(np.mean(test_accs))
        metrics["min_test_accuracy"] = float(np.min(test_accs))
        metrics["mean_train_accuracy"] = float(np.mean([r["train_accuracy"] for r in per_seed]))
        print(
            f"seeds 0..{args.seeds - 1}: mean test accuracy {metrics['mean_test_accuracy']:.4f}, "
            f"min {metrics['min_test_accuracy']:.4f}"
        )

    write_json(out / "metrics.json", metrics)
    history.to_csv(out / "history.csv")
    save_arrays(out / "params.npz", model.params)
    plot_curves(
        history,
        out / "curves.png",
        title=f"iris MLP, {args.features} features, {args.hidden} hidden units, seed {args.seed}",
    )
    plot_decision_regions(
        model.params,
        split.X_train,
        split.y_train,
        split.X_test,
        split.y_test,
        out / "decision_regions.png",
        feature_names=split.feature_names,
    )
    return out


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    try:
        out = run(args)
    except (ValueError, TypeError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except mlp.TrainingDiverged as err:
        parser.exit(1, f"{parser.prog}: {err}\n")
    except mlp.TrainingInterrupted as err:
        hint = f"; continue with --resume {err.checkpoint.parent}" if err.checkpoint else ""
        parser.exit(130, f"{parser.prog}: {err}{hint}\n")
    except KeyboardInterrupt:
        parser.exit(130, f"{parser.prog}: interrupted\n")
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
