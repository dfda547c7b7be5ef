"""``svm-rank``: the rank of the attention SVM's solutions (Tarzanagh et al., "Transformers as
Support Vector Machines", arXiv 2308.16898, ``TFasSVM/svm_rank.ipynb``).

For an instance of the ``max-margin`` data (:func:`attnlab.tasks.max_margin` with ``n``
prompts of ``T`` unit tokens in ``d`` dimensions, drawn by ``default_rng(seed)``) and its
globally optimal tokens (best ``y_i v^T x_it``), solve the Frobenius SVM ``W^mm``
(:func:`attnlab.svm.attention_svm`) and the nuclear-norm SVM ``W_*``
(:func:`attnlab.svm.attention_svm_nuclear`), and count their numerical ranks: the singular values
above ``threshold`` times the largest. ``W^mm = sum_k lambda_k (x_a - x_t) z_i^T`` has rank at
most ``min(n, d)``; ``W_*`` no more. An instance whose constraints cannot all hold (at ``d = 1``
nearly every one: the unit tokens are +-1, so most prompts repeat their selected token) is
skipped and counted in ``infeasible``. The authors' loop means to do the same (``try``/``except``,
then the next seed), but cvxpy reports an infeasible problem by its status, not by raising, and
``numpy.linalg.matrix_rank(None)`` is 1: in their figure an infeasible instance counts as rank 1.
Their nuclear-norm solutions come from cvxpy's default solver for this problem, SCS at its
default tolerance (1e-4), and their rank counts singular values above 1e-7 (absolute): the
singular values that should vanish come out near 1e-6 and are counted. The metrics
``rank_mm_as_published`` and ``rank_nuclear_as_published`` recompute both accountings
(infeasible as 1; ``W_*`` solved again by SCS at its defaults, rank at 1e-7 absolute).

A run is one ``(n, d)``: instances of seeds ``seed .. seed + instances - 1``. It writes
``config.json``, ``ranks.npz`` (per instance: ``seeds``, ``feasible``, ``rank_mm``,
``rank_nuclear``, ``rank_nuclear_scs`` (-1 where infeasible), the singular values ``sv_mm``,
``sv_nuclear`` (instances, d), relative to the largest, NaN where infeasible) and
``metrics.json`` (last).
:func:`reproduce` sweeps the published grid and writes the report.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.studies.svm_common import PAPER, fmt, sweep_runs, table
from attnlab.svm import attention_svm, attention_svm_nuclear
from attnlab.tasks import max_margin
from mlp.train.folders import create_run_dir, save_arrays, write_json, write_text
from mlp.validation import check_seed, positive

__all__ = ["DEFAULTS", "NAME", "PUBLISHED", "reproduce", "resolve", "run_experiment"]

NAME = "svm-rank"
MODULE = "attnlab.studies.svm_rank"
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "n": 5,
    "d": 5,
    "context": 5,
    "instances": 100,
    "threshold": 1e-6,
}
PRELOAD = ("cvxpy", "scipy.optimize")
#: The published mean ranks, read from the figure stored in ``svm_rank.ipynb`` (T = 5, 100
#: instances; about +-0.1): ``(n, d) -> (W^mm, W_*)``; infeasible instances count as rank 1.
PUBLISHED = {
    (5, 1): (1.1, 1.1), (5, 2): (1.4, 1.4), (5, 3): (2.9, 2.9), (5, 4): (4.1, 4.0),
    (5, 5): (5.0, 4.5), (5, 10): (5.0, 4.95), (5, 15): (5.0, 4.95), (5, 20): (5.0, 4.95),
    (10, 1): (1.0, 1.0), (10, 2): (1.0, 1.0), (10, 3): (1.3, 1.3), (10, 4): (3.6, 3.6),
    (10, 5): (5.0, 5.0), (10, 10): (10.0, 9.1), (10, 15): (10.0, 10.0), (10, 20): (10.0, 10.0),
    (15, 1): (1.0, 1.0), (15, 2): (1.0, 1.0), (15, 3): (1.0, 1.0), (15, 4): (1.5, 1.5),
    (15, 5): (4.9, 4.9), (15, 10): (10.0, 9.7), (15, 15): (15.0, 13.9), (15, 20): (15.0, 14.9),
}  # fmt: skip
#: A point's mean rank of ``W^mm`` must be within this of ``min(n, d)`` (with at least
#: :data:`MIN_FEASIBLE` feasible instances).
RANK_TOLERANCE, MIN_FEASIBLE = 0.5, 20
#: The authors' rank: ``numpy.linalg.matrix_rank(W, tol=1e-7)``, singular values above 1e-7.
PUBLISHED_TOL = 1e-7


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` completed by :data:`DEFAULTS` and checked (``ValueError`` names the option)."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a mapping of options, received {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"config: unknown option(s) {unknown}; expected some of {list(DEFAULTS)}")
    cfg = {**DEFAULTS, **config}
    cfg["seed"] = check_seed(cfg["seed"])
    for key in ("n", "d", "context", "instances"):
        cfg[key] = positive(key, cfg[key], integer=True)
    if cfg["context"] < 2:
        raise ValueError(f"context: expected at least 2 tokens, received {cfg['context']}")
    cfg["threshold"] = float(positive("threshold", cfg["threshold"]))
    if cfg["threshold"] >= 1:
        raise ValueError(f"threshold: expected a number in (0, 1), received {cfg['threshold']}")
    return cfg


def _relative_sv(W: np.ndarray) -> np.ndarray:
    s = np.linalg.svd(W, compute_uv=False)
    return s / s[0]


def run_experiment(
    config: Mapping[str, Any], run_dir: str | Path, *, progress: bool | None = None
) -> dict[str, Any]:
    """One ``(n, d)`` (``config``, see :data:`DEFAULTS`) written to ``run_dir``; returns the
    metrics: ``n``, ``d``, ``feasible``, ``infeasible``, ``solver_failures`` (feasible instances
    whose nuclear-norm solve failed: left out too), the mean ranks ``rank_mm`` and
    ``rank_nuclear`` over the instances with both solutions (None if none),
    ``rank_mm_as_published`` (infeasible instances as rank 1), ``rank_nuclear_as_published``
    (also ``W_*`` by SCS at its defaults, rank at :data:`PUBLISHED_TOL`), and ``min_nd``."""
    cfg = resolve(config)
    out = create_run_dir(run_dir, NAME, files=("ranks.npz",))
    n, d, k = cfg["n"], cfg["d"], cfg["instances"]
    seeds = np.arange(cfg["seed"], cfg["seed"] + k)
    feasible = np.zeros(k, dtype=bool)
    ranks = np.full((k, 3), -1, dtype=np.int64)
    sv = np.full((k, 2, d), np.nan)
    failures = 0
    for i, seed in enumerate(seeds):
        task = max_margin(n=n, context=cfg["context"], d=d, seed=int(seed))
        X, Z, target = task.train.X, task.train.inputs["Z"], task.train.target
        try:
            mm = attention_svm(X, Z, target)
        except ValueError:
            continue
        try:
            nuclear = attention_svm_nuclear(X, Z, target)
            scs = attention_svm_nuclear(X, Z, target, solver={"solver": "SCS"})
        except RuntimeError:
            failures += 1
            continue
        feasible[i] = True
        sv[i] = _relative_sv(mm.solution), _relative_sv(nuclear.solution)
        ranks[i, :2] = np.sum(sv[i] > cfg["threshold"], axis=1)
        ranks[i, 2] = np.sum(np.linalg.svd(scs.solution, compute_uv=False) > PUBLISHED_TOL)
    write_json(out / "config.json", {**cfg, "data": "attnlab.tasks.max_margin", "source": PAPER})
    save_arrays(
        out / "ranks.npz",
        {
            "seeds": seeds,
            "feasible": feasible,
            "rank_mm": ranks[:, 0],
            "rank_nuclear": ranks[:, 1],
            "rank_nuclear_scs": ranks[:, 2],
            "sv_mm": sv[:, 0],
            "sv_nuclear": sv[:, 1],
        },
    )
    count = int(feasible.sum())
    infeasible = k - count - failures
    metrics = {
        "n": n,
        "d": d,
        "feasible": count,
        "infeasible": infeasible,
        "solver_failures": failures,
        "rank_mm": float(ranks[feasible, 0].mean()) if count else None,
        "rank_nuclear": float(ranks[feasible, 1].mean()) if count else None,
        "rank_mm_as_published": float((ranks[feasible, 0].sum() + infeasible) / (k - failures)),
        "rank_nuclear_as_published": float(
            (ranks[feasible, 2].sum() + infeasible) / (k - failures)
        ),
        "min_nd": min(n, d),
    }
    write_json(out / "metrics.json", metrics)  # last: the run folder is complete
    return metrics


def _point(metrics: Mapping[str, Any], run_dir: str) -> dict[str, Any]:
    n, d = metrics["n"], metrics["d"]
    published = PUBLISHED.get((n, d), (None, None))
    ok = None
    if metrics["feasible"] >= MIN_FEASIBLE:
        ok = (
            abs(metrics["rank_mm"] - metrics["min_nd"]) <= RANK_TOLERANCE
            and metrics["rank_nuclear"] <= metrics["rank_mm"]
        )
    return {
        **{k: metrics[k] for k in ("n", "d", "feasible", "rank_mm", "rank_nuclear")},
        "infeasible": metrics["infeasible"],
        "solver_failures": metrics["solver_failures"],
        "rank_mm_as_published": metrics["rank_mm_as_published"],
        "rank_nuclear_as_published": metrics["rank_nuclear_as_published"],
        "min_nd": metrics["min_nd"],
        "published_mm": published[0],
        "published_nuclear": published[1],
        "target_met": ok,
        "run_dir": run_dir,
    }


def results_markdown(res: Mapping[str, Any]) -> str:
    """``results.md`` from ``results.json``'s content."""
    cfg = res["config"]
    rows = [
        (
            p["n"],
            p["d"],
            f"{p['feasible']} / {p['infeasible']}",
            fmt(p["rank_mm"], 2),
            fmt(p["rank_nuclear"], 2),
            p["min_nd"],
            fmt(p["rank_mm_as_published"], 2) + " / " + fmt(p["rank_nuclear_as_published"], 2),
            fmt(p["published_mm"], 2) + " / " + fmt(p["published_nuclear"], 2),
            {None: "—", True: "yes", False: "NO"}[p["target_met"]],
        )
        for p in res["points"]
    ]
    return "\n".join(
        [
            "# Rank of the attention SVM's solutions",
            "",
            f"T = {cfg['context']}, {cfg['instances']} instances per point (seeds 0..."
            f"{cfg['instances'] - 1}), numerical rank: singular values above "
            f"{cfg['threshold']:g} of the largest. Wall time {res['seconds']:.0f} s.",
            "",
            *table(
                (
                    "n",
                    "d",
                    "feasible / infeasible",
                    "rank W^mm",
                    "rank W_*",
                    "min(n, d)",
                    "W^mm / W_* as published",
                    "published W^mm / W_*",
                    f"within {RANK_TOLERANCE} of min(n, d), W_* no higher",
                ),
                rows,
            ),
            "",
            f"Published: {PAPER}, `svm_rank.ipynb`, read from its stored figure (±0.1). In that "
            "figure an infeasible instance counts as rank 1 (cvxpy returns no solution without "
            "raising, and `numpy.linalg.matrix_rank(None)` is 1), and W_* is SCS's solution at "
            "its default tolerance, whose rank at 1e-7 (absolute) counts singular values that "
            "should vanish. The column 'as published' recomputes both accountings from these "
            "instances (W_* solved again by SCS at its defaults).",
            "",
        ]
    )


def reproduce(
    out: str | Path,
    ns: Sequence[int] = (5, 10, 15),
    ds: Sequence[int] = (1, 2, 3, 4, 5, 10, 15, 20),
    instances: int = DEFAULTS["instances"],
    *,
    workers: int | None = None,
    scheduler: str | None = None,
    log: Callable[[str], None] | None = None,
) -> tuple[dict[str, Any], list[Path]]:
    """Every ``(n, d)`` of ``ns`` x ``ds`` through the sweep into ``out/sweep``; writes
    ``results.json`` (``points``: ``n``, ``d``, ``feasible``, ``rank_mm``, ``rank_nuclear``,
    ...), ``results.md`` and ``svm_rank.png`` into ``out``. Returns the results and the files."""
    positive("instances", instances, integer=True)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    runs = sweep_runs(
        MODULE, {"n": list(ns), "d": list(ds)}, {"instances": instances}, [DEFAULTS["seed"]],
        out / "sweep", workers=workers, scheduler=scheduler, progress=log is not None,
    )  # fmt: skip
    points = [_point(r["metrics"], r["run_dir"]) for r in runs]
    by = {(p["n"], p["d"]): p for p in points}

    def grid(key: str) -> np.ndarray:
        return np.array(
            [[np.nan if by[n, d][key] is None else by[n, d][key] for d in ds] for n in ns]
        )

    from attnlab.plots.svm import plot_svm_rank  # matplotlib only here

    keys = ("mm", "nuclear", "mm_as_published", "nuclear_as_published")
    ranks = {k: grid(f"rank_{k}") for k in keys}
    figure = plot_svm_rank(out / "svm_rank.png", ns, ds, ranks, PUBLISHED)
    results = {
        "config": {**DEFAULTS, "instances": instances, "ns": list(ns), "ds": list(ds)},
        "source": PAPER,
        "points": points,
        "seconds": time.perf_counter() - start,
    }
    written = [write_json(out / "results.json", results)]
    written.append(write_text(out / "results.md", results_markdown(results)))
    if log is not None:
        met = [p["target_met"] for p in points if p["target_met"] is not None]
        log(f"svm-rank: {sum(met)} of {len(met)} points with >= {MIN_FEASIBLE} feasible meet it")
    return results, [*written, figure]
