#!/usr/bin/env python3
"""Benchmarks: the lecture's vectorization speedup, and the attention step against plain matmul,
PyTorch and the machine's matmul roof, at the default thread count and on one thread; its
speedup per core count; its scaling in C and n; its peak memory; the trainer's update at the
studies' sizes against PyTorch.

    python scripts/bench.py                   # quick sizes (a few minutes on 2 cores)
    python scripts/bench.py --full            # larger sizes (MLP to n = 1e6, longer scans)
    python scripts/bench.py --only research   # one part (mlp, step, threads, scaling, memory,
                                              # research)

The measurements, references and report are in the package ``attnlab.bench``; the run folder
(``--out``, default ``runs/bench-<timestamp>``) gets ``bench.json``, ``report.txt`` and the PNG
plots. The report's tables are in the Markdown form of ``docs/performance.md``.
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

from attnlab.bench import PARTS, run_benchmarks
from mlp.train.cli import ScriptParser, run_script
from mlp.train.folders import create_run_dir


def parse_args(argv: list[str] | None = None) -> tuple[ScriptParser, argparse.Namespace]:
    p = ScriptParser(prog="bench.py", description=__doc__.split("\n\n")[0])
    mode = p.add_mutually_exclusive_group()
    mode.add_argument("--full", action="store_true", help="larger sizes")
    mode.add_argument(
        "--quick-test", action="store_true", help="tiny sizes, one repeat (for the tests)"
    )
    p.add_argument("--only", choices=tuple(PARTS), default=None, help="run one part")
    p.add_argument(
        "--threads",
        type=int,
        default=1,
        help="the thread count compared with the default (attnlab, BLAS and torch), default 1",
    )
    p.add_argument("--no-torch", action="store_true", help="skip the PyTorch columns")
    p.add_argument(
        "--quiet",
        type=float,
        default=None,
        metavar="SHARE",
        help="on a shared machine: rerun the timing rounds during which other processes used "
        "more than SHARE of the cores (e.g. 0.1), keep the quietest",
    )
    p.add_argument("--seed", type=int, default=0)
    p.add_argument("--out", type=Path, default=None, help="run folder (default runs/bench-<time>)")
    args = p.parse_args(argv)
    for flag, value, low in (("--threads", args.threads, 1), ("--seed", args.seed, 0)):
        if value < low:
            kind = "a positive" if low == 1 else "a non-negative"
            p.error(f"{flag}: expected {kind} integer, received {value}")
    return p, args


def main(argv: list[str] | None = None) -> int:
    parser, args = parse_args(argv)
    mode = "full" if args.full else "quick-test" if args.quick_test else "quick"
    command = " ".join([Path(sys.argv[0]).name, *(argv if argv is not None else sys.argv[1:])])

    def work() -> tuple[Path, dict]:
        out = create_run_dir(args.out, "bench", files=("bench.json", "report.txt"))
        return out, run_benchmarks(
            out,
            mode=mode,
            parts=(args.only,) if args.only else tuple(PARTS),
            seed=args.seed,
            pinned=args.threads,
            use_torch=not args.no_torch,
            quiet=args.quiet,
            command=command,
        )

    out, results = run_script(parser, work)
    print("\n".join(results["report"]))
    print(f"\nruntime: {results['runtime_s']:.1f} s")
    print(f"run folder: {out}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
