"""The induction-head figures (Edelman et al. 2024): the last-token KL of every seed over training
with the closed-form baselines, the plateau and the drop marked; the attention probes over
training; and both layers' attention on one sequence at a few moments of a run.

Every function takes arrays (curves as ``(seed, steps, values)`` triples) and a path and
returns the path.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from attnlab.plots._style import DPI, OTHER_COLOR, save
from mlp.train.folders import save_figure

#: A curve of one seed: ``(seed, steps (s,), values (s,))``.
Curve = tuple[int, np.ndarray, np.ndarray]

#: The baselines' line styles, in the legend's order.
_BASELINES = {
    "uniform": ("uniform", ":"),
    "unigram": ("in-context unigram", "--"),
    "bayes": ("Bayes (in-context bigram)", "-."),
}


@dataclass(frozen=True)
class KLPanel:
    """One panel of :func:`plot_kl_curves`: a ``title``, the ``curves`` of every seed, and
    ``marks``: seed -> the step marked on its curve (the drop or the jump; None: not reached),
    named ``mark_label``; ``plateau``: the steps ``(first, last)`` shaded, or None."""

    title: str
    curves: Sequence[Curve]
    marks: Mapping[int, int | None] = field(default_factory=dict)
    mark_label: str = ""
    plateau: tuple[int, int] | None = None


def plot_kl_curves(
    panels: Sequence[KLPanel],
    baselines: Mapping[str, float],
    path: str | Path,
    threshold: float | None = None,
) -> Path:
    """A panel per model: the last-token ``KL(p_true || p_model)`` over the training steps (log
    scale), a line per seed, the ``baselines`` (``uniform``, ``unigram``, ``bayes``) as
    horizontal lines, the plateau's steps shaded, each seed's mark as a dot on its curve, and
    ``threshold`` (the drop's KL) as a thin line."""
    fig = Figure(figsize=(5.0 * len(panels), 4.2))
    axes = np.atleast_1d(fig.subplots(1, len(panels), sharey=True))
    for ax, panel in zip(axes, panels, strict=True):
        if panel.plateau is not None:
            ax.axvspan(*panel.plateau, color=OTHER_COLOR, alpha=0.15, lw=0, label="plateau steps")
        marked = False
        for seed, steps, kl in panel.curves:
            (line,) = ax.plot(steps, kl, lw=1.0, label=f"seed {seed}")
            step = panel.marks.get(seed)
            if step is not None:
                y = np.interp(step, steps, kl)
                ax.plot(step, y, "o", color=line.get_color(), ms=5,
                        label=panel.mark_label if not marked else None)  # fmt: skip
                marked = True
        for key, (name, style) in _BASELINES.items():
            if key in baselines:
                ax.axhline(baselines[key], color="black", ls=style, lw=1,
                           label=f"{name} {baselines[key]:.4f}")  # fmt: skip
        if threshold is not None:
            ax.axhline(threshold, color=OTHER_COLOR, lw=0.8, label=f"KL = {threshold:g}")
        ax.set_yscale("log")
        ax.set_ylim(top=1.0)  # room for the legend above the curves
        ax.set_xlabel("step")
        ax.set_title(panel.title, fontsize=10)
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=6.5, ncol=2, loc="upper right")
    axes[0].set_ylabel("last-token KL(true || model)")
    return save(fig, path)


@dataclass(frozen=True)
class ProbePanel:
    """One panel of :func:`plot_probes`: a ``title``, ``probes``: name -> the curves of every
    seed, a ``ylabel``, and ``lines``: name -> a value drawn as a horizontal reference (chance,
    a threshold)."""

    title: str
    probes: Mapping[str, Sequence[Curve]]
    ylabel: str = "score"
    lines: Mapping[str, float] = field(default_factory=dict)


def plot_probes(panels: Sequence[ProbePanel], path: str | Path) -> Path:
    """A panel per model: each probe over the training steps, a line per seed (one line style
    per probe, one color per seed), with the reference ``lines``."""
    fig = Figure(figsize=(5.0 * len(panels), 4.0))
    axes = np.atleast_1d(fig.subplots(1, len(panels)))
    styles = ("-", "--", ":", "-.")
    for ax, panel in zip(axes, panels, strict=True):
        for k, (name, curves) in enumerate(panel.probes.items()):
            for i, (seed, steps, values) in enumerate(curves):
                ax.plot(steps, values, ls=styles[k % len(styles)], color=f"C{i}", lw=1.0,
                        label=f"{name}, seed {seed}" if i == 0 or k == 0 else None)  # fmt: skip
        for name, value in panel.lines.items():
            ax.axhline(value, color=OTHER_COLOR, lw=0.8, ls=":", label=name)
        ax.set_xlabel("step")
        ax.set_ylabel(panel.ylabel)
        ax.set_title(panel.title, fontsize=10)
        ax.grid(alpha=0.3)
        ax.legend(fontsize=7)
    return save(fig, path)


def plot_attention_moments(
    S: np.ndarray,
    labels: Sequence[str],
    path: str | Path,
    title: str = "",
    window: int | None = None,
) -> Path:
    """Every layer's attention on one sequence at a few moments of training: ``S (m, l, c,
    c)`` (keys ``s`` as rows, queries ``t`` as columns) drawn as a grid of ``l`` rows (layers)
    by ``m`` columns (moments, titled by ``labels``) on the color scale 0..1; ``window``: only
    the first ``window`` tokens (keys and queries), so a diagonal stays visible."""
    S = np.asarray(S)
    if S.ndim != 4 or S.shape[-1] != S.shape[-2] or 0 in S.shape:
        raise ValueError(f"S: expected shape (m, l, c, c), received {S.shape}")
    if len(labels) != S.shape[0]:
        raise ValueError(f"labels: expected {S.shape[0]} labels, received {len(labels)}")
    m, L, c, _ = S.shape
    w = c if window is None else min(int(window), c)
    fig = Figure(figsize=(3.3 * m + 1.0, 3.1 * L + 0.6), layout="constrained")
    axes = np.atleast_2d(fig.subplots(L, m, squeeze=False))
    image = None
    for j in range(m):
        for l in range(L):
            ax = axes[l, j]
            image = ax.imshow(S[j, l, :w, :w], cmap="viridis", vmin=0.0, vmax=1.0)
            ax.set_title(f"layer {l + 1}, {labels[j]}", fontsize=9)
            if j == 0:
                ax.set_ylabel("key s")
            if l == L - 1:
                ax.set_xlabel("query t")
    fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.8, label="weight S[s, t]")
    if title:
        fig.suptitle(title, fontsize=11)
    return save_figure(fig, path, dpi=DPI)
