#!/usr/bin/env python3
"""Train the lecture's iris MLP with mini-batch SGD and write a run folder.

    python scripts/train_mlp.py                          # 2 features, 10 hidden, 200 epochs
    python scripts/train_mlp.py --features 4 --seed 3 --out runs/mlp-4-features

Many seeds are a sweep (in parallel, resumable, one results table):

    python scripts/sweep.py mlp --set features=4 --seeds 0-19 --out runs/mlp-seeds

A new run folder (--out, one that holds no run; default runs/mlp-<timestamp>-<suffix>) gets
config.json, history.csv (one row per epoch), params.npz, checkpoint.npz, curves.png,
decision_regions.png and, last, metrics.json (with stop_reason). The seed sets the train/test
split, the initialization and the shuffling. Exit statuses: mlp/train/cli.py and docs/robustness.md.
"""

from __future__ import annotations

import argparse
import sys

from mlp.train.cli import ScriptParser, exit_status, folder, run_or_resume, run_script


def add_options(p: ScriptParser) -> None:
    from mlp.experiment import DEFAULTS

    d = DEFAULTS
    p.add_argument("--features", type=int, choices=(2, 4), help=f"iris features ({d['features']})")
    p.add_argument("--hidden", type=int, help=f"hidden units m ({d['hidden']})")
    p.add_argument("--lr", type=float, help=f"initial learning rate ({d['lr']})")
    p.add_argument(
        "--schedule",
        choices=("constant", "inverse", "step"),
        help="learning rate: constant, or lr / (1 + t / decay_steps), decay_steps = steps / 10, "
        f"or step: lr / 10 at half the run and lr / 100 at 80%% ({d['schedule']})",
    )
    p.add_argument("--batch-size", type=int, help=f"mini-batch size ({d['batch_size']})")
    p.add_argument("--epochs", type=int, help=f"passes over the training set ({d['epochs']})")
    p.add_argument("--seed", type=int, help="split, initialization and shuffling (0)")
    p.add_argument("--scale", type=float, help="init scale (default: N(0, 1))")
    p.add_argument("--out", type=folder, help="a new run folder (default runs/mlp-<time>-*)")
    p.add_argument("--seeds", help=argparse.SUPPRESS)  # moved to sweep.py: a pointer there
    p.add_argument(
        "--checkpoint-every",
        type=int,
        help=f"epochs between checkpoints (checkpoint.npz; {d['checkpoint_every']})",
    )
    p.add_argument(
        "--resume",
        type=folder,
        metavar="RUN_DIR",
        help="continue RUN_DIR from its last checkpoint with the run's own options; --epochs is "
        "the new total (the learning-rate schedule stays the run's own)",
    )


def train(p: ScriptParser, argv: list[str] | None) -> int:
    import mlp.experiment

    add_options(p)
    options = vars(p.parse_args(argv))
    if "seeds" in options:  # the old multi-seed option: say what replaced it
        n = options["seeds"]
        seeds = f"0-{int(n) - 1}" if n.isdigit() and int(n) > 0 else "A-B"
        p.error(f"--seeds: many seeds are a sweep: scripts/sweep.py mlp --seeds {seeds} --out DIR")
    m = run_or_resume(mlp.experiment, options, "epochs")
    print(
        f"seed {m['seed']}: train accuracy {m['train_accuracy']:.4f}, "
        f"test accuracy {m['test_accuracy']:.4f}, final train loss {m['final_loss']:.4f}"
    )
    print(f"run folder: {m['run_dir']}")
    return exit_status(p, m)


def main(argv: list[str] | None = None) -> int:
    p = ScriptParser(prog="train_mlp.py", description=__doc__.split("\n\n")[0], only_given=True)
    # everything, the heavy imports included, runs inside run_script: any error or Ctrl-C
    # ends in one line
    return run_script(p, lambda: train(p, argv), diverged_hint=". Try a smaller --lr.")


if __name__ == "__main__":
    sys.exit(main())
