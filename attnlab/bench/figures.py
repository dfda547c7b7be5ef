"""The benchmark's figures, one per part, drawn from its results (``<part>.png``)."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import numpy as np

from attnlab.bench.timing import threads_text
from mlp.train.folders import save_figure


def _pyplot() -> Any:
    """matplotlib's pyplot on the non-interactive Agg backend (imported when first drawing)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _save(fig: Any, path: Path) -> None:
    fig.tight_layout()
    save_figure(fig, path, dpi=110)
    _pyplot().close(fig)


def mlp_figure(res: dict[str, Any], path: Path) -> None:
    """Log-log time against n: vectorized forward and step, and the per-sample loops."""
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.4))
    vec = res["vectorized"]
    ns = [r["n"] for r in vec]
    for key, style in (("step", "o-"), ("forward", "s-")):
        t = [r["times"][key]["median"] for r in vec]
        label = f"vectorized {key}"
        if key == "step":
            label += f" (slope {res['slope_step']:.2f} for n >= {res['slope_fit_n'][0]:,})"
        ax.loglog(ns, t, style, label=label)
    loops = res["loops"]
    for key, style in (("step_loop", "o--"), ("forward_loop", "s--")):
        ax.loglog(
            [r["n"] for r in loops],
            [r["times"][key]["median"] for r in loops],
            style,
            label=f"per-sample loop {key.split('_')[0]}",
        )
    ax.set_xlabel("n (samples)")
    ax.set_ylabel("seconds per call (median)")
    net = res["network"]
    ax.set_title(f"MLP d={net['d']}, m={net['m']}, k={net['k']}: vectorized vs loops")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def step_figure(res: dict[str, Any], path: Path) -> None:
    """Median step time (with the interquartile range) of each implementation, shape and
    thread setting."""
    rows = res["rows"]
    labels = ("default", str(res["pinned"]))
    impls = [k for k in ("attnlab", "plain", "torch") if k in rows[0]["times"]["default"]]
    bars = [(lab, k) for lab in labels for k in impls]
    fig, ax = _pyplot().subplots(figsize=(7.6, 4.4))
    x = np.arange(len(rows))
    w = 0.8 / len(bars)
    for i, (lab, k) in enumerate(bars):
        t = [r["times"][lab][k] for r in rows]
        med = np.array([s["median"] for s in t]) * 1e3
        lo = med - np.array([s["q25"] for s in t]) * 1e3
        hi = np.array([s["q75"] for s in t]) * 1e3 - med
        name = f"{k}, {threads_text(lab)}"
        hatch = None if lab == "default" else "//"
        pos = x + (i - (len(bars) - 1) / 2) * w
        style = {"color": f"C{impls.index(k)}", "hatch": hatch, "edgecolor": "white"}
        ax.bar(pos, med, w, yerr=[lo, hi], capsize=2, label=name, **style)
    ax.set_xticks(x, [f"{r['dtype']}\nd={r['d']}" for r in rows])
    r0 = rows[0]
    ax.set_ylabel("ms per step (median, IQR)")
    ax.set_title(f"self-attention step, n={r0['n']}, C={r0['c']}")
    ax.legend(fontsize=7)
    _save(fig, path)


def threads_figure(res: dict[str, Any], path: Path) -> None:
    """Speedup of the step from one thread to ``k`` threads, against the ideal ``k``."""
    rows = [r for r in res["rows"] if r["threads"] != "default"]
    ks = np.array([int(r["threads"]) for r in rows])
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.4))
    for name, style in (("attnlab", "o-"), ("torch", "s--")):
        if name in rows[0]:
            ax.plot(ks, [r[f"{name}_speedup"] for r in rows], style, label=name)
    ax.plot(ks, ks, "k:", label="ideal")
    ax.set_xticks(ks)
    ax.set_xlabel("threads")
    ax.set_ylabel("speedup over one thread (medians)")
    ax.set_title(f"self-attention step, float64, n={res['n']}, d={res['d']}, C={res['c']}")
    ax.grid(True, alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def scaling_figure(res: dict[str, Any], path: Path) -> None:
    """Log-log step time against C and against n, with the fitted slopes."""
    fig, axes = _pyplot().subplots(1, 2, figsize=(10, 4.2))
    for ax, key, var, fixed in ((axes[0], "by_c", "c", "n"), (axes[1], "by_n", "n", "c")):
        rows = res[key]
        xs = np.array([r[var] for r in rows], dtype=float)
        t = np.array([r["times"]["median"] for r in rows])
        ax.loglog(xs, t, "o-", label=f"measured (slope {res[f'slope_{var}']:.2f})")
        expect = 2 if var == "c" else 1
        ax.loglog(xs, t[-1] * (xs / xs[-1]) ** expect, "k:", label=f"slope {expect}")
        ax.set_xticks(xs, [str(int(x)) for x in xs])
        ax.minorticks_off()
        ax.set_xlabel("C (tokens)" if var == "c" else "n (prompts)")
        ax.set_ylabel("seconds per step (median, one thread)")
        ax.set_title(f"d={res['d']}, {fixed if fixed == 'n' else 'C'}={rows[0][fixed]}")
        ax.grid(True, which="both", alpha=0.3)
        ax.legend(fontsize=8)
    _save(fig, path)


def memory_figure(res: dict[str, Any], path: Path) -> None:
    """Peak memory against the cached activations, with the 1x and 3x lines."""
    fig, ax = _pyplot().subplots(figsize=(6.4, 4.4))
    for rows, label in ((res["by_c"], "C scan"), (res["rows"], "step configurations")):
        cached = np.array([r["cached_bytes"] for r in rows]) / 2**20
        peak = np.array([r["peak_bytes"] for r in rows]) / 2**20
        ax.loglog(cached, peak, "o", label=label)
    allc = np.array([r["cached_bytes"] for r in res["by_c"] + res["rows"]]) / 2**20
    xs = np.array([allc.min(), allc.max()])
    ax.loglog(xs, xs, "k:", label="peak = cached")
    ax.loglog(xs, 3 * xs, "r--", label="peak = 3 x cached (target)")
    ax.set_xlabel("cached activations (MiB)")
    ax.set_ylabel("peak memory of the step (MiB)")
    ax.set_title("self-attention step: peak memory (tracemalloc)")
    ax.grid(True, which="both", alpha=0.3)
    ax.legend(fontsize=8)
    _save(fig, path)


def research_figure(res: dict[str, Any], path: Path) -> None:
    """Median time of one update (with the interquartile range) at each research size, attnlab
    beside PyTorch, with the ratio above each pair: default threads, then the pinned count."""
    rows = res["rows"]
    labels = ("default", str(res["pinned"]))
    impls = [k for k in ("attnlab", "torch") if k in rows[0]["times"]["default"]]
    fig, axes = _pyplot().subplots(1, 2, figsize=(11, 4.4))
    x = np.arange(len(rows))
    w = 0.8 / len(impls)
    for ax, lab in zip(axes, labels, strict=True):
        for i, k in enumerate(impls):
            t = [r["times"][lab][k] for r in rows]
            med = np.array([s["median"] for s in t]) * 1e3
            lo = med - np.array([s["q25"] for s in t]) * 1e3
            hi = np.array([s["q75"] for s in t]) * 1e3 - med
            pos = x + (i - (len(impls) - 1) / 2) * w
            ax.bar(pos, med, w, yerr=[lo, hi], capsize=3, label=k, color=f"C{i}")
        for i, r in enumerate(rows):
            if r["vs_torch"][lab] is not None:
                top = max(r["times"][lab][k]["q75"] for k in impls) * 1e3
                ax.annotate(f"{r['vs_torch'][lab]:.2f}x", (x[i], top), ha="center", va="bottom")
        ax.set_xticks(x, [f"{r['name']}\nbatch {r['n']}, d={r['d']}, C={r['c']}" for r in rows])
        ax.tick_params(axis="x", labelsize=8)
        ax.set_ylabel("ms per update (median, IQR)")
        ax.set_title(f"the trainer's update, float64, {threads_text(lab)}")
        ax.legend(fontsize=8)
    _save(fig, path)
