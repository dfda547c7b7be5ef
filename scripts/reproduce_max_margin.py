"""Reproduce the max-margin token-selection results of Tarzanagh et al. (issue 5).

    python scripts/reproduce_max_margin.py [--seeds 20] [--iterations 2000] [--out DIR]

``max-margin``: for each seed 0..seeds-1, cross attention trained by normalized GD (lr 0.1,
``--iterations`` steps), once with the exact softmax backward and once with the textbook one;
the correlation of ``W`` with the attention SVM ``W_mm`` over the steps. ``prompt-norm``:
normalized GD (lr 0.1) against plain GD (lr 1) from ``p = 0``, for ``iterations // 2`` steps
(1000 by default, as in the paper). Writes ``config.json``, ``results.json``, ``results.md``,
``curves.npz`` and the figures into the run folder.
"""

from __future__ import annotations

import argparse
import json
import platform
import sys
import time
from pathlib import Path

import numpy as np

from attnlab.max_margin import INITS, MaxMarginRun, PromptNormRun, run_max_margin, run_prompt_norm
from attnlab.plots import plot_max_margin
from mlp.runs import ScriptParser

LR_NGD, LR_GD = 0.1, 1.0
#: The published values (the papers' figures) and the targets of issue 5.
PUBLISHED = {
    "correlation_at_1000_mean": 0.99,
    "ngd_norm_at_200": 19.5,
    "gd_norm_at_200": 3.9,
}
TARGETS = {"correlation_final_mean": 0.995, "correlation_final_min": 0.99, "probability": 0.999}


def parse_args(argv: list[str] | None = None) -> argparse.Namespace:
    parser = ScriptParser(prog="reproduce_max_margin.py", description=__doc__.split("\n\n")[0])
    parser.add_argument("--seeds", type=int, default=20, help="max-margin seeds 0..N-1 (20)")
    parser.add_argument(
        "--iterations",
        type=int,
        default=2000,
        help="max-margin steps (2000); prompt-norm runs half as many (1000)",
    )
    parser.add_argument(
        "--init",
        choices=INITS,
        default="zero",
        help="max-margin W init: zero (default) or uniform U(-1/sqrt(d), 1/sqrt(d)), seeded",
    )
    parser.add_argument("--out", type=Path, default=None, help="run folder (runs/max_margin-*)")
    args = parser.parse_args(argv)
    for name in ("seeds", "iterations"):
        if getattr(args, name) < 1:
            parser.error(f"--{name}: expected a positive integer, received {getattr(args, name)}")
    if args.iterations < 2:
        parser.error(f"--iterations: expected at least 2, received {args.iterations}")
    if args.out is None:
        args.out = Path("runs") / time.strftime("max_margin-%Y%m%d-%H%M%S")
    return args


def summarize(runs: list[MaxMarginRun], at: int) -> dict:
    """Summary over seeds; ``at``: the step of the mid-run correlation (1000 by default)."""
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


def fmt(v: float | None, digits: int = 4) -> str:
    return "—" if v is None else f"{v:.{digits}f}"


def low_seeds_line(ex: dict, its: int) -> str:
    """Which seeds (exact backward) end below the 0.99 target, and when their selection settled."""
    low = [r for r in ex["per_seed"] if r["correlation_final"] < TARGETS["correlation_final_min"]]
    if not low:
        return "Every seed (exact backward) ends with correlation >= 0.99."
    parts = [
        f"seed {r['seed']}: {r['correlation_final']:.4f}, selected tokens settled at iteration "
        f"{r['selection_settled_at']}"
        for r in low
    ]
    return (
        f"Seeds below 0.99 at {its} iterations (exact backward): {'; '.join(parts)}. A late "
        "change of the selected token restarts the alignment with the new W_mm; "
        "`results.json` lists every seed (`selection_settled_at`: the iteration from which the "
        "argmax of every prompt stays the final one)."
    )


def results_markdown(res: dict) -> str:
    ex, tb, pn = res["max_margin"]["exact"], res["max_margin"]["textbook"], res["prompt_norm"]
    at, its, k = res["mid_step"], res["config"]["iterations"], pn["norm_step"]
    seeds = res["config"]["seeds"]
    rows = [
        (f"correlation at {at} its, mean", "≈ 0.99", "", f"correlation_at_{at}_mean"),
        (f"correlation at {at} its, min", "—", "", f"correlation_at_{at}_min"),
        (f"correlation at {its} its, mean", "—", "≥ 0.995", "correlation_final_mean"),
        (f"correlation at {its} its, min", "—", "≥ 0.99", "correlation_final_min"),
        ("selected-token probability, mean", "→ 1", "≥ 0.999", "probability_final_mean"),
        (f"‖W‖_F at {its} its, mean", "grows", "", "norm_final_mean"),
    ]
    lines = [
        "# Max-margin token selection: reproduction",
        "",
        f"max-margin: {seeds} seeds, {its} iterations of normalized GD (lr 0.1, no epsilon), "
        f"float64. prompt-norm: {pn['iterations']} iterations from p = 0. "
        f"Wall time {res['seconds']:.1f} s.",
        "",
        "| quantity | published | target | measured (exact backward) | "
        "measured (textbook backward) |",
        "| --- | --- | --- | --- | --- |",
    ]
    for name, pub, target, key in rows:
        digits = 1 if key.startswith("norm") else (6 if key.startswith("prob") else 4)
        lines.append(
            f"| max-margin: {name} | {pub} | {target} | {fmt(ex[key], digits)} | "
            f"{fmt(tb[key], digits)} |"
        )
    lines.append(
        f"| max-margin: prompts selecting the globally optimal token | — | | "
        f"{ex['prompts_selecting_optimal_token']}/{ex['prompts']} | "
        f"{tb['prompts_selecting_optimal_token']}/{tb['prompts']} |"
    )
    lines += [
        f"| prompt-norm: ‖p‖ at {k} its, normalized GD (lr 0.1) | ≈ 19.5 | | "
        f"{fmt(pn['ngd']['norm_at_step'], 2)} | — |",
        f"| prompt-norm: ‖p‖ at {k} its, GD (lr 1) | ≈ 3.9 | | "
        f"{fmt(pn['gd']['norm_at_step'], 2)} | — |",
        f"| prompt-norm: ratio NGD / GD | ≈ 5.0 | ≥ 3 | {fmt(pn['ratio_at_step'], 2)} | — |",
        f"| prompt-norm: optimal-token probability at {pn['iterations']} its, NGD / GD | → 1 | | "
        f"{fmt(pn['ngd']['probability_final'], 6)} / {fmt(pn['gd']['probability_final'], 6)} "
        "| — |",
        f"| prompt-norm: correlation with p_mm at {pn['iterations']} its, NGD / GD | — | | "
        f"{fmt(pn['ngd']['correlation_final'])} / {fmt(pn['gd']['correlation_final'])} | — |",
        "",
        low_seeds_line(ex, its),
        "",
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


def main(argv: list[str] | None = None) -> int:
    args = parse_args(argv)
    out: Path = args.out
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    its, mid = args.iterations, min(1000, args.iterations)
    prompt_its = max(1, its // 2)
    norm_step = min(200, prompt_its)
    config = {
        "seeds": args.seeds,
        "iterations": its,
        "prompt_norm_iterations": prompt_its,
        "max_margin": {
            "task": "attnlab.tasks.max_margin(n=6, context=8, d=10, seed=seed)",
            "model": "ContextWindowModel(10, attention='cross', pool='mean', head='linear')",
            "trainable": ["W"],
            "optimizer": "NormalizedGD (no epsilon)",
            "lr": LR_NGD,
            "init": args.init,
            "init_meaning": {
                "zero": "W = 0",
                "uniform": "W ~ U(-1/sqrt(d), 1/sqrt(d)) from np.random.default_rng(seed)",
            }[args.init],
        },
        "prompt_norm": {
            "task": "attnlab.tasks.prompt_norm(n=3, context=7, seed=0)",
            "model": "ContextWindowModel(3, attention='prompt', pool='mean', head='linear')",
            "trainable": ["p"],
            "init": "p = 0; v = e3",
            "optimizers": {"ngd": LR_NGD, "gd": LR_GD},
        },
        "python": platform.python_version(),
        "numpy": np.__version__,
    }
    (out / "config.json").write_text(json.dumps(config, indent=2) + "\n")

    exact, textbook = [], []
    for seed in range(args.seeds):
        exact.append(run_max_margin(seed, its, LR_NGD, init=args.init))
        textbook.append(run_max_margin(seed, its, LR_NGD, textbook_backward=True, init=args.init))
        e, t = exact[-1], textbook[-1]
        print(
            f"max-margin seed {seed:2d}: correlation {e.correlation[-1]:.4f} "
            f"(textbook {t.correlation[-1]:.4f}), selected-token probability "
            f"{e.probability[-1]:.6f}, ||W|| {e.norm[-1]:.1f}",
            flush=True,
        )
    ngd = run_prompt_norm("ngd", LR_NGD, prompt_its)
    gd = run_prompt_norm("gd", LR_GD, prompt_its)
    print(
        f"prompt-norm: ||p|| at {norm_step} its: normalized GD {ngd.norm[norm_step]:.2f}, "
        f"GD {gd.norm[norm_step]:.2f}",
        flush=True,
    )

    def prompt_summary(run: PromptNormRun) -> dict:
        return {
            "lr": run.lr,
            "norm_at_step": float(run.norm[norm_step]),
            "norm_final": float(run.norm[-1]),
            "probability_final": float(run.probability[-1]),
            "correlation_final": float(run.correlation[-1]),
            "stop_reason": run.stop_reason,
        }

    results = {
        "config": {"seeds": args.seeds, "iterations": its, "init": args.init},
        "mid_step": mid,
        "published": PUBLISHED,
        "targets": TARGETS,
        "max_margin": {"exact": summarize(exact, mid), "textbook": summarize(textbook, mid)},
        "prompt_norm": {
            "iterations": prompt_its,
            "norm_step": norm_step,
            "ngd": prompt_summary(ngd),
            "gd": prompt_summary(gd),
            "ratio_at_step": float(ngd.norm[norm_step] / gd.norm[norm_step]),
            "svm_solution": ngd.svm.solution.ravel().tolist(),
            "svm_kkt": ngd.svm.kkt,
        },
    }
    np.savez_compressed(
        out / "curves.npz",
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
    written = [p.name for p in plot_max_margin(out, exact, textbook, ngd, gd)]
    results["seconds"] = time.perf_counter() - start
    (out / "results.json").write_text(json.dumps(results, indent=2) + "\n")
    (out / "results.md").write_text(results_markdown(results))
    ex = results["max_margin"]["exact"]
    print(
        f"exact backward: final correlation mean {ex['correlation_final_mean']:.4f}, "
        f"min {ex['correlation_final_min']:.4f}; textbook: mean "
        f"{results['max_margin']['textbook']['correlation_final_mean']:.4f}"
    )
    print(f"wrote {out}/: config.json results.json results.md curves.npz {' '.join(written)}")
    print(f"total {results['seconds']:.1f} s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
