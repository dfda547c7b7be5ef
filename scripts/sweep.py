#!/usr/bin/env python3
"""Run an experiment over a grid of options and seeds, each run a task on a Dask cluster.

    python scripts/sweep.py attention --grid attention=prompt,self,kq --grid features=4,2 \\
        --seeds 0-19 --out runs/iris-seeds
    python scripts/sweep.py mlp --grid hidden=5,10,20 --set epochs=100 --seeds 0-9 --out DIR
    python scripts/sweep.py attention ... --scheduler tcp://HOST:8786   # an existing cluster

EXPERIMENT is attention (the options of train_attention.py), mlp (those of train_mlp.py),
max-margin (one seed of the max-margin reproduction), icl (one run of in-context linear
regression), or the name of a module with DEFAULTS, resolve and run_experiment (docs/sweeps.md).
Without --scheduler the runs go to an embedded Dask LocalCluster of one single-threaded worker
process per usable core (--workers N; 0 runs them one after another in this process). DIR gets
results.csv (one row per finished run, appended as runs finish), failed.csv, summary.csv,
summary.md, figures/ and runs/RUN_ID/ (each run's folder). Rerunning the same command continues
where it stopped; a changed grid adds only its new runs. Exit status: 0, 1 if a run failed, 2 for
bad options, 130 on Ctrl-C.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnlab.studies import EXPERIMENTS
from mlp.train.cli import ScriptParser, run_script
from mlp.train.sweep import parse_assignment, parse_seeds, sweep


def parse_args(argv: list[str] | None = None) -> tuple[argparse.ArgumentParser, argparse.Namespace]:
    p = ScriptParser(prog="sweep.py", description=__doc__.split("\n\n")[0])
    p.add_argument(
        "experiment", metavar="EXPERIMENT", help=f"{', '.join(EXPERIMENTS)} or a module name"
    )
    p.add_argument(
        "--grid",
        action="append",
        default=[],
        metavar="KEY=V1,V2,...",
        help="an option and its values; several --grid sweep their product",
    )
    p.add_argument(
        "--set",
        action="append",
        default=[],
        metavar="KEY=VALUE",
        help="an option for every run",
    )
    p.add_argument("--seeds", required=True, metavar="A-B", help="seeds A to B, both included")
    p.add_argument("--out", type=Path, required=True, metavar="DIR", help="the sweep folder")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, tcp://HOST:PORT")
    p.add_argument(
        "--workers", type=int, default=None, help="local worker processes (default: cores)"
    )
    args = p.parse_args(argv)
    if args.workers is not None and args.scheduler is not None:
        p.error("--workers: only for the embedded cluster, not with --scheduler")
    try:
        args.seeds = parse_seeds(args.seeds)
        args.grid = _assignments(args.grid, "--grid")
        args.set = _assignments(args.set, "--set")
    except ValueError as err:
        p.error(str(err))
    for k, v in args.set.items():
        if len(v) != 1:
            p.error(f"--set {k}: expected one value, received {len(v)} (use --grid to sweep)")
    args.set = {k: v[0] for k, v in args.set.items()}
    return p, args


def _assignments(items: list[str], flag: str) -> dict[str, list[str]]:
    out: dict[str, list[str]] = {}
    for text in items:
        key, values = parse_assignment(text)
        if key.replace("-", "_") in {k.replace("-", "_") for k in out}:
            raise ValueError(f"{flag}: {key} given twice")
        if not values:
            raise ValueError(f"{flag} {key}: no values")
        out[key] = values
    return out


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)

    def work():
        return sweep(
            EXPERIMENTS.get(args.experiment, args.experiment),
            args.grid,
            args.set,
            args.seeds,
            args.out,
            scheduler=args.scheduler,
            workers=args.workers,
        )

    result = run_script(parser, work)
    print(
        f"{result.finished} runs finished, {result.skipped} already done, {result.failed} failed"
        f" (of {result.planned})"
    )
    if result.failed:
        print(f"failed runs and their errors: {result.files['failed']}")
    print(f"results: {result.files['results']}")
    print(f"summary: {result.files['summary']} (figures in {result.files['figures']})")
    return 1 if result.failed else 0


if __name__ == "__main__":
    sys.exit(main())
