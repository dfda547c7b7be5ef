#!/usr/bin/env python3
"""Time a sweep on an embedded Dask cluster against the same runs one after another in one
process, as the commands a user types, and print the ratio.

    python scripts/bench_sweep.py attention --set steps=1000 --seeds 0-7 --workers 2 --repeat 3

Each repeat runs `scripts/sweep.py EXPERIMENT --set ... --seeds ...` twice, into fresh folders
under --out (default a temporary folder): with --workers 0 (one run after another in the
command's process) and with --workers N (a new cluster: its start and close are included), in
alternating order so that a slow spell of a shared machine hits both. Every wall time is
printed with the load average before it, then the medians and their ratio; --out also gets
bench_sweep.json.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from mlp.train.cli import ScriptParser

SWEEP = Path(__file__).resolve().parent / "sweep.py"


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
    out = args.out or Path(tempfile.mkdtemp(prefix="bench_sweep-"))
    options = [a for s in args.set for a in ("--set", s)]
    times: dict[int, list[float]] = {0: [], args.workers: []}
    rows = []
    for i in range(args.repeat):
        for workers in (0, args.workers) if i % 2 == 0 else (args.workers, 0):
            folder = out / f"workers{workers}-repeat{i}"
            command = [sys.executable, str(SWEEP), args.experiment, *options]
            command += ["--seeds", args.seeds, "--out", str(folder), "--workers", str(workers)]
            load = os.getloadavg()[0]
            start = time.perf_counter()
            proc = subprocess.run(command, capture_output=True, text=True)
            seconds = time.perf_counter() - start
            if proc.returncode != 0:
                p.fail(proc.returncode, proc.stderr.strip().splitlines()[-1])
            times[workers].append(seconds)
            rows.append({"workers": workers, "seconds": seconds, "load_before": load})
            print(
                f"repeat {i}: workers {workers}: {seconds:6.1f} s (load average {load:.2f} before)",
                flush=True,
            )
    median = {w: statistics.median(t) for w, t in times.items()}
    ratio = median[args.workers] / median[0]
    (out / "bench_sweep.json").write_text(
        json.dumps({**vars(args), "rows": rows, "median": median, "ratio": ratio}, default=str)
    )
    print(
        f"median {median[0]:.1f} s one after another, {median[args.workers]:.1f} s on "
        f"{args.workers} workers: ratio {ratio:.2f} (load average now "
        f"{os.getloadavg()[0]:.2f}, {os.cpu_count()} cores)"
    )
    print(f"wrote {out}/bench_sweep.json")
    return 0


if __name__ == "__main__":
    sys.exit(main())
