#!/usr/bin/env python3
"""Time a sweep on an embedded Dask cluster against the same runs one after another in one
process, and print the ratio.

    python scripts/bench_sweep.py attention --set steps=600 --seeds 0-7 --workers 2 --repeat 3

Each repeat runs the sweep twice into fresh folders under --out (default a temporary folder):
with --workers 0 (one after another in this process) and with --workers N (cluster start and
close included), in alternating order so that a slow spell of a shared machine hits both. The
table gives every wall time, the median of each, the ratio of the medians, the mean wall time
of one run (results.csv) and the load average before each sweep. --out also gets
bench_sweep.json.
"""

from __future__ import annotations

import json
import os
import statistics
import sys
import tempfile
import time
from pathlib import Path

from attnlab.sweep import Table, parse_assignment, parse_seeds, sweep
from mlp.train.cli import ScriptParser, run_script


def main(argv: list[str] | None = None) -> int:
    p = ScriptParser(prog="bench_sweep.py", description=__doc__.split("\n\n")[0])
    p.add_argument("experiment", metavar="EXPERIMENT")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE")
    p.add_argument("--seeds", default="0-7", metavar="A-B", help="(default 0-7: 8 runs)")
    p.add_argument("--workers", type=int, default=2, help="(default 2)")
    p.add_argument("--repeat", type=int, default=3, help="(default 3)")
    p.add_argument("--out", type=Path, default=None, metavar="DIR")
    args = p.parse_args(argv)
    if args.workers < 1 or args.repeat < 1:
        p.error("--workers and --repeat: expected positive integers")
    try:
        items = [parse_assignment(s) for s in args.set]
        seeds = parse_seeds(args.seeds)
    except ValueError as err:
        p.error(str(err))
    if any(len(v) != 1 for _, v in items):
        p.error("--set: expected KEY=VALUE, one value each")
    fixed = {k: v[0] for k, v in items}
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_sweep-"))

    def work() -> dict:
        times: dict[int, list[float]] = {0: [], args.workers: []}
        rows = []
        for i in range(args.repeat):
            for workers in (0, args.workers) if i % 2 == 0 else (args.workers, 0):
                load = os.getloadavg()[0]
                start = time.perf_counter()
                folder = out / f"workers{workers}-repeat{i}"
                sweep(args.experiment, {}, fixed, seeds, folder, workers=workers, progress=False)
                seconds = time.perf_counter() - start
                times[workers].append(seconds)
                run = statistics.mean(
                    float(r["wall_seconds"]) for r in Table(folder / "results.csv").rows
                )
                rows.append({"workers": workers, "seconds": seconds, "run": run, "load": load})
                print(
                    f"repeat {i}: workers {workers}: {seconds:6.1f} s (one run {run:.2f} s, "
                    f"load average {load:.2f} before)",
                    flush=True,
                )
        median = {w: statistics.median(t) for w, t in times.items()}
        return {"rows": rows, "median": median, "ratio": median[args.workers] / median[0]}

    result = run_script(p, work)
    (out / "bench_sweep.json").write_text(json.dumps({**vars(args), **result}, default=str))
    print(
        f"{len(seeds)} runs: median {result['median'][0]:.1f} s one after another, "
        f"{result['median'][args.workers]:.1f} s on {args.workers} workers: ratio "
        f"{result['ratio']:.2f} (load average now {os.getloadavg()[0]:.2f}, "
        f"{os.cpu_count()} cores)"
    )
    print(f"wrote {out}/bench_sweep.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
