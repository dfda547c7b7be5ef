#!/usr/bin/env python3
"""Train the context-window attention model on a prompt task and write a run folder.

    python scripts/train_attention.py                       # the demo: iris-in-context, self
    python scripts/train_attention.py --attention kq --features 2 --seed 3

The run folder (--out, default runs/attention-<timestamp>) gets config.json (every option and the
model's constructor arguments), metrics.json, history.csv, params.npz, snapshots.npz (attention
weights of a few fixed test prompts during training), checkpoint.npz (written every
--checkpoint-every steps: `--resume RUN_DIR` continues from it), curves.png,
attention_map.png and attention_over_training.png. Redraw the figures with
scripts/plot_attention.py RUN_DIR.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np

from attnlab.model import HEADS, POOLS
from attnlab.plots import TARGET_NAMES, plot_attention_curves, plot_run
from attnlab.queries import ATTENTIONS
from attnlab.runs import (
    COMMON,
    IRIS_DEFAULTS,
    IRIS_STEPS,
    make_run,
    resume_run,
    run_config,
    save_run,
)
from attnlab.tasks import TASKS
from mlp.train.folders import ScriptParser, default_run_dir, write_json
from mlp.train.optim import OPTIMIZERS
from mlp.train.trainer import TrainingDiverged, TrainingInterrupted


def _iris_default(key: str) -> str:
    return str(IRIS_DEFAULTS[key])


def parse_args(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = ScriptParser(
        prog="train_attention.py",
        description=__doc__.split("\n\n")[0],
        epilog="Defaults are for iris-in-context; max-margin and prompt-norm default to their "
        "published settings (cross/prompt attention, a fixed linear head, normalized GD, full "
        "batch, lr 0.1, 2000/200 steps).",
    )
    p.add_argument("--task", choices=TASKS, default=None, help=f"(default {COMMON['task']})")
    p.add_argument(
        "--attention",
        choices=ATTENTIONS,
        default=None,
        help=f"(default {_iris_default('attention')})",
    )
    p.add_argument(
        "--pool",
        choices=POOLS,
        default=None,
        help=f"mean of the output columns, or the last one (default {_iris_default('pool')})",
    )
    p.add_argument("--head", choices=HEADS, default=None, help="(default mlp)")
    p.add_argument(
        "--features", type=int, choices=(2, 4), default=None, help="iris features (default 4)"
    )
    p.add_argument("--context", type=int, default=None, help="tokens C per prompt (default 16)")
    p.add_argument(
        "--optimizer",
        choices=OPTIMIZERS,
        default=None,
        help=f"(default {_iris_default('optimizer')})",
    )
    p.add_argument("--lr", type=float, default=None, help=f"(default {_iris_default('lr')})")
    p.add_argument(
        "--steps",
        type=int,
        default=None,
        help="updates (default "
        + ", ".join(f"{n} with {f} features" for f, n in IRIS_STEPS.items())
        + ": with 2 features longer training only overfits the MLP head)",
    )
    p.add_argument(
        "--batch-size",
        type=int,
        default=None,
        help=f"prompts per update (default {_iris_default('batch_size')})",
    )
    p.add_argument(
        "--seed", type=int, default=None, help="data, initialization, batches (default 0)"
    )
    p.add_argument("--out", type=Path, default=None, help="run folder")
    p.add_argument("--eval-every", type=int, default=None, help="(default steps // 30)")
    p.add_argument(
        "--checkpoint-every", type=int, default=None, help="(default: at every evaluation)"
    )
    p.add_argument(
        "--resume",
        type=Path,
        default=None,
        metavar="RUN_DIR",
        help="continue RUN_DIR from its last checkpoint with the run's own options; --steps "
        "is the new total (e.g. a 200-step run resumed with --steps 400 runs 200 more)",
    )
    return p, p.parse_args(argv)


#: The options a resumed run takes from its own config.json (only --steps may change); all but
#: ``out`` are options of :func:`attnlab.runs.make_run`.
FIXED_ON_RESUME = (
    "seed",
    "task",
    "attention",
    "pool",
    "head",
    "features",
    "context",
    "optimizer",
    "lr",
    "batch_size",
    "eval_every",
    "checkpoint_every",
    "out",
)


def run(args: argparse.Namespace) -> tuple[Path, dict]:
    """Train with the options of ``args``; write the run folder; return it and the metrics."""
    options = {k: getattr(args, k) for k in (*FIXED_ON_RESUME[:-1], "steps")}
    if args.resume is not None:
        given = [
            f"--{k.replace('_', '-')}" for k in FIXED_ON_RESUME if getattr(args, k) is not None
        ]
        if given:
            raise ValueError(
                f"--resume: the run continues with its own options from "
                f"{args.resume / 'config.json'}; only --steps may be given, received "
                f"{' '.join(given)}"
            )
        out = args.resume
        experiment = resume_run(out, steps=args.steps)
        print(f"resuming {out} at step {experiment.trainer.step} of {experiment.trainer.steps}")
    else:
        out = args.out if args.out is not None else default_run_dir("attention")
        experiment = make_run(checkpoint=out / "checkpoint.npz", **options)  # validates options
        out.mkdir(parents=True, exist_ok=True)
        # the options first, so that a run killed before its end can be resumed
        write_json(out / "config.json", run_config(experiment))
    # an overflow ends as one TrainingDiverged message (the trainer checks every loss,
    # gradient and update), not as a stream of numpy RuntimeWarnings before it
    with np.errstate(over="ignore", invalid="ignore"):
        experiment.trainer.run()
    save_run(experiment, out)
    opts = experiment.options
    plot_attention_curves(
        experiment.trainer.history,
        out / "curves.png",
        title=f"{opts['task']}, {opts['attention']} attention, pool {opts['pool']}, "
        f"{opts['head']} head, {opts['optimizer']} lr {opts['lr']:g}, seed {opts['seed']}",
        context=opts["context"],
        target_name=TARGET_NAMES[opts["task"]],
    )
    plot_run(out, out)
    return out, {**experiment.metrics(), "task": opts["task"]}


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    try:
        out, metrics = run(args)
    except (ValueError, TypeError) as err:
        parser.exit(2, f"{parser.prog}: error: {err}\n")
    except TrainingDiverged as err:
        parser.exit(1, f"{parser.prog}: {err}\n")
    except TrainingInterrupted as err:
        hint = f"; continue with --resume {err.checkpoint.parent}" if err.checkpoint else ""
        parser.exit(130, f"{parser.prog}: {err}{hint}\n")
    print(
        f"test accuracy {metrics['test_accuracy']:.4f}, "
        f"attention on the {TARGET_NAMES[metrics['task']]} {metrics['attention_on_target']:.4f} "
        f"(train accuracy {metrics['train_accuracy']:.4f}, final loss {metrics['final_loss']:.4f})"
    )
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
