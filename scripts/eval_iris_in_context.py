#!/usr/bin/env python3
"""Evaluate the demo defaults: iris-in-context, C = 16, mean over seeds, per attention x features.

    python scripts/eval_iris_in_context.py                  # seeds 0-4, prompt/self/kq x 4/2
    python scripts/eval_iris_in_context.py --seeds 20 --attention self --features 4

Each run uses train_attention.py's default options for its attention (only --seed, --attention
and --features vary). The runs are a sweep (scripts/sweep.py attention --grid attention=...
--grid features=... --seeds 0-N): in parallel on a local Dask cluster (--workers, --scheduler as
for sweep.py), into the sweep folder --out (default runs/iris-in-context), where rerunning skips
the runs already done. Prints one table row per (attention, features): mean test accuracy, mean
attention on the marked token (test prompts), the lowest of each over the seeds, and the median
wall time of one run. Exit status 0 if every target is met (with 4 features test accuracy >=
0.93 and attention >= 0.9; with 2 features accuracy >= 0.72), 1 if not, 130 on Ctrl-C.
"""

from __future__ import annotations

import sys
from pathlib import Path

from mlp.train.cli import ScriptParser, folder, run_script


def main(argv: list[str] | None = None) -> int:
    p = ScriptParser(prog="eval_iris_in_context.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--seeds", type=int, default=5, help="seeds 0..N-1 (default 5)")
    p.add_argument(
        "--attention", nargs="+", choices=("prompt", "self", "kq"), default=["prompt", "self", "kq"]
    )
    p.add_argument("--features", nargs="+", type=int, choices=(2, 4), default=[4, 2])
    p.add_argument("--out", type=folder, default=Path("runs/iris-in-context"), metavar="DIR")
    p.add_argument("--workers", type=int, help="local worker processes (default: cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, tcp://HOST:PORT")
    args = p.parse_args(argv)
    if args.seeds < 1:
        p.error(f"--seeds: expected a positive integer, received {args.seeds}")
    if args.workers is not None and args.scheduler is not None:
        p.error("--workers: only for the embedded cluster, not with --scheduler")

    def work():
        from attnlab.studies.iris_in_context import reproduce

        return reproduce(
            args.out,
            attentions=args.attention,
            features=args.features,
            seeds=range(args.seeds),
            workers=args.workers,
            scheduler=args.scheduler,
        )

    table, result = run_script(p, work)
    print(f"iris-in-context, C = 16, default options, seeds 0-{args.seeds - 1}")
    print((args.out / "results.md").read_text().split("```\n")[1], end="")
    if result.failed:
        print(f"{result.failed} runs failed: {result.files['failed']}")
    print(f"results: {result.files['results']} (summary: {result.files['summary']})")
    return 0 if all(row["met"] for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
