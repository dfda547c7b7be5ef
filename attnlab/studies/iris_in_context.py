"""The demo's study: iris-in-context with the defaults of each attention and number of features,
over seeds.

Its experiment is the attention experiment (:mod:`attnlab.studies.attention`) on its default
task; :func:`evaluate_defaults` runs the seeds through the one sweep and summarizes them against
:data:`TARGETS`, and :func:`reproduce` writes that summary as ``results.json`` and
``results.md`` beside the sweep's own report (``results.csv``, ``summary.md``, ``figures/``).
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.studies.attention import DEFAULTS, NAME, PRELOAD, resolve, run_experiment
from mlp.train.folders import write_json, write_text
from mlp.train.sweep import SweepResult, sweep
from mlp.train.sweep_report import statistics

__all__ = [
    "DEFAULTS",
    "NAME",
    "PRELOAD",
    "TARGETS",
    "evaluate_defaults",
    "reproduce",
    "resolve",
    "results_markdown",
    "run_experiment",
]

#: What iris-in-context reaches with the defaults, per features: the mean test accuracy over
#: seeds, and the mean weight on the marked token of the test prompts (None: no target).
TARGETS: dict[int, tuple[float, float | None]] = {4: (0.93, 0.9), 2: (0.72, None)}


def evaluate_defaults(
    attentions: Sequence[str] = ("prompt", "self", "kq"),
    features: Sequence[int] = (4, 2),
    seeds: Iterable[int] = range(5),
    out: str | Path = "runs/iris-in-context",
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], SweepResult]:
    """iris-in-context with the defaults of each attention and number of features, over
    ``seeds``: a sweep (:func:`mlp.train.sweep.sweep`, its ``workers`` and ``scheduler``) into
    the sweep folder ``out``, whose runs already done are reused.

    Returns ``(table, sweep result)``: one table row per ``(attention, features)``, with
    ``runs`` (the finished ones), ``test_accuracy`` and ``attention_on_target`` as ``(mean,
    min)`` over the seeds, ``seconds`` (the median wall time of one run), ``targets``
    (:data:`TARGETS`) and ``met`` (every target reached, every run finished).
    """
    seeds = list(dict.fromkeys(seeds))  # read twice: by the sweep and for the count
    result = sweep(
        __name__,
        {"attention": list(attentions), "features": list(features)},
        seeds=seeds,
        out=out,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
    )
    table = []
    for attention in dict.fromkeys(attentions):
        for n_features in dict.fromkeys(features):
            rows = [
                r
                for r in result.rows
                if r["attention"] == attention and int(r["features"]) == n_features
            ]
            stats = {}
            for key in ("test_accuracy", "attention_on_target"):
                s = statistics([float(r[key]) for r in rows], [r["seed"] for r in rows])
                stats[key] = (s["mean"], s["min"]) if s["count"] else (np.nan, np.nan)
            sec = [float(r["wall_seconds"]) for r in rows]
            want_acc, want_att = TARGETS[n_features]
            met = (
                len(rows) == len(seeds)
                and stats["test_accuracy"][0] >= want_acc
                and (want_att is None or stats["attention_on_target"][0] >= want_att)
            )
            table.append(
                {
                    "attention": attention,
                    "features": n_features,
                    "runs": len(rows),
                    "seeds": len(seeds),
                    **stats,
                    "seconds": float(np.median(sec)) if sec else np.nan,
                    "targets": (want_acc, want_att),
                    "met": bool(met),
                }
            )
    return table, result


def results_markdown(table: Sequence[dict[str, Any]]) -> str:
    """The table of :func:`evaluate_defaults` as text: one row per (attention, features)."""
    header = (
        f"{'attention':<9} {'features':>8} {'test acc':>9} {'min':>6} {'attn on target':>15} "
        f"{'min':>6} {'s/run':>6}  target"
    )
    lines = [header, "-" * len(header)]
    for row in table:
        (acc, acc_min), (att, att_min) = row["test_accuracy"], row["attention_on_target"]
        want_acc, want_att = row["targets"]
        goal = f"acc >= {want_acc}" + (f", attn >= {want_att}" if want_att else "")
        runs = "" if row["runs"] == row["seeds"] else f" ({row['runs']} of {row['seeds']} runs)"
        lines.append(
            f"{row['attention']:<9} {row['features']:>8} {acc:>9.3f} {acc_min:>6.3f} "
            f"{att:>15.3f} {att_min:>6.3f} {row['seconds']:>6.2f}  "
            f"{goal}: {'met' if row['met'] else 'NOT met'}{runs}"
        )
    return "\n".join(lines) + "\n"


def reproduce(
    out: str | Path = "runs/iris-in-context",
    *,
    attentions: Sequence[str] = ("prompt", "self", "kq"),
    features: Sequence[int] = (4, 2),
    seeds: Iterable[int] = range(5),
    workers: int | None = None,
    scheduler: str | None = None,
    progress: bool = True,
) -> tuple[list[dict[str, Any]], SweepResult]:
    """:func:`evaluate_defaults` into ``out``, then ``out/results.json`` (the table) and
    ``out/results.md`` (:func:`results_markdown`); the figures are the sweep's
    (``out/figures/``). Returns what :func:`evaluate_defaults` returns."""
    seeds = list(dict.fromkeys(seeds))
    table, result = evaluate_defaults(
        attentions,
        features,
        seeds,
        out,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
    )
    out = Path(out)
    title = f"iris-in-context, C = 16, default options, seeds {seeds[0]}-{seeds[-1]}\n\n"
    write_json(out / "results.json", {"seeds": seeds, "table": table})
    write_text(out / "results.md", title + "```\n" + results_markdown(table) + "```\n")
    return table, result
