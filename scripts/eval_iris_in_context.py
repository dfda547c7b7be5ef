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
        from attnlab.experiment import evaluate_defaults

        return evaluate_defaults(
            args.attention,
            args.features,
            range(args.seeds),
            args.out,
            workers=args.workers,
            scheduler=args.scheduler,
        )

    table, result = run_script(p, work)
    header = (
        f"{'attention':<9} {'features':>8} {'test acc':>9} {'min':>6} {'attn on target':>15} "
        f"{'min':>6} {'s/run':>6}  target"
    )
    print(f"iris-in-context, C = 16, default options, seeds 0-{args.seeds - 1}")
    print(header)
    print("-" * len(header))
    for row in table:
        (acc, acc_min), (att, att_min) = row["test_accuracy"], row["attention_on_target"]
        want_acc, want_att = row["targets"]
        goal = f"acc >= {want_acc}" + (f", attn >= {want_att}" if want_att else "")
        runs = "" if row["runs"] == args.seeds else f" ({row['runs']} of {args.seeds} runs)"
        print(
            f"{row['attention']:<9} {row['features']:>8} {acc:>9.3f} {acc_min:>6.3f} "
            f"{att:>15.3f} {att_min:>6.3f} {row['seconds']:>6.2f}  "
            f"{goal}: {'met' if row['met'] else 'NOT met'}{runs}"
        )
    if result.failed:
        print(f"{result.failed} runs failed: {result.files['failed']}")
    print(f"results: {result.files['results']} (summary: {result.files['summary']})")
    return 0 if all(row["met"] for row in table) else 1


if __name__ == "__main__":
    sys.exit(main())
