#!/usr/bin/env python3
"""Reproduce in-context regression with depth (Ahn, Cheng, Daneshmand and Sra 2023): L linear
attention layers learn L steps of preconditioned gradient descent.

    python scripts/reproduce_icl_depth.py --out DIR [--workers 2] [--seeds 0-2]

Trains Ahn et al.'s linear transformer (d = 5, N = 20) on fresh prompts for both covariances
(identity and rotated), both variants (gd: B_l = 0 held fixed, L = 1..4; full: A_l and B_l
trained, L = 2..4) and every seed, as a sweep (on a local Dask cluster, --workers N, or
--scheduler ADDRESS) into DIR/sweep, one run folder each (config.json, params.npz with A, B and
Sigma, history.csv, metrics.json). DIR gets results.json, results.md (every run and every check
of the targets), loss_vs_depth.png and params/*.png (heatmaps of the learned A_l, B_l). A DIR that
already holds a reproduction is refused. --steps, --batch-size, --n-test and --layers shrink the
runs (for a quick look; the checks are made for the full setting).
"""

from __future__ import annotations

import sys
from pathlib import Path

from attnlab.studies.icl_depth import LAYERS, SETTINGS, reproduce
from mlp.train.cli import ScriptParser, run_script
from mlp.train.folders import create_run_dir
from mlp.train.sweep import parse_seeds


def seed_range(text: str) -> range:
    """``"A-B"`` (inclusive) or one seed ``"A"``."""
    return parse_seeds(text)


def layer_list(text: str) -> list[int]:
    """``"1,2,3"``: the numbers of layers to train (a variant keeps those it has)."""
    try:
        values = [int(v) for v in text.split(",")]
    except ValueError:
        raise ValueError(f"expected numbers of layers like 1,2,3, received {text!r}") from None
    if not values or min(values) < 1:
        raise ValueError(f"expected numbers of layers >= 1, received {text!r}")
    return values


def parser() -> ScriptParser:
    p = ScriptParser(prog="reproduce_icl_depth.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="output folder (default runs/icl-depth-<timestamp>)")
    p.add_argument("--seeds", type=seed_range, default=range(3), help="seeds A-B (0-2)")
    p.add_argument("--workers", type=int, help="local worker processes (default: cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, tcp://HOST:PORT")
    p.add_argument("--steps", type=int, help="Adam updates of every run (default: per variant)")
    p.add_argument("--batch-size", type=int, help="fresh prompts per update (default: per variant)")
    p.add_argument("--n-test", type=int, help="test prompts per run (100000)")
    p.add_argument("--layers", type=layer_list, help="numbers of layers, e.g. 1,2 (1-4)")
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.workers is not None and (args.workers < 0 or args.scheduler is not None):
        p.error(f"--workers: expected an integer >= 0 without --scheduler, received {args.workers}")
    given = {"steps": args.steps, "batch_size": args.batch_size, "n_test": args.n_test}
    override = {k: v for k, v in given.items() if v is not None}
    layers = {v: [L for L in LAYERS[v] if args.layers is None or L in args.layers] for v in LAYERS}

    def log(line: str) -> None:
        print(line, flush=True)

    def work() -> tuple[Path, dict]:
        out = create_run_dir(args.out, "icl-depth", files=("results.json", "results.md"))
        return out, reproduce(
            out,
            seeds=args.seeds,
            settings={v: override for v in SETTINGS},
            layers=layers,
            workers=args.workers,
            scheduler=args.scheduler,
            log=log,
        )

    out, results = run_script(p, work)
    found = results["checks"]
    bad = [c for c in found if not c["ok"]]
    print(f"{len(found) - len(bad)} of {len(found)} checks hold; {results['wall_s'] / 60:.1f} min")
    for c in bad:
        print(
            f"  does not hold: {c['check']} = {c['value']:.4g} (target {c['target']:g}), "
            f"{c['variant']} {c['covariance']} L={c['layers']} seed {c['seed']}"
        )
    print(f"results: {out / 'results.md'}")
    print(f"output folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
