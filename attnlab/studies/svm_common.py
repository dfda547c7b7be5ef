"""What the three "Transformers as SVMs" reports share: the source they cite, running a study's
seeds through the one sweep and reading the run folders back, and markdown cells."""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

from mlp.train.folders import load_arrays, read_json

#: The paper and the authors' code every published number of these studies comes from.
PAPER = (
    'Tarzanagh, Li, Thrampoulidis, Oymak, "Transformers as Support Vector Machines" '
    "(arXiv 2308.16898); code: github.com/ucr-optml/max_margin_attention, folder TFasSVM"
)


def sweep_runs(
    module: str,
    grid: Mapping[str, Sequence[Any]],
    fixed: Mapping[str, Any],
    seeds: Iterable[int],
    folder: Path,
    *,
    workers: int | None,
    scheduler: str | None,
    progress: bool,
    arrays: str | None = None,
) -> list[dict[str, Any]]:
    """The study ``module``'s runs through :func:`mlp.train.sweep.sweep` into ``folder``, read
    back in the order of the plan: for each run its resolved options (``config``), ``run_dir``
    (relative to ``folder.parent``), ``metrics`` (its ``metrics.json``) and, when ``arrays``
    names a file of the run folder, those arrays. A failed run raises ``RuntimeError`` naming
    ``failed.csv``."""
    from mlp.train.sweep import plan_sweep, sweep  # Dask only when a study runs

    seeds = list(seeds)
    result = sweep(
        module,
        grid,
        fixed,
        seeds=seeds,
        out=folder,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
    )
    if result.failed:
        raise RuntimeError(
            f"{result.failed} runs of {module} failed (their errors: {result.files['failed']})"
        )
    runs = []
    for run in plan_sweep(module, grid, fixed, seeds).runs:
        run_dir = folder / "runs" / run.run_id
        entry = {
            "config": run.config,
            "run_dir": str(run_dir.relative_to(folder.parent)),
            "metrics": read_json(run_dir / "metrics.json"),
        }
        if arrays is not None:
            entry["arrays"] = load_arrays(run_dir / arrays)
        runs.append(entry)
    return runs


def fmt(value: float | None, digits: int = 4) -> str:
    """A markdown cell: ``—`` for None or NaN, else ``value`` to ``digits`` decimals (``g``
    format with that many significant digits when ``digits`` is negative)."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return "—"
    return f"{value:.{-digits}g}" if digits < 0 else f"{value:.{digits}f}"


def table(header: Sequence[str], rows: Iterable[Sequence[str]]) -> list[str]:
    """A markdown table's lines."""
    lines = ["| " + " | ".join(header) + " |", "| " + " | ".join("---" for _ in header) + " |"]
    return lines + ["| " + " | ".join(map(str, row)) + " |" for row in rows]
