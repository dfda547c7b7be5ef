"""The max-margin reproduction: the runs of :mod:`attnlab.studies.max_margin` over seeds, their
summary against the published values and targets, and the run folder with its markdown report.

:func:`reproduce` trains, for each seed ``0..seeds-1``, ``max-margin`` with the exact and with
the textbook softmax backward, optionally ``max-margin-kq`` (which needs cvxpy), and
``prompt-norm`` under normalized GD and plain GD for half as many steps, then writes
``config.json``, ``results.json``, ``results.md``, ``curves.npz`` and the figures.
"""

from __future__ import annotations

import platform
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.studies.max_margin.runs import (
    ALIGNED,
    GD_LR,
    INIT_MEANING,
    INITS,
    SETTINGS,
    MaxMarginKQRun,
    MaxMarginRun,
    PromptNormRun,
    describe,
    load_run,
    run_max_margin_kq,
    run_prompt_norm,
)
from mlp.train.folders import write_json
from mlp.validation import choice, positive

__all__ = ["KQ_INIT", "PUBLISHED", "TARGETS", "reproduce", "results_markdown"]

#: The published values (the papers' figures), read at :data:`MID_STEP` and :data:`NORM_STEP`.
PUBLISHED = {
    "correlation_at_1000_mean": 0.99,
    "ngd_norm_at_200": 19.5,
    "gd_norm_at_200": 3.9,
    "kq_correlation_nuclear_mean": 0.99,
}
#: The step of the published correlation, and of the published prompt-norm ``||p||``.
MID_STEP, NORM_STEP = 1000, 200
#: What the reproduction must reach: max-margin's final correlation (mean and every seed), the
#: selected token's final weight, and prompt-norm's ``||p||`` ratio of normalized GD to GD.
TARGETS = {
    "correlation_final_mean": 0.995,
    "correlation_final_min": ALIGNED,
    "probability": 0.999,
    "norm_ratio": 3.0,
}
#: The kq factors' init (zero factors have zero gradients).
KQ_INIT = "uniform"


def summarize(runs: list[MaxMarginRun], at: int) -> dict[str, Any]:
    """Summary of ``max-margin`` over seeds; ``at``: the step of the mid-run correlation."""
    final = np.array([r.correlation[-1] for r in runs])
    mid = np.array([r.correlation[min(at, len(r.correlation) - 1)] for r in runs])
    return {
        "correlation_final_mean": float(final.mean()),
        "correlation_final_min": float(final.min()),
        "correlation_final_argmin_seed": int(runs[int(final.argmin())].seed),
        f"correlation_at_{at}_mean": float(mid.mean()),
        f"correlation_at_{at}_min": float(mid.min()),
        "probability_final_mean": float(np.mean([r.probability[-1] for r in runs])),
        "norm_final_mean": float(np.mean([r.norm[-1] for r in runs])),
        "prompts_selecting_optimal_token": int(sum((r.selected == r.optimal).sum() for r in runs)),
        "prompts": int(sum(r.selected.size for r in runs)),
        "stopped_early": [r.seed for r in runs if r.stop_reason != "completed"],
        "per_seed": [
            {
                "seed": r.seed,
                "correlation_final": float(r.correlation[-1]),
                f"correlation_at_{at}": float(r.correlation[min(at, len(r.correlation) - 1)]),
                "probability_final": float(r.probability[-1]),
                "norm_final": float(r.norm[-1]),
                "selected": r.selected.tolist(),
                "globally_optimal": r.optimal.tolist(),
                "selection_settled_at": r.settled,
                "svm_norm": r.svm.norm,
                "svm_margin": r.svm.margin,
                "svm_kkt": r.svm.kkt,
                "stop_reason": r.stop_reason,
            }
            for r in runs
        ],
    }


def summarize_kq(runs: list[MaxMarginKQRun]) -> dict[str, Any]:
    """Summary of ``max-margin-kq`` over seeds."""
    nuc = np.array([r.correlation[-1] for r in runs])
    fro = np.array([r.correlation_frobenius[-1] for r in runs])
    return {
        "correlation_nuclear_final_mean": float(nuc.mean()),
        "correlation_nuclear_final_min": float(nuc.min()),
        "correlation_frobenius_final_mean": float(fro.mean()),
        "correlation_frobenius_final_min": float(fro.min()),
        "probability_final_mean": float(np.mean([r.probability[-1] for r in runs])),
        "stopped_mean": float(np.mean([r.stopped for r in runs])),
        "per_seed": [
            {
                "seed": r.seed,
                "correlation_nuclear_final": float(r.correlation[-1]),
                "correlation_frobenius_final": float(r.correlation_frobenius[-1]),
                "probability_final": float(r.probability[-1]),
                "norm_final": float(r.norm[-1]),
                "selected": r.selected.tolist(),
                "selection_settled_at": r.settled,
                "gradient_zero_at": r.stopped,
                "nuclear_svm_kkt": r.nuclear.kkt,
                "nuclear_svm_singular_values": np.linalg.svd(
                    r.nuclear.solution, compute_uv=False
                ).tolist(),
                "stop_reason": r.stop_reason,
            }
            for r in runs
        ],
    }


def summarize_prompt_norm(run: PromptNormRun, at: int) -> dict[str, Any]:
    """Summary of one ``prompt-norm`` run; ``at``: the step of the compared ``||p||``."""
    return {
        "lr": run.lr,
        "norm_at_step": float(run.norm[at]),
        "norm_final": float(run.norm[-1]),
        "probability_final": float(run.probability[-1]),
        "correlation_final": float(run.correlation[-1]),
        "stop_reason": run.stop_reason,
    }


def _fmt(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def _low_seeds_line(ex: dict[str, Any], its: int) -> str:
    """Which seeds (exact backward) end below the per-seed target, and when their selection
    settled."""
    floor = TARGETS["correlation_final_min"]
    low = [r for r in ex["per_seed"] if r["correlation_final"] < floor]
    if not low:
        return f"Every seed (exact backward) ends with correlation >= {floor:g}."
    parts = [
        f"seed {r['seed']}: {r['correlation_final']:.4f}, selected tokens settled at iteration "
        f"{r['selection_settled_at']}"
        for r in low
    ]
    return (
        f"Seeds below {floor:g} at {its} iterations (exact backward): {'; '.join(parts)}. A late "
        "change of the selected token restarts the alignment with the new W_mm; "
        "`results.json` lists every seed (`selection_settled_at`: the iteration from which the "
        "argmax of every prompt stays the final one)."
    )


def _kq_markdown(res: dict[str, Any]) -> list[str]:
    """The ``max-margin-kq`` rows (none when it did not run)."""
    if "max_margin_kq" not in res:
        return []
    kq = res["max_margin_kq"]
    published = PUBLISHED["kq_correlation_nuclear_mean"]
    pub = f"≈ {published:g}"
    rows = [
        ("correlation of WK WQ^T with W_* (nuclear), mean", pub, "correlation_nuclear"),
        ("correlation of WK WQ^T with W_* (nuclear), min", "—", "correlation_nuclear"),
        ("correlation of WK WQ^T with W_mm (Frobenius), mean", "lower", "correlation_frobenius"),
        ("correlation of WK WQ^T with W_mm (Frobenius), min", "—", "correlation_frobenius"),
    ]
    lines = [
        f"## max-margin-kq: W = WK WQ^T, per-factor normalized GD (lr {kq['lr']:g}, "
        f"{kq['iterations']} iterations, init {kq['init']!r}, rank d)",
        "",
        "| quantity | published | measured |",
        "| --- | --- | --- |",
    ]
    for name, cell, key in rows:
        stat = "mean" if name.endswith("mean") else "min"
        lines.append(f"| {name} | {cell} | {_fmt(kq[f'{key}_final_{stat}'])} |")
    lines += [
        f"| selected-token probability, mean | → 1 | {_fmt(kq['probability_final_mean'], 6)} |",
        f"| iteration at which the gradient is exactly 0 (float64), mean | — | "
        f"{kq['stopped_mean']:.0f} |",
        "",
        "W_* = argmin ‖W‖_* under the same constraints as W_mm (cvxpy), for the tokens the "
        "kq run selects. Each factor moves by lr per step, so ‖WK WQ^T‖ grows quadratically: "
        "every non-selected softmax weight underflows and the gradient is exactly zero after a "
        "few hundred iterations, which ends the run (the papers' `||g|| + 1e-12` stalls it "
        f"there too). The published curve is the papers' figure (about {published:g}).",
        "",
    ]
    return lines


def results_markdown(res: dict[str, Any]) -> str:
    """``results.md``: the table of published values, targets and measurements of ``res`` (the
    content of ``results.json``), and notes."""
    ex, tb, pn = res["max_margin"]["exact"], res["max_margin"]["textbook"], res["prompt_norm"]
    at, its, k = res["mid_step"], res["config"]["iterations"], pn["norm_step"]
    seeds, lr = res["config"]["seeds"], SETTINGS["max-margin"]["lr"]
    pn_lr = SETTINGS["prompt-norm"]["lr"]
    ngd_pub, gd_pub = PUBLISHED["ngd_norm_at_200"], PUBLISHED["gd_norm_at_200"]
    rows = [
        (
            f"correlation at {at} its, mean",
            f"≈ {PUBLISHED['correlation_at_1000_mean']:g}",
            "",
            f"correlation_at_{at}_mean",
        ),
        (f"correlation at {at} its, min", "—", "", f"correlation_at_{at}_min"),
        (
            f"correlation at {its} its, mean",
            "—",
            f"≥ {TARGETS['correlation_final_mean']:g}",
            "correlation_final_mean",
        ),
        (
            f"correlation at {its} its, min",
            "—",
            f"≥ {TARGETS['correlation_final_min']:g}",
            "correlation_final_min",
        ),
        (
            "selected-token probability, mean",
            "→ 1",
            f"≥ {TARGETS['probability']:g}",
            "probability_final_mean",
        ),
        (f"‖W‖_F at {its} its, mean", "grows", "", "norm_final_mean"),
    ]
    lines = [
        "# Max-margin token selection: reproduction",
        "",
        f"max-margin: {seeds} seeds, {its} iterations of normalized GD (lr {lr:g}, no epsilon), "
        f"float64. prompt-norm: {pn['iterations']} iterations from p = 0. "
        f"Wall time {res['seconds']:.1f} s.",
        "",
        "| quantity | published | target | measured (exact backward) | "
        "measured (textbook backward) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, published, target, key in rows:
        digits = 1 if key.startswith("norm") else (6 if key.startswith("prob") else 4)
        lines.append(
            f"| max-margin: {name} | {published} | {target} | {_fmt(ex[key], digits)} | "
            f"{_fmt(tb[key], digits)} |"
        )
    lines.append(
        f"| max-margin: prompts selecting the globally optimal token | — | | "
        f"{ex['prompts_selecting_optimal_token']}/{ex['prompts']} | "
        f"{tb['prompts_selecting_optimal_token']}/{tb['prompts']} |"
    )
    lines += [
        f"| prompt-norm: ‖p‖ at {k} its, normalized GD (lr {pn_lr:g}) | ≈ {ngd_pub:g} | | "
        f"{_fmt(pn['ngd']['norm_at_step'], 2)} | — |",
        f"| prompt-norm: ‖p‖ at {k} its, GD (lr {GD_LR:g}) | ≈ {gd_pub:g} | | "
        f"{_fmt(pn['gd']['norm_at_step'], 2)} | — |",
        f"| prompt-norm: ratio NGD / GD | ≈ {ngd_pub / gd_pub:.1f} | ≥ {TARGETS['norm_ratio']:g} "
        f"| {_fmt(pn['ratio_at_step'], 2)} | — |",
        f"| prompt-norm: optimal-token probability at {pn['iterations']} its, NGD / GD | → 1 | | "
        f"{_fmt(pn['ngd']['probability_final'], 6)} / {_fmt(pn['gd']['probability_final'], 6)} "
        "| — |",
        f"| prompt-norm: correlation with p_mm at {pn['iterations']} its, NGD / GD | — | | "
        f"{_fmt(pn['ngd']['correlation_final'])} / {_fmt(pn['gd']['correlation_final'])} | — |",
        "",
        _low_seeds_line(ex, its),
        "",
        *_kq_markdown(res),
        f"Notes. W starts from {res['config']['init']!r} (`--init zero`: W = 0; `--init "
        "uniform`: U(-1/sqrt(d), 1/sqrt(d)) drawn by `default_rng(seed)`, the scale of "
        "PyTorch's default `nn.Linear` init; the papers' init is unseeded), and the data come "
        "from numpy's generator, so the runs are not the papers' runs: only the statistics are "
        "comparable. The selected token a_i is "
        "the argmax of the trained softmax at the last iteration, and W_mm is solved for it "
        "exactly (KKT residuals in `results.json`). prompt-norm: the paper's attention masks "
        "the third coordinate (K = Q = diag(1, 1, 0)); ours scores all three "
        "(scores X^T p), and p_mm is solved in all three coordinates.",
        "",
    ]
    return "\n".join(lines)


def reproduction_config(seeds: int, steps: int, init: str, kq: bool) -> dict[str, Any]:
    """``config.json``: what :func:`reproduce` runs, from the code's values (the tasks, the
    models' constructor arguments, the trained keys, the optimizers and their settings)."""
    mm, pn = SETTINGS["max-margin"], SETTINGS["prompt-norm"]
    config: dict[str, Any] = {
        "seeds": seeds,
        "iterations": steps,
        "prompt_norm_iterations": max(1, steps // 2),
        "max_margin": {
            **describe("max-margin"),
            "optimizer": mm["optimizer"],
            "lr": mm["lr"],
            "init": init,
            "init_meaning": INIT_MEANING[init],
            "backward": ["exact", "textbook"],
        },
        "prompt_norm": {
            **describe("prompt-norm"),
            "init": "zero",
            "optimizers": {pn["optimizer"]: pn["lr"], "gd": GD_LR},
        },
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    if kq:
        config["max_margin_kq"] = {
            **describe("max-margin", attention="cross-kq"),
            "optimizer": mm["optimizer"],
            "per_param": True,
            "lr": mm["lr"],
            "init": KQ_INIT,
            "init_meaning": INIT_MEANING[KQ_INIT],
            "svm": "nuclear",
        }
    return config


def _max_margin_seeds(
    folder: Path,
    seeds: int,
    steps: int,
    init: str,
    workers: int | None,
    scheduler: str | None,
    progress: bool,
) -> tuple[list[MaxMarginRun], list[MaxMarginRun]]:
    """Seeds ``0..seeds-1`` of ``max-margin``, exact and textbook backward, as a sweep into
    ``folder``; the runs read back from their folders, in the order of the seeds."""
    from mlp.train.sweep import sweep

    result = sweep(
        "attnlab.studies.max_margin",
        {"textbook_backward": [False, True]},
        {"steps": steps, "init": init},
        seeds=range(seeds),
        out=folder,
        workers=workers,
        scheduler=scheduler,
        progress=progress,
    )
    if result.failed:
        raise RuntimeError(
            f"{result.failed} max-margin runs failed (their errors: {result.files['failed']})"
        )
    runs = {
        (row["textbook_backward"], int(row["seed"])): load_run(folder / "runs" / row["run_id"])
        for row in result.rows
    }
    return [runs["False", s] for s in range(seeds)], [runs["True", s] for s in range(seeds)]


def reproduce(
    out: str | Path,
    seeds: int = 20,
    steps: int = SETTINGS["max-margin"]["steps"],
    init: str = "zero",
    kq: bool = False,
    log: Callable[[str], None] | None = None,
    *,
    workers: int | None = None,
    scheduler: str | None = None,
) -> tuple[dict[str, Any], list[Path]]:
    """Run the reproduction and write it into the run folder ``out``.

    ``seeds``: max-margin seeds ``0..seeds-1``; ``steps`` (at least 2): max-margin's steps
    (prompt-norm runs ``steps // 2``, the published 1000 by default); ``init``: max-margin's
    ``W`` init (:data:`attnlab.studies.max_margin.INITS`); ``kq``: also ``max-margin-kq``
    (needs cvxpy).
    The max-margin runs (each seed with the exact and with the textbook backward) are a sweep
    of the ``max-margin`` experiment into ``out/seeds`` (:func:`mlp.train.sweep.sweep`, with its
    ``workers`` and ``scheduler``; its progress bar when ``log`` is given), read back from
    their run folders (:func:`attnlab.studies.max_margin.load_run`). ``log`` receives a line per
    seed and the summary. Returns ``results.json``'s content and the paths written; a max-margin
    run that fails raises ``RuntimeError`` naming ``out/seeds/failed.csv``.
    """
    positive("seeds", seeds, integer=True)
    positive("steps", steps, integer=True)
    if steps < 2:
        raise ValueError(f"steps: expected at least 2, received {steps}")
    choice("init", init, INITS)
    say = log or (lambda line: None)
    out = Path(out)
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    mid, prompt_steps = min(MID_STEP, steps), max(1, steps // 2)
    norm_step = min(NORM_STEP, prompt_steps)
    lr = SETTINGS["max-margin"]["lr"]
    written = [write_json(out / "config.json", reproduction_config(seeds, steps, init, kq))]

    exact, textbook = _max_margin_seeds(
        out / "seeds", seeds, steps, init, workers, scheduler, progress=log is not None
    )
    for e, t in zip(exact, textbook, strict=True):
        say(
            f"max-margin seed {e.seed:2d}: correlation {e.correlation[-1]:.4f} "
            f"(textbook {t.correlation[-1]:.4f}), selected-token probability "
            f"{e.probability[-1]:.6f}, ||W|| {e.norm[-1]:.1f}"
        )
    kq_runs: list[MaxMarginKQRun] = []
    if kq:
        kq_start = time.perf_counter()
        for seed in range(seeds):
            k = run_max_margin_kq(seed, steps, lr, init=KQ_INIT)
            kq_runs.append(k)
            say(
                f"max-margin-kq seed {seed:2d}: correlation with W_* {k.correlation[-1]:.4f}, "
                f"with W_mm {k.correlation_frobenius[-1]:.4f}, gradient zero at {k.stopped}"
            )
        kq_seconds = time.perf_counter() - kq_start
    ngd = run_prompt_norm("ngd", SETTINGS["prompt-norm"]["lr"], prompt_steps)
    gd = run_prompt_norm("gd", GD_LR, prompt_steps)
    say(
        f"prompt-norm: ||p|| at {norm_step} its: normalized GD {ngd.norm[norm_step]:.2f}, "
        f"GD {gd.norm[norm_step]:.2f}"
    )

    results: dict[str, Any] = {
        "config": {"seeds": seeds, "iterations": steps, "init": init},
        "mid_step": mid,
        "published": PUBLISHED,
        "targets": TARGETS,
        "max_margin": {"exact": summarize(exact, mid), "textbook": summarize(textbook, mid)},
        "prompt_norm": {
            "iterations": prompt_steps,
            "norm_step": norm_step,
            "ngd": summarize_prompt_norm(ngd, norm_step),
            "gd": summarize_prompt_norm(gd, norm_step),
            "ratio_at_step": float(ngd.norm[norm_step] / gd.norm[norm_step]),
            "svm_solution": ngd.svm.solution.ravel().tolist(),
            "svm_kkt": ngd.svm.kkt,
        },
    }
    kq_curves = {}
    if kq_runs:
        results["max_margin_kq"] = {
            "lr": lr,
            "iterations": steps,
            "init": KQ_INIT,
            "seconds": kq_seconds,
            **summarize_kq(kq_runs),
        }
        kq_curves = {
            "correlation_kq_nuclear": np.array([r.correlation for r in kq_runs]),
            "correlation_kq_frobenius": np.array([r.correlation_frobenius for r in kq_runs]),
            "norm_kq": np.array([r.norm for r in kq_runs]),
        }
    np.savez_compressed(
        out / "curves.npz",
        **kq_curves,
        correlation_exact=np.array([r.correlation for r in exact]),
        correlation_textbook=np.array([r.correlation for r in textbook]),
        probability_exact=np.array([r.probability for r in exact]),
        probability_textbook=np.array([r.probability for r in textbook]),
        norm_exact=np.array([r.norm for r in exact]),
        norm_textbook=np.array([r.norm for r in textbook]),
        prompt_norm_ngd=ngd.norm,
        prompt_norm_gd=gd.norm,
        prompt_probability_ngd=ngd.probability,
        prompt_probability_gd=gd.probability,
    )
    from attnlab.plots import plot_max_margin, plot_max_margin_kq  # matplotlib only here

    figures = plot_max_margin(out, exact, textbook, ngd, gd)
    if kq_runs:
        figures += plot_max_margin_kq(out, kq_runs)
    results["seconds"] = time.perf_counter() - start
    written.append(write_json(out / "results.json", results))
    (out / "results.md").write_text(results_markdown(results))
    written += [out / "results.md", out / "curves.npz", *figures]
    ex, tb = results["max_margin"]["exact"], results["max_margin"]["textbook"]
    say(
        f"exact backward: final correlation mean {ex['correlation_final_mean']:.4f}, "
        f"min {ex['correlation_final_min']:.4f}; textbook: mean "
        f"{tb['correlation_final_mean']:.4f}"
    )
    if kq_runs:
        k = results["max_margin_kq"]
        say(
            f"kq: final correlation with W_* mean {k['correlation_nuclear_final_mean']:.4f}, "
            f"min {k['correlation_nuclear_final_min']:.4f}; with W_mm mean "
            f"{k['correlation_frobenius_final_mean']:.4f} ({k['seconds']:.1f} s)"
        )
    return results, written
