#!/usr/bin/env python3
"""Redraw the attention figures of a run folder written by scripts/train_attention.py.

    python scripts/plot_attention.py runs/attention-20250101-120000
    python scripts/plot_attention.py RUN_DIR --out figures/
    python scripts/plot_attention.py RUN_DIR --animate

Rebuilds the model from config.json + params.npz, reads snapshots.npz and writes
attention_map.png (the attention weights of the snapshot test prompts after training, the marked
token outlined, true and predicted class in each title) and attention_over_training.png (the
weight on the marked token at every evaluation) into RUN_DIR, or --out. --animate adds
attention_over_training.gif: the attention maps at every recorded step, one frame each. For a
stack's run folder: attention_layers.png, every layer's and head's attention on the first
snapshot prompt (--animate: attention_layers.gif, at every recorded step).
"""

from __future__ import annotations

import argparse
import sys

from mlp.train.cli import ScriptParser, folder, run_script


def parse_args(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = ScriptParser(prog="plot_attention.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "run_dir", type=folder, metavar="RUN_DIR", help="a train_attention.py run folder"
    )
    p.add_argument(
        "--out", type=folder, default=None, help="folder for the figures (default RUN_DIR)"
    )
    p.add_argument(
        "--animate",
        action="store_true",
        help="also write attention_over_training.gif (one frame per recorded step)",
    )
    return p, p.parse_args(argv)


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)

    def work() -> None:
        from attnlab.studies import attention, stack

        study = stack if stack.is_stack_run(args.run_dir) else attention
        for path in study.plot_run(args.run_dir, args.out, animate=args.animate).values():
            print(f"wrote {path}")

    run_script(parser, work)
    return 0


if __name__ == "__main__":
    sys.exit(main())
