"""The reproduction of one-layer in-context linear regression: every covariance and seed through
the one sweep, then on the first identity run the loss against the test length, the comparison
with one step of GD and the loss under covariate shift; ``results.json``, ``results.md`` and the
figures.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.studies.icl.experiment import (
    evaluate_predictors,
    make_model,
    resolve,
    scale_inputs,
)
from attnlab.studies.icl.theory import (
    gamma,
    gd_sensitivity,
    layer_sensitivity,
    one_step_gd,
    risk,
    shift_risk,
)
from attnlab.tasks import COVARIANCES, covariance_matrix, regression_test_prompts
from mlp.train.data import Dataset
from mlp.train.folders import load_arrays, write_json, write_text
from mlp.validation import check_seed, positive

#: Test prompt lengths of the length-generalization curve and the covariate-shift factors.
LENGTHS = (5, 10, 20, 40, 80, 160)
SHIFTS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
#: The targets the reproduction is checked against.
TARGETS = {
    "rel_error": 0.01,
    "test_vs_closed_form": 0.001,
    "gd_cosine": 0.9999,
    "gd_rel_l2": 0.01,
    "length": 0.03,
}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.vdot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def compare_with_gd(
    params: Mapping[str, np.ndarray], d: int, N: int, seed: int, n: int
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """The trained layer against one step of GD with ``eta = N / (N + d + 1)`` on ``n`` test
    prompts with ``Lambda = I``: the cosine and the relative L2 distance ``||yhat - yhat_gd|| /
    ||yhat_gd||`` of the predictions, and the mean over prompts of the cosine of the
    sensitivities ``d yhat / d x_q``. Returns them with the predictions ``yhat``, ``yhat_gd``
    ``(n,)``."""
    eta = N / (N + d + 1)
    model = make_model(d)
    model.params.update({k: np.asarray(v) for k, v in params.items()})
    (E,) = (p.X for p in regression_test_prompts(n, N, np.eye(d), seed, chunk=n))
    yhat, ygd = model.predict(E), one_step_gd(E, eta)
    s, g = layer_sensitivity(E, params["W"], params["v"]), gd_sensitivity(E, eta)
    per_prompt = np.sum(s * g, axis=1) / (np.linalg.norm(s, axis=1) * np.linalg.norm(g, axis=1))
    metrics = {
        "eta": eta,
        "cosine": _cosine(yhat, ygd),
        "rel_l2": float(np.linalg.norm(yhat - ygd) / np.linalg.norm(ygd)),
        "sensitivity_cosine": float(np.mean(per_prompt)),
    }
    return metrics, yhat, ygd


def reproduce(
    out: str | Path,
    *,
    d: int = 5,
    N: int = 20,
    sigma: float = 0.1,
    seeds: Iterable[int] = range(5),
    steps: int | None = None,
    n_test: int | None = None,
    n_gd: int = 10_000,
    workers: int | None = None,
    scheduler: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train every covariance of :data:`attnlab.tasks.COVARIANCES` and seed: a sweep of this
    study's experiment into ``out/sweep`` (:func:`mlp.train.sweep.sweep`, its ``workers`` and
    ``scheduler``; one run folder each, see :func:`run_experiment`), then on the first identity
    run measure the loss against the test length ``M`` with ``R(M)``, the comparison with one
    step of GD (``n_gd`` prompts) and the loss under covariate shift. Writes ``results.json``,
    ``results.md`` and the figures ``rel_error.png``, ``length.png``, ``gd.png``, ``shift.png``
    into ``out``; ``log`` gets a line per run and per finished part (and turns the sweep's
    progress bar on). Returns the results; a run that fails raises ``RuntimeError`` naming
    ``failed.csv``."""
    from attnlab.plots import plot_icl_gd, plot_icl_length, plot_icl_rel_error, plot_icl_shift
    from mlp.train.sweep import sweep

    seeds = [check_seed(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: expected at least one seed, received none")
    n_gd = positive("n_gd", n_gd, integer=True)
    say = log or (lambda line: None)
    out = Path(out)
    given = {"d": d, "N": N, "sigma": sigma, "steps": steps, "n_test": n_test}
    fixed = {k: v for k, v in given.items() if v is not None}
    base = resolve(fixed)
    result = sweep(
        "attnlab.studies.icl",
        {"covariance": list(COVARIANCES)},
        fixed,
        seeds=seeds,
        out=out / "sweep",
        workers=workers,
        scheduler=scheduler,
        progress=log is not None,
    )
    if result.failed:
        raise RuntimeError(f"{result.failed} runs failed: see {result.files['failed']}")
    keys = ("rel_error", "u", "off_block_norm", "test_loss", "closed_form_loss", "wall_s")
    runs, errors, folders = [], {}, {}
    for row in result.rows:  # in the order of the plan: covariance, then seed
        cov, seed = row["covariance"], int(row["seed"])
        folder = out / "sweep" / "runs" / row["run_id"]
        folders[cov, seed] = folder
        m = {k: float(row[k]) for k in keys}
        runs.append({"covariance": cov, "seed": seed, "run_dir": str(folder.relative_to(out))})
        runs[-1].update(m)
        curve = load_arrays(folder / "errors.npz")
        errors.setdefault(cov, []).append((seed, curve["step"], curve["rel_error"], m["rel_error"]))
        say(
            f"{cov}, seed {seed}: rel_error {m['rel_error']:.4f}, test loss "
            f"{m['test_loss']:.5f} (closed form {m['closed_form_loss']:.5f}), "
            f"{m['wall_s']:.1f} s"
        )
    params = load_arrays(folders["identity", seeds[0]] / "params.npz")
    model = make_model(base["d"])
    model.params.update(params)
    I, n, s0 = np.eye(base["d"]), base["n_test"], seeds[0]
    A = np.linalg.inv(gamma(I, base["N"]))

    def loss(M: int, transform: Callable[[Dataset], Dataset] | None = None) -> float:
        return evaluate_predictors({"": model.predict}, I, M, s0, n, transform)[""]

    length = [{"M": M, "measured": loss(M), "theory": risk(A, I, M)} for M in LENGTHS]
    say(
        "length: " + ", ".join(f"M={r['M']} {r['measured'] / r['theory'] - 1:+.4f}" for r in length)
    )
    gd, yhat, ygd = compare_with_gd(params, base["d"], base["N"], s0, n_gd)
    say(f"gd: cosine {gd['cosine']:.6f}, relative L2 {gd['rel_l2']:.5f}")
    shift = [{"c": c, "loss": loss(base["N"], scale_inputs(c))} for c in SHIFTS]
    results = {"runs": runs, "length": length, "gd": gd, "shift": shift}
    write_json(out / "results.json", results)
    write_text(out / "results.md", results_markdown(results, base))
    plot_icl_rel_error(errors, TARGETS["rel_error"], out / "rel_error.png")
    plot_icl_length(length, base["N"], out / "length.png")
    plot_icl_gd(yhat, ygd, gd, out / "gd.png")
    theory = [shift_risk(A, I, base["N"], c) for c in SHIFTS]
    plot_icl_shift(shift, theory, out / "shift.png")
    return results


def results_markdown(results: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """``results.md``: the tables of :func:`reproduce` with the paper's formulas and the
    targets next to the measured values."""
    d, N = options["d"], options["N"]
    t = TARGETS
    lines = [
        "# In-context linear regression: the trained linear layer against the closed form",
        "",
        f"d = {d}, N = {N}, sigma = {options['sigma']}, SGD {options['steps']} steps of "
        f"{options['batch_size']} fresh prompts, lr {options['lr']} divided by "
        f"{1 / options['factor']:g} at {', '.join(f'{m:.0%}' for m in options['milestones'])} "
        f"of the run"
        + (
            f", the parameters the mean of the iterates from {options['average']:.0%} on"
            if options["average"] is not None
            else ""
        )
        + f"; test losses on {options['n_test']} test prompts.",
        "",
        "Paper: `u W11 -> Gamma^-1` with `Gamma = (1 + 1/N) Lambda + (tr(Lambda)/N) I_d`; "
        "the closed-form predictor `x_q^T Gamma^-1 (1/N) sum_i y_i x_i` has the risk "
        "`R(N) = (tr(Lambda A Lambda Gamma A^T) - 2 tr(Lambda A Lambda) + tr(Lambda)) / 2`, "
        "`A = Gamma^-1`.",
        "",
        f"| covariance | seed | rel_error (<= {t['rel_error']}) | u | off-block norm | "
        f"test loss | closed-form loss | test / closed form - 1 (<= {t['test_vs_closed_form']}) "
        "| wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["runs"]:
        gap = r["test_loss"] / r["closed_form_loss"] - 1
        lines.append(
            f"| {r['covariance']} | {r['seed']} | {r['rel_error']:.4f} | {r['u']:.3f} | "
            f"{r['off_block_norm']:.4f} | {r['test_loss']:.5f} | {r['closed_form_loss']:.5f} | "
            f"{gap:+.5f} | {r['wall_s']:.1f} |"
        )
    for cov in COVARIANCES:
        A = np.linalg.inv(gamma(covariance_matrix(cov, d), N))
        lines.append("")
        lines.append(f"`R(N)` for {cov}: {risk(A, covariance_matrix(cov, d), N):.5f}")
    lines += [
        "",
        "## Length generalization (identity, first seed)",
        "",
        "Trained at N, tested on prompts of M examples (the layer divides by M); theory "
        "`R(M)` with `A = Gamma_N^-1` and `Gamma_M` in the quadratic term.",
        "",
        f"| M | measured | R(M) | measured / R(M) - 1 (within +-{t['length']}) |",
        "| --- | --- | --- | --- |",
    ]
    for r in results["length"]:
        lines.append(
            f"| {r['M']} | {r['measured']:.5f} | {r['theory']:.5f} | "
            f"{r['measured'] / r['theory'] - 1:+.4f} |"
        )
    gd = results["gd"]
    lines += [
        "",
        "## One step of gradient descent (identity, first seed)",
        "",
        "`yhat_gd = eta x_q^T (1/N) sum_i y_i x_i` with `eta = N / (N + d + 1)` "
        f"= {gd['eta']:.6f} (for `Lambda = I`, `Gamma^-1 = eta I`).",
        "",
        "| cosine of predictions (>= 0.9999) | relative L2 (<= 0.01) | "
        "mean cosine of d yhat / d x_q |",
        "| --- | --- | --- |",
        f"| {gd['cosine']:.6f} | {gd['rel_l2']:.5f} | {gd['sensitivity_cosine']:.6f} |",
        "",
        "## Covariate shift (identity, first seed)",
        "",
        "Every test x scaled by c: the target scales as c, the prediction as c^3, so the "
        "closed form's risk is `c^2 (c^4 a - 2 c^2 b + tr(Lambda)) / 2` with "
        "`a = tr(Lambda A Lambda Gamma A^T)`, `b = tr(Lambda A Lambda)`.",
        "",
        "| c | measured loss | theory |",
        "| --- | --- | --- |",
    ]
    I = np.eye(d)
    A = np.linalg.inv(gamma(I, N))
    for r in results["shift"]:
        lines.append(f"| {r['c']:g} | {r['loss']:.5f} | {shift_risk(A, I, N, r['c']):.5f} |")
    return "\n".join(lines) + "\n"
