"""The report of a sweep: statistics over the seeds of each grid point, as tables and figures.

The rows are those of ``results.csv`` (text cells, one row per run). A grid point is one value
of every option but the seed; a swept option is one with more than one value among the rows; a
numeric metric is any other column (``run_id`` aside) whose non-empty cells all read as numbers
(``True``/``False`` as 1/0, so that the mean of a yes/no metric is the fraction of yes).

- ``summary.csv``: one row per grid point and numeric metric: the swept options, ``metric``,
  ``count`` (finite values), ``mean``, ``std`` (over the seeds, ddof 1), ``min``, ``max`` and the
  seeds where the minimum and the maximum are reached;
- ``summary.md``: the same, one table per metric, under the options every run shares;
- ``figures/METRIC_vs_OPTION.png``: per numeric metric (``wall_seconds`` aside) and swept
  option, the mean over the seeds with a band of one standard deviation against a numeric
  option, grouped bars with error bars for a categorical one; one line or bar per value of the
  other swept options. A sweep of seeds alone gets ``figures/seeds.png`` instead: a panel per
  metric with the value of each seed, the mean and the lowest seed.
"""

from __future__ import annotations

import csv
import json
import math
import re
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from mlp.train.folders import to_jsonable

#: Columns of results.csv that are not metrics.
NOT_METRICS = ("run_id",)
STATS = ("count", "mean", "std", "min", "max", "min_seed", "max_seed")


def as_number(text: str) -> float | None:
    """A cell as a float (``True``/``False`` as 1/0, empty as NaN); None if not a number."""
    if text in ("True", "False"):
        return float(text == "True")
    if text == "":
        return math.nan
    try:
        return float(text)
    except ValueError:
        return None


def numeric_columns(rows: Sequence[Mapping[str, str]], columns: Sequence[str]) -> list[str]:
    """The columns whose cells all read as numbers, with at least one finite value."""
    keep = []
    for c in columns:
        values = [as_number(r.get(c, "")) for r in rows]
        if values and None not in values and any(math.isfinite(v) for v in values):  # type: ignore[arg-type]
            keep.append(c)
    return keep


def statistics(values: Sequence[float], seeds: Sequence[str]) -> dict[str, Any]:
    """Count, mean, std (ddof 1), min, max of the finite ``values``, and the seeds of the min
    and the max (``seeds[i]`` belongs to ``values[i]``); None where undefined."""
    v = np.asarray(values, dtype=np.float64)
    ok = np.isfinite(v)
    if not ok.any():
        return {"count": 0, **dict.fromkeys(STATS[1:])}
    idx = np.flatnonzero(ok)
    f = v[ok]
    return {
        "count": int(ok.sum()),
        "mean": float(f.mean()),
        "std": float(f.std(ddof=1)) if f.size > 1 else None,
        "min": float(f.min()),
        "max": float(f.max()),
        "min_seed": seeds[idx[int(f.argmin())]],
        "max_seed": seeds[idx[int(f.argmax())]],
    }


def swept_options(
    rows: Sequence[Mapping[str, str]], options: Sequence[str], first: Sequence[str] = ()
) -> list[str]:
    """The options that tell the grid points apart: those of ``first`` (the grid's) that vary
    among the rows, then every other varying option that the ones before it do not determine
    (``steps`` that follows from ``features`` is left out)."""
    varying = [k for k in options if len({r.get(k, "") for r in rows}) > 1]
    shown = [k for k in first if k in varying]
    for k in varying:
        values: dict[tuple[str, ...], set[str]] = {}
        for r in rows:
            values.setdefault(tuple(r.get(s, "") for s in shown), set()).add(r.get(k, ""))
        if k not in shown and any(len(v) > 1 for v in values.values()):
            shown.append(k)
    return shown


def summarize(
    rows: Sequence[Mapping[str, str]], config_keys: Sequence[str], grid: Sequence[str] = ()
) -> tuple[list[str], list[str], list[dict[str, Any]]]:
    """``(swept options, numeric metrics, summary rows)``; one summary row per grid point and
    metric, grid points in order of first appearance (see :func:`swept_options` for ``grid``)."""
    options = [k for k in config_keys if k != "seed"]
    swept = swept_options(rows, options, grid)
    columns = dict.fromkeys(c for r in rows for c in r)
    metrics = numeric_columns(
        rows, [c for c in columns if c not in config_keys and c not in NOT_METRICS]
    )
    points: dict[tuple[str, ...], list[Mapping[str, str]]] = {}
    for r in rows:
        points.setdefault(tuple(r.get(k, "") for k in options), []).append(r)
    summary = []
    for group in points.values():
        seeds = [r.get("seed", "") for r in group]
        for m in metrics:
            values = [as_number(r.get(m, "")) for r in group]
            stats = statistics([math.nan if v is None else v for v in values], seeds)
            summary.append({**{k: group[0].get(k, "") for k in swept}, "metric": m, **stats})
    return swept, metrics, summary


def cell(value: Any) -> str:
    """A CSV cell: floats in full precision (``repr``), None empty, lists and dicts as JSON."""
    if isinstance(value, np.generic):
        value = value.item()
    if value is None:
        return ""
    if isinstance(value, (bool, int, float)):
        return repr(value)
    if isinstance(value, str):
        return value
    return json.dumps(to_jsonable(value))


def _fmt(v: Any) -> str:
    return f"{v:.6g}" if isinstance(v, float) else cell(v)


def summary_markdown(
    experiment: str,
    rows: Sequence[Mapping[str, str]],
    config_keys: Sequence[str],
    swept: Sequence[str],
    summary: Sequence[Mapping[str, Any]],
    n_failed: int,
) -> str:
    """The text of ``summary.md``."""
    seeds = sorted({int(r["seed"]) for r in rows if r.get("seed", "").isdigit()})
    options = [k for k in config_keys if k != "seed"]
    shared = [k for k in options if len({r.get(k, "") for r in rows}) == 1]
    derived = [k for k in options if k not in swept and k not in shared]
    points = len({tuple(r.get(k, "") for k in swept) for r in rows})
    lines = [
        f"# Sweep of {experiment}: mean over seeds",
        "",
        f"{len(rows)} finished runs (results.csv), {points} grid points, seeds "
        f"{_seed_ranges(seeds)}; {n_failed} failed runs (failed.csv). Statistics over the seeds "
        "of each grid point: std with ddof 1, `min seed` and `max seed` where the extremes are.",
        "",
    ]
    if rows and shared:
        lines += ["Options shared by every run: " + ", ".join(f"{k}={rows[0][k]}" for k in shared)]
        lines += [""]
    if derived:
        lines += [
            f"Options that follow from the swept ones (see results.csv): {', '.join(derived)}"
        ]
        lines += [""]
    for metric in dict.fromkeys(s["metric"] for s in summary):
        head = [*swept, *[s.replace("_", " ") for s in STATS]]
        lines += [f"## {metric}", "", "| " + " | ".join(head) + " |"]
        lines += ["|" + " --- |" * len(head)]
        for s in summary:
            if s["metric"] == metric:
                cells = [*(s[k] for k in swept), *(s[k] for k in STATS)]
                lines.append("| " + " | ".join(_fmt(c) for c in cells) + " |")
        lines.append("")
    return "\n".join(lines)


def _seed_ranges(seeds: Sequence[int]) -> str:
    """``[0, 1, 2, 5]`` -> ``"0-2, 5"``."""
    parts: list[str] = []
    for s in seeds:
        if parts and s == int(parts[-1].split("-")[-1]) + 1:
            parts[-1] = f"{parts[-1].split('-')[0]}-{s}"
        else:
            parts.append(str(s))
    return ", ".join(parts) or "none"


def plot_metric(
    rows: Sequence[Mapping[str, str]],
    metric: str,
    key: str,
    swept: Sequence[str],
    path: Path,
    title: str,
) -> Path:
    """One figure: ``metric`` (mean over seeds) against the swept option ``key``, one line (a
    numeric option, with a band of one standard deviation) or one bar per group (a categorical
    option, with error bars) per value of the other swept options."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    others = [k for k in swept if k != key]
    xs = list(dict.fromkeys(r[key] for r in rows))
    numbers: dict[str, float] = {}  # the finite numeric values; yes/no values are categories
    for x in xs:
        v = None if x in ("True", "False") else as_number(x)
        if v is not None and math.isfinite(v):
            numbers[x] = v
    is_numeric = len(numbers) == len(xs)
    if is_numeric:
        xs = sorted(xs, key=numbers.__getitem__)
    series: dict[str, dict[str, list[float]]] = {}
    for r in rows:
        label = ", ".join(f"{k}={r[k]}" for k in others) or "mean over seeds"
        value = as_number(r.get(metric, ""))
        if value is not None and math.isfinite(value):
            series.setdefault(label, {}).setdefault(r[key], []).append(value)
    fig, ax = plt.subplots(figsize=(6.4, 4.2), layout="constrained")
    width = 0.8 / max(len(series), 1)
    for i, (label, by_x) in enumerate(series.items()):
        at = [x for x in xs if x in by_x]
        mean = np.array([np.mean(by_x[x]) for x in at])
        std = np.array([np.std(by_x[x], ddof=1) if len(by_x[x]) > 1 else 0.0 for x in at])
        if is_numeric:
            pos = np.array([numbers[x] for x in at])
            (line,) = ax.plot(pos, mean, marker="o", label=label)
            ax.fill_between(pos, mean - std, mean + std, color=line.get_color(), alpha=0.2)
        else:
            pos = np.array([xs.index(x) for x in at]) + (i - (len(series) - 1) / 2) * width
            ax.bar(pos, mean, width, yerr=std, capsize=3, label=label)
    if is_numeric:
        values = [numbers[x] for x in xs]
        if min(values) > 0 and max(values) / min(values) >= 20:
            ax.set_xscale("log")
    else:
        ax.set_xticks(range(len(xs)), xs)
    band = "band" if is_numeric else "error bars"
    ax.set(xlabel=key, ylabel=metric, title=f"{title}\nmean over seeds, {band}: ± 1 std")
    ax.legend(title=", ".join(others) or None, fontsize="small")
    ax.grid(alpha=0.3)
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def plot_over_seeds(
    rows: Sequence[Mapping[str, str]], metrics: Sequence[str], path: Path, title: str
) -> Path:
    """One figure for a sweep that swept no option: a panel per metric, with the metric of
    each seed (a dot per run), the mean over the seeds (a line) and the lowest seed labelled."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, axes = plt.subplots(
        len(metrics),
        1,
        figsize=(6.4, 1.2 + 1.7 * len(metrics)),
        sharex=True,
        squeeze=False,
        layout="constrained",
    )
    for ax, metric in zip(axes[:, 0], metrics, strict=True):
        points = [(int(r["seed"]), as_number(r.get(metric, ""))) for r in rows]
        points = sorted((s, v) for s, v in points if v is not None and math.isfinite(v))
        if points:
            seeds, values = zip(*points, strict=True)
            ax.plot(seeds, values, "o", markersize=3)
            mean = float(np.mean(values))
            ax.axhline(mean, color="C1", label=f"mean {mean:.6g}")
            low = int(np.argmin(values))
            ax.annotate(
                f"seed {seeds[low]}: {values[low]:.6g}",
                (seeds[low], values[low]),
                textcoords="offset points",
                xytext=(6, 4),
                fontsize="small",
            )
            ax.legend(fontsize="small", loc="best")
        ax.set_ylabel(metric, fontsize="small")
        ax.ticklabel_format(axis="y", useOffset=False)  # 0.99999999999, not 1e-11 + ...
        ax.grid(alpha=0.3)
    axes[-1, 0].set_xlabel("seed")
    axes[0, 0].set_title(f"{title}\none dot per seed, the line at the mean, the lowest labelled")
    fig.savefig(path, dpi=110)
    plt.close(fig)
    return path


def write_report(
    out: str | Path,
    experiment: str,
    config_keys: Sequence[str],
    rows: Sequence[Mapping[str, str]],
    n_failed: int,
    grid: Sequence[str] = (),
) -> dict[str, Path]:
    """Write ``summary.csv``, ``summary.md`` and ``figures/`` into ``out``; returns their paths
    (``figures``: the folder). ``grid``: the options of
    the grid, shown first (see :func:`swept_options`)."""
    out = Path(out)
    swept, metrics, summary = summarize(rows, config_keys, grid)
    with open(out / "summary.csv", "w", newline="") as f:
        writer = csv.DictWriter(f, [*swept, "metric", *STATS], lineterminator="\n")
        writer.writeheader()
        writer.writerows([{k: cell(v) for k, v in s.items()} for s in summary])
    text = summary_markdown(experiment, rows, config_keys, swept, summary, n_failed)
    (out / "summary.md").write_text(text)
    figures = out / "figures"
    figures.mkdir(exist_ok=True)
    for old in figures.glob("*_vs_*.png"):
        old.unlink()
    (figures / "seeds.png").unlink(missing_ok=True)
    n_seeds = len({r.get("seed") for r in rows})
    plotted = [m for m in metrics if m != "wall_seconds"]
    if not swept and rows and plotted:
        title = f"{experiment} experiment, {n_seeds} seeds"
        plot_over_seeds(rows, plotted, figures / "seeds.png", title)
    for metric in plotted:
        for key in swept:
            name = re.sub(r"[^A-Za-z0-9_.-]", "-", f"{metric}_vs_{key}") + ".png"
            plot_metric(
                rows,
                metric,
                key,
                swept,
                figures / name,
                f"{metric} against {key} ({experiment} experiment, {n_seeds} seeds)",
            )
    return {
        "results": out / "results.csv",
        "failed": out / "failed.csv",
        "summary": out / "summary.md",
        "summary_csv": out / "summary.csv",
        "figures": figures,
    }
