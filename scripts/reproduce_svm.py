#!/usr/bin/env python3
"""Reproduce the rest of "Transformers as Support Vector Machines" (Tarzanagh et al. 2023): the
(K, Q) parametrization against the nuclear-norm SVM, multi-token selection, and the rank of
the SVM solutions.

    python scripts/reproduce_svm.py --out DIR [--workers N | --scheduler ADDRESS]
        [--studies kq,multi-token,rank] [--seeds 100] [--long-steps 20000] [--worst 5]
        [--kept 500] [--instances 100]

DIR/kq: the three (K, Q) variants (the authors' recipe, the underflow-free direction, the plain
float64 direction) over seeds 0..seeds-1, and the worst underflow-free seeds continued to
--long-steps iterations; DIR/multi_token: --kept runs per d in 4, 6, 8, 10; DIR/rank: the
ranks for n in 5, 10, 15, T = 5, d in 1..5, 10, 15, 20 (--instances each). Each folder gets
results.json, results.md, its figures and sweep/ (the runs, one folder each: the (K, Q) runs
hold params.npz and task.npz). The runs go through the sweep: one worker process per core by
default (--workers; 0: one after another in this process), or a Dask --scheduler. Needs cvxpy
(the optional extra svm) for the nuclear-norm SVM.
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
import time
from pathlib import Path

from mlp.train.cli import ScriptParser, folder, run_script

STUDIES = ("kq", "multi-token", "rank")


def studies(text: str) -> tuple[str, ...]:
    """``"kq,rank"`` -> ``("kq", "rank")`` (each one of :data:`STUDIES`)."""
    names = tuple(dict.fromkeys(t.strip() for t in text.split(",") if t.strip()))
    bad = [t for t in names if t not in STUDIES]
    if not names or bad:
        raise ValueError(f"expected some of {', '.join(STUDIES)}, received {text!r}")
    return names


def parser() -> ScriptParser:
    p = ScriptParser(prog="reproduce_svm.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=folder, required=True, help="output folder")
    p.add_argument("--studies", type=studies, default=STUDIES, help="kq,multi-token,rank (all)")
    p.add_argument("--seeds", type=int, default=100, help="(K, Q) seeds 0..N-1 (100)")
    p.add_argument("--steps", type=int, default=2000, help="(K, Q) iterations (2000)")
    p.add_argument("--long-steps", type=int, default=20_000, help="continued runs (20000)")
    p.add_argument("--worst", type=int, default=5, help="logspace seeds continued (5)")
    p.add_argument("--kept", type=int, default=500, help="multi-token runs kept per d (500)")
    p.add_argument("--instances", type=int, default=100, help="rank: instances per point (100)")
    p.add_argument("--workers", type=int, help="local worker processes (default: the cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, tcp://HOST:PORT")
    return p


def check(p: ScriptParser, args: argparse.Namespace) -> None:
    for name in ("seeds", "steps", "long_steps", "worst", "kept", "instances"):
        value = getattr(args, name)
        if value < 1:
            flag = "--" + name.replace("_", "-")
            p.error(f"{flag}: expected a positive integer, received {value}")
    workers, scheduler = args.workers, args.scheduler
    if workers is not None and (workers < 0 or scheduler is not None):
        p.error(f"--workers: expected an integer >= 0 without --scheduler, received {workers}")
    needs_cvxpy = {"kq", "rank"} & set(args.studies)
    if needs_cvxpy and importlib.util.find_spec("cvxpy") is None:
        p.error(
            f"--studies {','.join(sorted(needs_cvxpy))}: needs cvxpy (pip install attnlab[svm])"
        )


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    check(p, args)
    start = time.perf_counter()

    def log(line: str) -> None:
        print(line, flush=True)

    def work() -> list[Path]:
        from attnlab.studies import svm_kq_report, svm_multi_token_report, svm_rank

        options = {"workers": args.workers, "scheduler": args.scheduler, "log": log}
        written: list[Path] = []
        if "kq" in args.studies:
            written += svm_kq_report.reproduce(
                args.out / "kq",
                seeds=args.seeds,
                steps=args.steps,
                long_steps=args.long_steps,
                worst=args.worst,
                **options,
            )[1]
        if "multi-token" in args.studies:
            written += svm_multi_token_report.reproduce(
                args.out / "multi_token", kept=args.kept, **options
            )[1]
        if "rank" in args.studies:
            written += svm_rank.reproduce(args.out / "rank", instances=args.instances, **options)[1]
        return written

    written = run_script(p, work)
    for path in written:
        if path.suffix == ".md":
            print(f"results: {path}")
    print(f"output folder: {args.out}; total {time.perf_counter() - start:.0f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
