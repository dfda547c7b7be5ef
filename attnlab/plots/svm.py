"""The figures of the "Transformers as SVMs" studies (Tarzanagh et al.), from arrays: the
``(K, Q)`` variants against the nuclear-norm SVM, multi-token selection, the rank of the SVM
solutions."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from attnlab.plots._style import DPI, band, correlation_figure, save_iterations, two_panels
from mlp.train.folders import save_figure

__all__ = ["plot_svm_kq", "plot_svm_multi_token", "plot_svm_rank"]

#: One color per (K, Q) variant (others get the default cycle).
KQ_COLORS = {"authors": "tab:blue", "logspace": "tab:green", "plain": "tab:red"}


def plot_svm_kq(
    out: str | Path,
    correlation: Mapping[str, np.ndarray],
    norm_WK: Mapping[str, np.ndarray],
    norm_WQ: Mapping[str, np.ndarray],
    max_softmax: Mapping[str, np.ndarray],
    long_correlation: np.ndarray,
    long_seeds: Sequence[int],
) -> list[Path]:
    """The ``(K, Q)`` figures, written into ``out``; returns the paths.

    ``svm_kq_correlation.png``: the correlation of ``WK WQ^T`` with ``W_*`` per variant (each
    ``(seeds, s)``), mean and +-std, and ``1 - correlation`` on a log scale (mean and worst
    seed). ``svm_kq_norms.png``: ``||WK||_F`` and ``||WQ||_F`` (mean and min..max over seeds,
    log scale) and the largest softmax weight (mean over prompts and seeds) over the first 400
    iterations. ``svm_kq_long.png``: ``long_correlation (k, s)``, the runs of ``long_seeds``
    continued, ``1 - correlation`` on log scales.
    """
    out = Path(out)
    seeds = len(next(iter(correlation.values())))
    kinds = [(v, c, KQ_COLORS.get(v, "tab:gray")) for v, c in correlation.items()]
    title = f"(K, Q): per-factor normalized GD, {seeds} seeds"
    ylabel = "correlation of WK WQ^T with W_* (nuclear)"
    written = [correlation_figure(kinds, ylabel, title, out / "svm_kq_correlation.png")]
    fig, a1, a2 = two_panels()
    for v in norm_WK:
        color = KQ_COLORS.get(v, "tab:gray")
        band(a1, norm_WK[v], f"{v}: ||WK||", color, std=False)
        a1.plot(norm_WQ[v].mean(axis=0), color=color, ls="--", lw=0.8, label=f"{v}: ||WQ||, mean")
        early = max_softmax[v][:, :401]
        a2.plot(early.mean(axis=0), color=color, label=v)
    a1.set_yscale("log")
    a1.set_ylabel("factor norm ||.||_F")
    a2.axvline(150, color="k", lw=0.6, ls=":")
    a2.set_ylabel("largest softmax weight")
    a2.set_title("mean over prompts and seeds; dotted: iteration 150", fontsize=9)
    a1.set_title("mean and min..max over seeds (||WQ||: dashed, mean)", fontsize=9)
    written.append(save_iterations(fig, (a1, a2), title, out / "svm_kq_norms.png"))

    fig = Figure(figsize=(6.5, 4.2))
    ax = fig.subplots()
    steps = np.arange(long_correlation.shape[1])
    for seed, c in zip(long_seeds, long_correlation, strict=True):
        ax.loglog(steps[1:], 1.0 - c[1:], label=f"seed {seed}")
    ax.axvline(2000, color="k", lw=0.6, ls=":")
    ax.set_ylabel("1 - correlation with W_*")
    fig_title = "(K, Q), underflow-free direction (logspace): its lowest seeds, continued"
    written.append(save_iterations(fig, (ax,), fig_title, out / "svm_kq_long.png"))
    return written


def plot_svm_multi_token(
    path: str | Path,
    ds: Sequence[int],
    steps: np.ndarray,
    gaps: Sequence[Mapping[str, np.ndarray]],
    masked_max: Sequence[np.ndarray],
    published: Mapping[int, Mapping[str, float]] | None = None,
) -> Path:
    """Multi-token selection, one column per ``d``: top, the mean ``1 - correlation`` over the
    kept runs against the iterations ``steps (k,)`` for each kind of ``gaps[i]`` (kind ->
    ``(runs, k)``), with the published final values as crosses; bottom, each run's final ``1 -
    correlation`` with ``W^SVMeq`` against its largest softmax weight outside the selected set
    (``masked_max[i] (runs,)``), log scales. Returns the path."""
    fig = Figure(figsize=(4.0 * len(ds), 7.5))
    axes = fig.subplots(2, len(ds), squeeze=False)
    styles = {"svmeq": "-", "mm": ":", "one_token": "--"}
    names = {"svmeq": "W^SVMeq", "mm": "W^mm", "one_token": "one-token SVM"}
    for col, d in enumerate(ds):
        top, bottom = axes[0, col], axes[1, col]
        for kind, g in gaps[col].items():
            line = top.semilogy(steps, g.mean(axis=0), ls=styles.get(kind, "-"), marker="o", ms=3,
                                label=names.get(kind, kind))  # fmt: skip
            if published and d in published and kind in published[d]:
                top.plot(steps[-1], published[d][kind], "x", ms=9, color=line[0].get_color())
        top.set_title(f"d = {d} ({len(masked_max[col])} runs)")
        top.set_xlabel("iteration")
        top.grid(alpha=0.3)
        bottom.loglog(np.maximum(masked_max[col], 1e-300), gaps[col]["svmeq"][:, -1], ".", ms=4)
        bottom.set_xlabel("largest softmax weight outside the selected set")
        bottom.grid(alpha=0.3)
    axes[0, 0].set_ylabel("1 - correlation, mean over runs (x: published)")
    axes[0, 0].legend(fontsize=8)
    axes[1, 0].set_ylabel("final 1 - correlation with W^SVMeq")
    fig.suptitle("Multi-token selection: the direction of W against the SVMs")
    fig.tight_layout()
    return save_figure(fig, path, dpi=DPI)


def plot_svm_rank(
    path: str | Path,
    ns: Sequence[int],
    ds: Sequence[int],
    ranks: Mapping[str, np.ndarray],
    published: Mapping[tuple[int, int], tuple[float, float]] | None = None,
) -> Path:
    """The mean numerical rank of ``W^mm`` (solid) and of the nuclear-norm solution ``W_*``
    (dashed) against ``d``, one color per ``n``: left, ``ranks['mm']`` and ``ranks['nuclear']``
    ``(len(ns), len(ds))`` over the feasible instances (NaN where none), with ``min(n, d)``
    dotted; right, ``ranks['mm_as_published']`` and ``ranks['nuclear_as_published']`` (the
    published accounting) with the ``published`` ``(n, d) -> (W^mm, W_*)`` as crosses and
    pluses. Returns the path."""
    fig, a1, a2 = two_panels()
    for i, n in enumerate(ns):
        line = a1.plot(ds, ranks["mm"][i], "-o", ms=4, label=f"n = {n}: W^mm")
        color = line[0].get_color()
        a1.plot(
            ds, ranks["nuclear"][i], "--s", ms=4, color=color, mfc="none", label=f"n = {n}: W_*"
        )
        a1.plot(ds, np.minimum(n, ds), ":", color=color, lw=0.8)
        a2.plot(ds, ranks["mm_as_published"][i], "-o", ms=4, color=color, label=f"n = {n}")
        a2.plot(ds, ranks["nuclear_as_published"][i], "--s", ms=4, color=color, mfc="none")
        if published:
            pts = [(d, published[n, d]) for d in ds if (n, d) in published]
            a2.plot([d for d, _ in pts], [v[0] for _, v in pts], "x", ms=8, color=color)
            a2.plot([d for d, _ in pts], [v[1] for _, v in pts], "+", ms=10, color=color)
    a1.set_title("feasible instances, accurate W_* (dotted: min(n, d))", fontsize=9)
    a2.set_title("as published: infeasible as 1, W_* by SCS's defaults (x, +: published)",
                 fontsize=9)  # fmt: skip
    for ax in (a1, a2):
        ax.set_xlabel("d")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    a1.set_ylabel("mean numerical rank")
    fig.suptitle("Rank of the attention SVM's solutions, T = 5")
    fig.tight_layout()
    return save_figure(fig, path, dpi=DPI)
