"""Reproduce the max-margin token-selection results of Tarzanagh et al.

    python scripts/reproduce_max_margin.py [--seeds 20] [--iterations 2000] [--init zero]
                                           [--kq] [--out DIR] [--workers N | --scheduler ADDR]

``max-margin``: for each seed 0..seeds-1, cross attention trained by normalized GD (lr 0.1,
``--iterations`` steps), once with the exact softmax backward and once with the textbook one;
the correlation of ``W`` with the attention SVM ``W_mm`` over the steps. These runs are a sweep
(``scripts/sweep.py max-margin``) into ``DIR/seeds``, on a local Dask cluster of one worker
process per core (``--workers``; 0: one after another in this process) or on ``--scheduler``.
``prompt-norm``: normalized GD (lr 0.1) against plain GD (lr 1) from ``p = 0``, for
``iterations // 2`` steps (1000 by default, as in the paper). ``--kq`` (needs cvxpy, the extra
``svm``) adds ``max-margin-kq``: the same seeds with ``W = WK WQ^T`` trained by per-factor
normalized GD, in this process, and compared with the nuclear-norm SVM ``W_*``. Writes
``config.json``, ``results.json``, ``results.md``, ``curves.npz``, the figures and ``seeds/``
(the sweep folder: results.csv, summary.md, runs/) into the run folder
(:func:`attnlab.studies.max_margin.report.reproduce`).
"""

from __future__ import annotations

import argparse
import importlib.util
import sys
from pathlib import Path

from attnlab.studies.max_margin import INITS, SETTINGS
from attnlab.studies.max_margin.report import reproduce
from mlp.train.cli import ScriptParser, run_script
from mlp.train.folders import create_run_dir


def make_parser() -> ScriptParser:
    parser = ScriptParser(prog="reproduce_max_margin.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="max-margin seeds 0..N-1 (20)")
    steps = SETTINGS["max-margin"]["steps"]
    parser.add_argument(
        "--iterations",
        type=int,
        default=steps,
        help=f"max-margin steps ({steps}); prompt-norm runs half as many ({steps // 2})",
    )
    parser.add_argument(
        "--init",
        choices=INITS,
        default="zero",
        help="max-margin W init: zero (default) or uniform U(-1/sqrt(d), 1/sqrt(d)), seeded",
    )
    parser.add_argument(
        "--kq",
        action="store_true",
        help="also train W = WK WQ^T by per-factor normalized GD and compare it with the "
        "nuclear-norm SVM (needs cvxpy)",
    )
    parser.add_argument("--out", type=Path, default=None, help="run folder (runs/max_margin-*)")
    parser.add_argument("--workers", type=int, help="local worker processes (default: cores)")
    parser.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, tcp://HOST:PORT")
    return parser


def parse_args(parser: ScriptParser, argv: list[str] | None = None) -> argparse.Namespace:
    args = parser.parse_args(argv)
    for name in ("seeds", "iterations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: expected a positive integer, received {getattr(args, name)}")
    if args.workers is not None and (args.workers < 0 or args.scheduler is not None):
        parser.error(
            f"--workers: expected an integer >= 0 without --scheduler, received {args.workers}"
        )
    if args.iterations < 2:
        parser.error(f"--iterations: expected at least 2, received {args.iterations}")
    if args.kq and importlib.util.find_spec("cvxpy") is None:
        parser.error("--kq: needs cvxpy, the optional extra svm (pip install attnlab[svm])")
    return args


def main(argv: list[str] | None = None) -> int:
    parser = make_parser()
    args = parse_args(parser, argv)

    def work() -> tuple[Path, tuple]:
        out = create_run_dir(args.out, "max_margin", files=("results.json", "results.md"))
        return out, reproduce(
            out,
            seeds=args.seeds,
            steps=args.iterations,
            init=args.init,
            kq=args.kq,
            log=lambda line: print(line, flush=True),
            workers=args.workers,
            scheduler=args.scheduler,
        )

    out, (results, written) = run_script(parser, work)
    print(f"wrote {out}/: {' '.join(p.name for p in written)}")
    print(f"total {results['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
