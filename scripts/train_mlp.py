#!/usr/bin/env python3
"""Train the lecture's iris MLP with mini-batch SGD and write a run folder.

    python scripts/train_mlp.py                          # 2 features, 10 hidden, 200 epochs
    python scripts/train_mlp.py --features 4 --seeds 20  # also: mean/min test accuracy, 20 seeds

The run folder (--out, default runs/mlp-<timestamp>) gets config.json, metrics.json, history.csv
(one row per epoch), params.npz, checkpoint.npz, curves.png and decision_regions.png. The seed
sets the train/test split, the initialization and the shuffling.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlp.experiment import (
    CHANGEABLE_ON_RESUME,
    DEFAULTS,
    finish,
    resume_experiment,
    run_experiment,
    seed_summary,
)
from mlp.train.cli import ScriptParser, check_resume_options, run_script
from mlp.train.folders import default_run_dir, write_json


def parser() -> ScriptParser:
    p = ScriptParser(prog="train_mlp.py", description=__doc__.split("\n\n")[0], only_given=True)
    d = DEFAULTS
    p.add_argument("--features", type=int, choices=(2, 4), help=f"iris features ({d['features']})")
    p.add_argument("--hidden", type=int, help=f"hidden units m ({d['hidden']})")
    p.add_argument("--lr", type=float, help=f"initial learning rate ({d['lr']})")
    p.add_argument(
        "--schedule",
        choices=("constant", "inverse", "step"),
        help="learning rate: constant, or lr / (1 + t / decay_steps), decay_steps = steps / 10, "
        f"or step: lr / 10 at half the run and lr / 100 at 80% ({d['schedule']})",
    )
    p.add_argument("--batch-size", type=int, help=f"mini-batch size ({d['batch_size']})")
    p.add_argument("--epochs", type=int, help=f"passes over the training set ({d['epochs']})")
    p.add_argument("--seed", type=int, help="split, initialization and shuffling (0)")
    p.add_argument("--scale", type=float, help="init scale (default: N(0, 1))")
    p.add_argument("--out", type=Path, help="run folder (default runs/mlp-<time>)")
    p.add_argument("--seeds", type=int, help="also evaluate seeds 0..N-1: mean/min test accuracy")
    p.add_argument(
        "--checkpoint-every",
        type=int,
        help=f"epochs between checkpoints (checkpoint.npz; {d['checkpoint_every']})",
    )
    p.add_argument(
        "--resume",
        type=Path,
        metavar="RUN_DIR",
        help="continue RUN_DIR from its last checkpoint with the run's own options; --epochs is "
        "the new total (the learning-rate schedule stays the run's own)",
    )
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    given = vars(p.parse_args(argv))
    resume = given.pop("resume", None)

    def work() -> Path:
        if resume is not None:
            check_resume_options(resume, given, CHANGEABLE_ON_RESUME)
            experiment = resume_experiment(resume, given.get("epochs"))
            t = experiment.trainer
            print(f"resuming {resume} at step {t.step} of {t.steps}")
            metrics, run_dir = finish(experiment, resume), resume
        else:
            run_dir = given.pop("out", None) or default_run_dir("mlp")
            metrics = run_experiment({k: v for k, v in given.items() if k != "seeds"}, run_dir)
        print(
            f"seed {metrics['seed']}: train accuracy {metrics['train_accuracy']:.4f}, "
            f"test accuracy {metrics['test_accuracy']:.4f}, "
            f"final train loss {metrics['final_loss']:.4f}"
        )
        seeds = given.pop("seeds", 1)
        if seeds != 1:
            metrics.update(seed_summary(given, seeds))
            write_json(run_dir / "metrics.json", metrics)
            print(
                f"seeds 0..{seeds - 1}: mean test accuracy {metrics['mean_test_accuracy']:.4f}, "
                f"min {metrics['min_test_accuracy']:.4f}"
            )
        return run_dir

    run_dir = run_script(p, work, diverged_hint=". Try a smaller --lr.")
    print(f"run folder: {run_dir}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
