"""Benchmarks: the lecture's vectorization speedup; the attention step against plain matmul,
PyTorch and the machine's matmul roof, at the default thread count and pinned to one thread; its
speedup per core count; its scaling in C and n; its peak memory against the memory model; the
trainer's whole update at the studies' sizes against PyTorch.

:func:`run_benchmarks` runs the parts (:data:`PARTS`), writes ``bench.json``, ``report.txt`` and
one PNG per part to a run folder and returns the results with the report's lines.

Every number comes from one run: each measurement is repeated, the implementations and thread
settings that a ratio compares are timed in turn (:mod:`attnlab.bench.timing`), and the report
gives medians (``bench.json`` keeps every sample). The references (:mod:`attnlab.bench.references`)
are checked against the library before any timing.

The modules: ``plan`` (sizes of each mode, what a part is), ``timing``, ``machine``,
``references`` (plain matmul and PyTorch), one per part (``mlp_speedup``, ``step``,
``threads``, ``scaling``, ``memory``, ``research``, ``stack``), ``figures`` and ``report`` (the
text and the targets).
A new part is a module with its ``measure(options)``, a figure, report lines and targets, and
one entry of :data:`PARTS`.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from dataclasses import asdict
from pathlib import Path
from typing import Any

from attnlab.bench import figures, memory, mlp_speedup, research, scaling, stack, step, threads
from attnlab.bench import report as text
from attnlab.bench.machine import machine_info
from attnlab.bench.plan import MODES, Options, Part
from attnlab.bench.references import torch_note
from attnlab.bench.report import TARGETS
from mlp.train.folders import write_json, write_text
from mlp.validation import check_seed, positive

__all__ = ["MODES", "PARTS", "TARGETS", "Part", "run_benchmarks"]

#: The parts, in the order they run and report: name -> what it measures, draws and reports.
PARTS: dict[str, Part] = {
    "mlp": Part(mlp_speedup.measure, figures.mlp_figure, text.mlp_report),
    "step": Part(
        step.measure, figures.step_figure, text.step_report, text.step_targets, uses_torch=True
    ),
    "threads": Part(
        threads.measure,
        figures.threads_figure,
        text.threads_report,
        text.threads_targets,
        uses_torch=True,
    ),
    "scaling": Part(scaling.measure, figures.scaling_figure, text.scaling_report),
    "memory": Part(memory.measure, figures.memory_figure, text.memory_report, text.memory_targets),
    "research": Part(
        research.measure,
        figures.research_figure,
        text.research_report,
        text.research_targets,
        uses_torch=True,
    ),
    "stack": Part(stack.measure, stack.figure, stack.report, stack.targets, uses_torch=True),
}


def run_benchmarks(
    out: str | Path,
    *,
    mode: str = "quick",
    parts: Sequence[str] = tuple(PARTS),
    seed: int = 0,
    pinned: int = 1,
    use_torch: bool = True,
    quiet: float | None = None,
    command: str = "",
) -> dict[str, Any]:
    """Run the ``parts`` (names of :data:`PARTS`) at the sizes of ``mode`` (one of
    :data:`MODES`), write ``bench.json``, ``report.txt`` and ``<part>.png`` to the folder
    ``out`` (created), and return the results; ``results["report"]`` holds the report's lines.
    ``pinned`` is the thread count compared with the default (1: one core for everything);
    ``quiet`` (a share of the cores, or None) repeats the timing rounds disturbed by other
    processes (see :func:`attnlab.bench.timing.time_round_robin`); ``command`` is recorded as
    given."""
    if mode not in MODES:
        raise ValueError(f"mode: expected one of {', '.join(MODES)}, received {mode!r}")
    unknown = [p for p in parts if p not in PARTS]
    if unknown or not parts:
        raise ValueError(f"parts: expected some of {', '.join(PARTS)}, received {list(parts)}")
    seed = check_seed(seed)
    positive("pinned", pinned, integer=True)
    if quiet is not None:
        positive("quiet", quiet)
    selected = {name: part for name, part in PARTS.items() if name in parts}
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    note = torch_note(use_torch) if any(p.uses_torch for p in selected.values()) else None
    options = Options(MODES[mode], seed, pinned, quiet, note)
    results: dict[str, Any] = {
        "command": command,
        "mode": mode,
        "sizes": asdict(options.sizes),
        "machine": machine_info(),
        "part_seconds": {},
    }
    for name, part in selected.items():
        t0 = time.perf_counter()
        results[name] = part.measure(options)
        part.figure(results[name], out / f"{name}.png")
        results["part_seconds"][name] = time.perf_counter() - t0
    results["targets"] = text.check_targets(results, selected)
    results["runtime_s"] = time.perf_counter() - start
    write_json(out / "bench.json", results)
    results["report"] = text.report(results, selected)
    write_text(out / "report.txt", "\n".join(results["report"]) + "\n")
    return results
