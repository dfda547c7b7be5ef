"""What every figure shares: the resolution, the colors, how a class label is written, and the
helpers of the two-panel figures over iterations."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure

from mlp.train.folders import save_figure

DPI = 120
TARGET_COLOR = "#d62728"
OTHER_COLOR = "#8c8c8c"


def label(y: float, class_names: Sequence[str] | None) -> str:
    if class_names is not None and len(class_names) > 2:
        return class_names[int(y)]
    return f"{y:+.0f}"


def save(fig: Figure, path: str | Path) -> Path:
    fig.tight_layout()
    return save_figure(fig, path, dpi=DPI)


def band(ax: Axes, curves: np.ndarray, label: str, color: str, std: bool) -> None:
    """Mean over seeds ``curves (seeds, s)`` and its spread: +-1 standard deviation (as in the
    papers) or min..max; one seed: its curve alone."""
    steps = np.arange(curves.shape[1])
    if len(curves) == 1:
        ax.plot(steps, curves[0], color=color, label=label)
        return
    mean = curves.mean(axis=0)
    if std:
        lo, hi, what = mean - curves.std(axis=0), mean + curves.std(axis=0), "+-std"
    else:
        lo, hi, what = curves.min(axis=0), curves.max(axis=0), "min..max"
    ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0, label=f"{label}: {what}")
    ax.plot(steps, mean, color=color, label=f"{label}: mean")


def two_panels() -> tuple[Figure, Axes, Axes]:
    fig = Figure(figsize=(11, 4.2))
    a1, a2 = fig.subplots(1, 2)
    return fig, a1, a2


def save_iterations(fig: Figure, axes: tuple[Axes, ...], title: str, path: Path) -> Path:
    """Label every x axis 'iteration', add grids and legends, the title, and save."""
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    return save_figure(fig, path, dpi=DPI)


def correlation_figure(
    kinds: Sequence[tuple[str, np.ndarray, str]], ylabel: str, title: str, path: Path
) -> Path:
    """Left: the correlation ``(seeds, s)`` of each kind ``(label, curves, color)``, mean and
    +-std over seeds; right: ``1 - correlation`` on a log scale, mean and worst seed."""
    fig, a1, a2 = two_panels()
    low = 0.0
    for label, corr, color in kinds:
        band(a1, corr, label, color, std=True)
        gap = 1.0 - corr
        if len(corr) == 1:
            a2.semilogy(gap[0], color=color, label=label)
        else:
            a2.semilogy(gap.mean(axis=0), color=color, label=f"{label}: mean")
            a2.semilogy(gap.max(axis=0), color=color, lw=0.8, ls=":", label=f"{label}: worst seed")
        low = min(low, float(np.nanmin(corr)) - 0.05)
    a1.set_ylim(max(low, -1.01), 1.01)
    a1.set_ylabel(ylabel)
    a2.set_ylabel("1 - correlation")
    return save_iterations(fig, (a1, a2), title, path)
