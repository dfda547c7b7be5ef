#!/usr/bin/env python3
"""Train the context-window attention model on a prompt task and write a run folder.

    python scripts/train_attention.py                       # the demo: iris-in-context, self
    python scripts/train_attention.py --attention kq --features 2 --seed 3

A new run folder (--out, one that holds no run; default runs/attention-<timestamp>-<suffix>)
gets config.json (every option and the model's constructor arguments), history.csv,
params.npz, snapshots.npz (attention weights of a few fixed test prompts during training),
checkpoint.npz (written every --checkpoint-every steps: `--resume RUN_DIR` continues from it),
curves.png, attention_map.png, attention_over_training.png and, last, metrics.json (with
stop_reason). Redraw the figures with scripts/plot_attention.py RUN_DIR. Exit statuses:
mlp/train/cli.py and docs/robustness.md.
"""

from __future__ import annotations

import sys

from mlp.train.cli import ScriptParser, exit_status, folder, run_or_resume, run_script


def add_options(p: ScriptParser) -> None:
    from attnlab.blocks.queries import ATTENTIONS
    from attnlab.models.context_window import HEADS, POOLS
    from attnlab.studies.attention import IRIS_DEFAULTS, IRIS_STEPS
    from attnlab.tasks import TASKS
    from mlp.train.optim import OPTIMIZERS

    d = IRIS_DEFAULTS
    p.add_argument("--task", choices=TASKS, help="(default iris-in-context)")
    p.add_argument("--attention", choices=ATTENTIONS, help=f"(default {d['attention']})")
    p.add_argument(
        "--pool",
        choices=POOLS,
        help=f"mean of the output columns, or the last one (default {d['pool']})",
    )
    p.add_argument("--head", choices=HEADS, help=f"(default {d['head']})")
    p.add_argument("--features", type=int, choices=(2, 4), help="iris features (default 4)")
    p.add_argument("--context", type=int, help=f"tokens C per prompt (default {d['context']})")
    p.add_argument("--optimizer", choices=OPTIMIZERS, help=f"(default {d['optimizer']})")
    p.add_argument("--lr", type=float, help=f"(default {d['lr']})")
    p.add_argument(
        "--steps",
        type=int,
        help="updates (default "
        + ", ".join(f"{n} with {f} features" for f, n in IRIS_STEPS.items())
        + ": with 2 features longer training only overfits the MLP head)",
    )
    p.add_argument("--batch-size", type=int, help=f"prompts per update (default {d['batch_size']})")
    p.add_argument("--seed", type=int, help="data, initialization, batches (default 0)")
    p.add_argument("--out", type=folder, help="a new run folder (default runs/attention-*)")
    p.add_argument("--eval-every", type=int, help="(default steps // 30)")
    p.add_argument("--checkpoint-every", type=int, help="(default: at every evaluation)")
    p.add_argument(
        "--resume",
        type=folder,
        metavar="RUN_DIR",
        help="continue RUN_DIR from its last checkpoint with the run's own options; --steps "
        "is the new total (e.g. a 200-step run resumed with --steps 400 runs 200 more)",
    )


def train(p: ScriptParser, argv: list[str] | None) -> int:
    import attnlab.studies.attention
    from attnlab.tasks import REGISTRY

    add_options(p)
    m = run_or_resume(attnlab.studies.attention, vars(p.parse_args(argv)), "steps")
    target = REGISTRY[m["task"]].target_name
    print(
        f"test accuracy {m['test_accuracy']:.4f}, attention on the {target} "
        f"{m['attention_on_target']:.4f} (train accuracy {m['train_accuracy']:.4f}, final "
        f"loss {m['final_loss']:.4f})"
    )
    print(f"run folder: {m['run_dir']}")
    return exit_status(p, m)


def main(argv: list[str] | None = None) -> int:
    p = ScriptParser(
        prog="train_attention.py",
        description=__doc__.split("\n\n")[0],
        only_given=True,
        epilog="Defaults are for iris-in-context; max-margin and prompt-norm default to their "
        "published settings (cross/prompt attention, a fixed linear head, normalized GD, full "
        "batch, lr 0.1).",
    )
    # everything, the heavy imports included, runs inside run_script: any error or Ctrl-C
    # ends in one line
    return run_script(
        p,
        lambda: train(p, argv),
        diverged_hint=". Try a smaller --lr.",
        memory_hint="; reduce --context or --batch-size",
    )


if __name__ == "__main__":
    sys.exit(main())
