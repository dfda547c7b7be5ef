#!/usr/bin/env python3
"""Reproduce in-context linear regression with linear attention (Zhang, Frei and Bartlett 2023)
and its one-step-GD reading (von Oswald et al. 2023).

    python scripts/reproduce_icl.py --out DIR [--seeds 0-4] [--steps 12000] [--workers 2]

Trains the linear self-attention layer (all of W and v, from the paper's init) on fresh prompts
for both covariances (identity and spread = diag(linspace(0.5, 2, d))) and every seed, then
measures on the first identity run the test loss against the prompt length M (with the theory
R(M)), the comparison with one step of GD, and the loss under covariate shift. The runs are a
sweep (on a local Dask cluster, --workers N, or --scheduler ADDRESS) into DIR/sweep, one run
folder each (params.npz, config.json, metrics.json, history.csv, errors.npz); DIR gets
results.json, results.md and the figures rel_error.png, length.png, gd.png and shift.png. A DIR
that already holds a reproduction is refused.
"""

from __future__ import annotations

import sys
from pathlib import Path

from attnlab.studies.icl import DEFAULTS, reproduce
from mlp.train.cli import ScriptParser, run_script
from mlp.train.folders import create_run_dir


def seed_range(text: str) -> range:
    """``"A-B"`` (inclusive) or a single seed ``"A"``."""
    first, _, last = text.partition("-")
    try:
        a, b = int(first), int(last or first)
    except ValueError:
        raise ValueError(f"expected seeds as A-B or A, received {text!r}") from None
    if a < 0 or b < a:
        raise ValueError(f"expected seeds A-B with 0 <= A <= B, received {text!r}")
    return range(a, b + 1)


def parser() -> ScriptParser:
    d = DEFAULTS
    p = ScriptParser(prog="reproduce_icl.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="output folder (default runs/icl-<timestamp>)")
    p.add_argument("--seeds", type=seed_range, default=range(5), help="seeds A-B (0-4)")
    p.add_argument("--d", type=int, default=d["d"], help=f"features d ({d['d']})")
    p.add_argument("--N", type=int, default=d["N"], help=f"in-context examples N ({d['N']})")
    p.add_argument("--sigma", type=float, default=d["sigma"], help=f"init scale ({d['sigma']})")
    p.add_argument("--steps", type=int, default=d["steps"], help=f"SGD updates ({d['steps']})")
    p.add_argument("--n-test", type=int, default=d["n_test"], help=f"test prompts ({d['n_test']})")
    p.add_argument("--n-gd", type=int, default=10_000, help="prompts of the GD comparison (10000)")
    p.add_argument("--workers", type=int, help="local worker processes (default: cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, tcp://HOST:PORT")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.workers is not None and (args.workers < 0 or args.scheduler is not None):
        p.error(f"--workers: expected an integer >= 0 without --scheduler, received {args.workers}")

    def log(line: str) -> None:
        print(line, flush=True)

    def work() -> tuple[Path, dict]:
        out = create_run_dir(args.out, "icl", files=("results.json", "results.md"))
        return out, reproduce(
            out,
            d=args.d,
            N=args.N,
            sigma=args.sigma,
            seeds=args.seeds,
            steps=args.steps,
            n_test=args.n_test,
            n_gd=args.n_gd,
            workers=args.workers,
            scheduler=args.scheduler,
            log=log,
        )

    out, results = run_script(p, work)
    worst = max(r["rel_error"] for r in results["runs"])
    print(f"largest rel_error {worst:.4f}; results: {out / 'results.md'}")
    print(f"output folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
