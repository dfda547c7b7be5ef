#!/usr/bin/env python3
"""Reproduce the formation of statistical induction heads on in-context Markov chains
(Edelman, Edelman, Goel, Malach, Tsilivis 2024).

    python scripts/reproduce_induction.py --out DIR [--seeds 0-4] [--workers 2]

Trains, for every seed, the authors' minimal model (200 SGD steps) and the two-layer
attention-only stack (2000 AdamW steps) with their relative positions (a vector per offset
added to the keys) and with a bias per offset, on sequences of k = 2 states and T = 100 tokens,
each from its own random Markov chain. The runs are a sweep (on a local Dask cluster, --workers
N, or --scheduler ADDRESS) into DIR/sweep, one run folder each (config.json, params.npz,
history.csv, curves.npz, metrics.json); DIR gets results.json, results.md, the figures kl.png,
probes.png, attention_relative-key.png, attention_relative.png and the animation
attention_relative-key.gif. --set KEY=VALUE changes an option of every run (smaller runs). A DIR
that already holds a reproduction is refused.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any

from attnlab.studies.induction import DEFAULTS, MODELS, checks, reproduce, resolve
from mlp.train.cli import ScriptParser, run_script
from mlp.train.folders import create_run_dir
from mlp.train.sweep import parse_seeds, parse_value


def seeds(text: str) -> range:
    """``A-B`` (both included) or ``A``."""
    try:
        return parse_seeds(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def assignment(text: str) -> tuple[str, Any]:
    """``KEY=VALUE`` with ``KEY`` an option of the study (``-`` or ``_``), the value read as
    the type of its default."""
    key, sep, value = text.partition("=")
    key = key.strip().replace("-", "_")
    fixed = ("seed", "model", "positions")
    if not sep or key not in DEFAULTS or key in fixed:
        options = ", ".join(k for k in DEFAULTS if k not in fixed)
        raise argparse.ArgumentTypeError(
            f"expected KEY=VALUE with KEY one of {options}, received {text!r}"
        )
    try:
        return key, parse_value(key, value.strip(), DEFAULTS[key])
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def parser() -> ScriptParser:
    p = ScriptParser(prog="reproduce_induction.py", description=__doc__.split("\n\n")[0])
    p.add_argument("--out", type=Path, help="output folder (default runs/induction-<timestamp>)")
    p.add_argument("--seeds", type=seeds, default=range(5), help="seeds A-B (0-4)")
    p.add_argument("--workers", type=int, help="local worker processes (default: cores)")
    p.add_argument("--scheduler", metavar="ADDRESS", help="a Dask scheduler, tcp://HOST:PORT")
    p.add_argument("--baseline-sequences", type=int, default=200_000,
                   help="sequences of the closed-form baselines (200000)")  # fmt: skip
    p.add_argument("--set", type=assignment, action="append", default=[], metavar="KEY=VALUE",
                   help="an option of every run, e.g. --set steps=100 (repeatable)")  # fmt: skip
    return p


def main(argv: list[str] | None = None) -> int:
    p = parser()
    args = p.parse_args(argv)
    if args.workers is not None and (args.workers < 0 or args.scheduler is not None):
        p.error(f"--workers: expected an integer >= 0 without --scheduler, received {args.workers}")

    def log(line: str) -> None:
        print(line, flush=True)

    def work() -> tuple[Path, dict]:
        for model in MODELS:  # bad options end here, before a folder is made
            resolve({**dict(args.set), "model": model})
        out = create_run_dir(args.out, "induction", files=("results.json", "results.md"))
        return out, reproduce(
            out,
            seeds=args.seeds,
            workers=args.workers,
            scheduler=args.scheduler,
            n_baseline=args.baseline_sequences,
            overrides=dict(args.set),
            log=log,
        )

    out, results = run_script(p, work)
    met = [ok for _, ok, _ in checks(results) if ok is not None]
    print(f"targets met: {sum(met)} of {len(met)}; wall time "
          f"{results['wall_s']:.0f} s; results: {out / 'results.md'}")  # fmt: skip
    print(f"output folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
