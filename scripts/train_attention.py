#!/usr/bin/env python3
"""Train attention on a task and write a run folder: the context-window model, or a stack.

    python scripts/train_attention.py                       # the demo: iris-in-context, self
    python scripts/train_attention.py --attention kq --features 2 --seed 3
    python scripts/train_attention.py --task repeated-tokens --layers 2 --heads 1 \\
        --mask causal --positions relative                  # a stack: an induction head

The context-window model (attention, pool, head) trains on iris-in-context, max-margin and
prompt-norm. Any of --layers, --heads, --mask, --positions, --layernorm, --shared, --scores,
--d, --vocab, or a token task (repeated-tokens, markov-in-context), trains an attention stack
instead (attnlab.studies.stack; iris-in-context fits it too). A new run folder (--out, one that
holds no run; default runs/attention-* or runs/stack-*) gets config.json, history.csv,
params.npz, snapshots.npz (attention weights of a few fixed test prompts during training),
checkpoint.npz (`--resume RUN_DIR` continues from it), curves.png, the attention maps and, last,
metrics.json (with stop_reason). Redraw the maps with scripts/plot_attention.py RUN_DIR. Exit
statuses: mlp/train/cli.py and docs/robustness.md.
"""

from __future__ import annotations

import sys

from mlp.train.cli import ScriptParser, exit_status, folder, run_or_resume, run_script

#: Options of the context-window model alone, and of the stack alone.
WINDOW_ONLY = ("pool", "head", "features")
STACK_ONLY = ("layers", "heads", "mask", "positions", "layernorm", "shared", "scores", "d", "vocab")


def add_options(p: ScriptParser) -> None:
    from attnlab.blocks.queries import ATTENTIONS
    from attnlab.models.context_window import HEADS, POOLS
    from attnlab.studies.attention import IRIS_DEFAULTS, IRIS_STEPS
    from attnlab.tasks import REGISTRY
    from mlp.train.optim import OPTIMIZERS

    d = IRIS_DEFAULTS
    tasks = sorted(set(REGISTRY) - {"linear-regression-in-context"})
    p.add_argument("--task", choices=tasks, help="(default iris-in-context)")
    p.add_argument("--attention", choices=ATTENTIONS, help=f"(default {d['attention']})")
    p.add_argument("--pool", choices=POOLS, help=f"mean or last output column ({d['pool']})")
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
    s = p.add_argument_group("a stack of attention layers (attnlab.AttentionStack)")
    s.add_argument("--layers", type=int, help="residual attention layers (default 2)")
    s.add_argument("--heads", type=int, help="heads per layer (default 1)")
    s.add_argument("--mask", choices=("causal", "exclude-last"), help="(default: the task's)")
    s.add_argument("--positions", choices=("absolute", "relative", "relative-key"))
    s.add_argument("--layernorm", action="store_true", help="pre-layer norm")
    s.add_argument("--shared", action="store_true", help="one set of weights for every layer")
    s.add_argument("--scores", choices=("softmax", "linear"), help="(default softmax)")
    s.add_argument("--d", type=int, help="embedding width of token tasks")
    s.add_argument("--vocab", type=int, help="tokens (states of markov-in-context)")


def train(p: ScriptParser, argv: list[str] | None) -> int:
    from attnlab.studies import attention, stack
    from attnlab.tasks import REGISTRY

    add_options(p)
    given = vars(p.parse_args(argv))
    resume = given.get("resume")
    if resume is not None:
        on_stack = stack.is_stack_run(resume)
    else:
        on_stack = any(k in given for k in STACK_ONLY) or given.get("task") in stack.TOKEN_TASKS
    wrong = [k for k in (WINDOW_ONLY if on_stack else ()) if k in given]
    if wrong:
        p.error(f"--{wrong[0]}: an option of the context-window model, not of a stack")
    m = run_or_resume(stack if on_stack else attention, given, "steps")
    if on_stack:
        probes = {k: v for k, v in m.items() if k.endswith(("_score", "_kl"))}
        extra = "".join(f", {k.replace('_', ' ')} {v:.4f}" for k, v in probes.items())
        print(f"test loss {m['test_loss']:.4f}, test accuracy {m['test_accuracy']:.4f}{extra}")
    else:
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
        "batch, lr 0.1). A stack's defaults are its task's (attnlab.studies.stack.TASK_DEFAULTS).",
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
