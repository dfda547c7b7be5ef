"""The reproduction of in-context regression with depth: every (variant, covariance, L, seed)
through the one sweep, then ``results.json``, ``results.md`` (the runs, the optimal GD steps and
every check of the targets, per seed) and the figures (the test loss against ``L``; heatmaps of the
learned ``A_l``, ``B_l``).
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.studies.icl_depth import prompts, theory
from attnlab.studies.icl_depth.experiment import resolve
from mlp.train.folders import load_arrays, read_json, write_json, write_text
from mlp.validation import check_seed

#: The layers of each variant (``full`` from ``L = 2``: at ``L = 1`` its value block does not
#: reach the prediction).
LAYERS = {"full": (2, 3, 4), "gd": (1, 2, 3, 4)}
#: The options of each variant's runs in the reproduction (the rest: :data:`.DEFAULTS`).
#: ``gd``: the study's defaults; ``full``: Adam to the end with the authors' betas, LAMB's
#: trust ratio and the mean of the last 60% of the iterates (see ``docs/icl_depth.md``).
SETTINGS: dict[str, dict[str, Any]] = {
    "full": {
        "steps": 8000,
        "batch_size": 500,
        "lr": 0.006,
        "beta1": 0.99,
        "beta2": 0.9,
        "clip_norm": 0.01,
        "sgd_from": None,
        "average": 0.4,
        "whiten": True,
        "trust": True,
    },
    "gd": {},  # the study's defaults
}
#: The targets' thresholds (see :func:`checks`).
TARGETS = {
    "A0_error": 0.01,
    "one_layer_loss": 0.02,
    "gd_loss": {2: 0.03, 3: 0.03, 4: 0.05},
    "gd_dist_A": 0.05,
    "gd_rates": 0.08,
    "gd_covariances": 0.05,
    "full_L3_loss": 2e-3,
    "full_L3_dist": 0.03,
    "full_vs_gd": 0.8,
}
#: The keys of a run in ``results.json``, as the targets list them.
RUN_KEYS = ("variant", "covariance", "layers", "seed", "run_dir", "test_loss", "a", "dist_A",
            "dist_B")  # fmt: skip


def gd_optimal(layers: Iterable[int], d: int = 5, N: int = 20) -> list[dict[str, Any]]:
    """For each ``L``: the rates ``a`` (sorted) and the exact ``loss`` of the optimal ``L`` steps
    of GD (:func:`theory.optimal_rates`)."""
    out = []
    for L in layers:
        a, loss = theory.optimal_rates(L, d, N)
        out.append({"layers": L, "a": [float(v) for v in a], "loss": float(loss)})
    return out


def reproduce(
    out: str | Path,
    *,
    seeds: Iterable[int] = range(3),
    settings: Mapping[str, Mapping[str, Any]] | None = None,
    layers: Mapping[str, Sequence[int]] | None = None,
    workers: int | None = None,
    scheduler: str | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train every variant, covariance, ``L`` of ``layers`` (default :data:`LAYERS`) and seed:
    two invocations of :func:`mlp.train.sweep.sweep` into ``out/sweep`` (``full`` first, its
    runs being the longest; then ``gd``), each with its variant's options of ``settings``
    (default :data:`SETTINGS`); one run folder each (see :func:`.run_experiment`). Writes
    ``results.json`` (``runs``, ``gd_optimal``, ``wall_s``... see :data:`RUN_KEYS`),
    ``results.md`` and the figures ``loss_vs_depth.png`` and ``params/<variant>_<covariance>_
    L<L>.png`` (the first seed's matrices) into ``out``; ``log`` gets a line per run (and turns
    the sweep's progress bar on). Returns the results; a run that fails raises ``RuntimeError``
    naming ``failed.csv``."""
    from mlp.train.sweep import sweep

    start = time.perf_counter()
    seeds = [check_seed(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: expected at least one seed, received none")
    settings = {v: dict(SETTINGS[v], **(settings or {}).get(v, {})) for v in LAYERS}
    layers = {v: list((layers or LAYERS).get(v, ())) for v in LAYERS}
    say = log or (lambda line: None)
    out = Path(out)
    for variant in ("full", "gd"):  # every option checked before the first run
        for L in layers[variant]:
            resolve({**settings[variant], "variant": variant, "L": L})
    rows = []
    for variant in ("full", "gd"):
        if not layers[variant]:
            continue
        result = sweep(
            "attnlab.studies.icl_depth",
            {"covariance": list(prompts.COVARIANCES), "L": layers[variant]},
            {**settings[variant], "variant": variant},
            seeds=seeds,
            out=out / "sweep",
            workers=workers,
            scheduler=scheduler,
            progress=log is not None,
        )
        if result.failed:
            raise RuntimeError(f"{result.failed} runs failed: see {result.files['failed']}")
        rows += result.rows
    runs, details = [], []
    for row in rows:
        folder = out / "sweep" / "runs" / row["run_id"]
        m = read_json(folder / "metrics.json")
        run = {
            "variant": m["variant"],
            "covariance": m["covariance"],
            "layers": int(m["L"]),
            "seed": int(m["seed"]),
            "run_dir": str(folder.relative_to(out)),
            **{k: m[k] for k in ("test_loss", "a", "dist_A", "dist_B")},
        }
        runs.append(run)
        details.append({**m, "run_dir": run["run_dir"]})
        say(
            f"{run['variant']} L={run['layers']} {run['covariance']}, seed {run['seed']}: test "
            f"loss {run['test_loss']:.5g} (optimal GD steps on the same prompts "
            f"{m['gd_same_prompts']:.5g}), {m['wall_s']:.0f} s"
        )
    all_layers = sorted({r["layers"] for r in runs})
    results = {"runs": runs, "gd_optimal": gd_optimal(all_layers)}
    write_json(out / "results.json", results)
    figures(out, runs, results["gd_optimal"], seeds[0])
    wall = time.perf_counter() - start
    write_text(out / "results.md", results_markdown(details, results["gd_optimal"], settings, wall))
    return {**results, "wall_s": wall, "checks": checks(details, results["gd_optimal"])}


def figures(
    out: Path, runs: Sequence[Mapping[str, Any]], optimal: Sequence[Mapping[str, Any]], seed: int
) -> None:
    """``loss_vs_depth.png`` and, for the first seed of every (variant, covariance, L), the
    heatmaps of its learned ``A_l``, ``B_l`` (and for ``rotated`` their whitened forms)."""
    from attnlab.plots.icl_depth import plot_loss_vs_depth, plot_parameter_maps

    measured: dict[tuple[str, str], dict[int, list[float]]] = {}
    for r in runs:
        by_L = measured.setdefault((r["variant"], r["covariance"]), {})
        by_L.setdefault(r["layers"], []).append(r["test_loss"])
    one_layer = theory.one_layer_closed_form(np.eye(5))[1]
    plot_loss_vs_depth(
        measured, {o["layers"]: o["loss"] for o in optimal}, one_layer, out / "loss_vs_depth.png"
    )
    (out / "params").mkdir(exist_ok=True)
    for r in runs:
        if r["seed"] != seed:
            continue
        p = load_arrays(out / r["run_dir"] / "params.npz")
        A, B = p["A"], p["B"]
        rows = [("A_{l}", A)] + ([("B_{l}", B)] if r["variant"] == "full" else [])
        if r["covariance"] == "rotated":
            M, K = theory.whitened(A, B, p["Sigma"])
            rows += [("S^1/2 A_{l} S^1/2", M)]
            rows += [("S^-1/2 B_{l} S^1/2", K)] if r["variant"] == "full" else []
        name = f"{r['variant']}_{r['covariance']}_L{r['layers']}"
        title = f"{r['variant']}, {r['covariance']}, L = {r['layers']}, seed {r['seed']}"
        plot_parameter_maps(rows, title, out / "params" / f"{name}.png")


def checks(
    details: Sequence[Mapping[str, Any]], optimal: Sequence[Mapping[str, Any]]
) -> list[dict[str, Any]]:
    """Every check of the targets, per run: ``{"check", "variant", "covariance", "layers",
    "seed", "value", "target", "ok"}``. The loss of a ``gd`` run at ``L >= 2`` is its
    ``population_loss`` (the exact loss of its learned rates plus a small Monte Carlo correction,
    see :func:`.measure`) held against the exact optimum; the test loss on 100,000 prompts has a
    standard error of several percent at ``L = 4``. A ``full`` run is held against the optimal GD
    steps on its own test prompts."""
    t = TARGETS
    rates = {o["layers"]: np.array(o["a"]) for o in optimal}
    exact = {o["layers"]: o["loss"] for o in optimal}
    by_key = {(m["variant"], m["covariance"], int(m["L"]), int(m["seed"])): m for m in details}
    out: list[dict[str, Any]] = []

    def add(name: str, m: Mapping[str, Any], value: float, target: float, ok: bool) -> None:
        out.append({"check": name, "variant": m["variant"], "covariance": m["covariance"],
                    "layers": int(m["L"]), "seed": int(m["seed"]), "value": float(value),
                    "target": target, "ok": bool(ok)})  # fmt: skip

    for m in details:
        L = int(m["L"])
        if m["variant"] == "gd" and L == 1:
            add(
                "A_0 relative error",
                m,
                m["A0_error"],
                t["A0_error"],
                m["A0_error"] <= t["A0_error"],
            )
            gap = abs(m["test_loss"] / exact[1] - 1)
            add("|loss / 1.1538 - 1|", m, gap, t["one_layer_loss"], gap <= t["one_layer_loss"])
        if m["variant"] == "gd" and L >= 2:
            ratio = abs(m["population_loss"] / exact[L] - 1)
            lim = t["gd_loss"].get(L, t["gd_loss"][4])
            add("|population loss / optimal GD steps - 1|", m, ratio, lim, ratio <= lim)
            worst = max(m["dist_A"])
            add("max dist_A", m, worst, t["gd_dist_A"], worst <= t["gd_dist_A"])
            rel = float(np.max(np.abs(np.sort(m["a"]) / rates[L] - 1)))
            add("max |a / a* - 1| (sorted)", m, rel, t["gd_rates"], rel <= t["gd_rates"])
        if m["variant"] == "gd" and m["covariance"] == "rotated":
            iso = by_key.get(("gd", "identity", L, int(m["seed"])))
            if iso is not None:
                gap = abs(m["test_loss"] / iso["test_loss"] - 1)
                add("|rotated / identity - 1|", m, gap, t["gd_covariances"],
                    gap <= t["gd_covariances"])  # fmt: skip
        if m["variant"] == "full":
            ratio = m["test_loss"] / m["gd_same_prompts"]
            add("loss / optimal GD steps", m, ratio, t["full_vs_gd"], ratio < t["full_vs_gd"])
            if L == 3:
                add("loss", m, m["test_loss"], t["full_L3_loss"],
                    m["test_loss"] <= t["full_L3_loss"])  # fmt: skip
                worst = max(m["dist_A"] + m["dist_B"])
                add("max dist_A, dist_B", m, worst, t["full_L3_dist"],
                    worst <= t["full_L3_dist"])  # fmt: skip
    return out


def _ratio(value: float | None, reference: float) -> str:
    return "-" if value is None else f"{value / reference:.4f}"


def _fmt(values: Sequence[float] | None, spec: str = ".3f") -> str:
    return "-" if values is None else ", ".join(format(v, spec) for v in values)


def results_markdown(
    details: Sequence[Mapping[str, Any]],
    optimal: Sequence[Mapping[str, Any]],
    settings: Mapping[str, Mapping[str, Any]],
    wall_s: float,
) -> str:
    """``results.md``: the setting, the optimal GD steps, a row per run and every check."""
    lines = [
        "# In-context regression with depth: trained linear transformers against GD steps",
        "",
        f"d = 5, N = 20; {len(details)} runs in {wall_s / 60:.1f} minutes (wall clock, this "
        "machine). Test losses are means of `(yhat - y_q)^2` (no 1/2) over the test prompts of "
        "each run's seed. `a`, `dist_A`: per layer `-tr(M_l)/d` and the distance to identity of "
        "`M_l = Sigma^1/2 A_l Sigma^1/2` (`A_l` for `identity`); `b`, `dist_B`: of "
        "`Sigma^-1/2 B_l Sigma^1/2`, layers 0 to L - 2.",
        "",
    ]
    for variant, s in settings.items():
        lines.append(f"- `{variant}`: " + ", ".join(f"{k} = {v}" for k, v in s.items()))
    lines += ["", "## The optimal L steps of GD (exact)", "", "| L | rates a | loss |",
              "| --- | --- | --- |"]  # fmt: skip
    for o in optimal:
        lines.append(f"| {o['layers']} | {_fmt(o['a'], '.4f')} | {o['loss']:.6g} |")
    lines += [
        "",
        "## Runs",
        "",
        "| variant | covariance | L | seed | test loss (+- se) | optimal GD steps, same prompts "
        "| population loss / exact optimum | a | dist_A | b | dist_B | wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for m in details:
        lines.append(
            f"| {m['variant']} | {m['covariance']} | {m['L']} | {m['seed']} | "
            f"{m['test_loss']:.5g} +- {m['test_loss_se']:.2g} | {m['gd_same_prompts']:.5g} | "
            f"{_ratio(m.get('population_loss'), m['gd_optimal_loss'])} | "
            f"{_fmt(m['a'])} | {_fmt(m['dist_A'])} | {_fmt(m['b'])} | {_fmt(m['dist_B'])} | "
            f"{m['wall_s']:.0f} |"
        )
    found = checks(details, optimal)
    bad = [c for c in found if not c["ok"]]
    lines += [
        "",
        f"## Checks: {len(found) - len(bad)} of {len(found)} hold",
        "",
        "The loss of a trained `gd` stack is its population loss: the exact loss of its learned "
        "rates `a` plus the Monte Carlo mean, on the test prompts, of its squared error minus "
        "that of those scalar steps (small: the matrices are near multiples of the identity), "
        "held against the exact optimum. A trained `full` stack is held against the optimal GD "
        "steps on its own test prompts.",
        "",
        "| check | variant | covariance | L | seed | value | target | holds |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for c in found:
        lines.append(
            f"| {c['check']} | {c['variant']} | {c['covariance']} | {c['layers']} | {c['seed']} "
            f"| {c['value']:.4g} | {c['target']:g} | {'yes' if c['ok'] else '**no**'} |"
        )
    return "\n".join(lines) + "\n"
