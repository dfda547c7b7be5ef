"""The figures of in-context regression with depth (Ahn, Cheng, Daneshmand and Sra): the test
loss against the number of layers, and heatmaps of the learned ``A_l`` and ``B_l``."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from attnlab.plots._style import DPI, OTHER_COLOR, TARGET_COLOR, save
from mlp.train.folders import save_figure

#: A color per (variant, covariance) of the depth figure.
_COLORS = {
    ("gd", "identity"): "#1f77b4",
    ("gd", "rotated"): "#17becf",
    ("full", "identity"): TARGET_COLOR,
    ("full", "rotated"): "#ff7f0e",
}


def plot_loss_vs_depth(
    measured: Mapping[tuple[str, str], Mapping[int, Sequence[float]]],
    optimal: Mapping[int, float],
    one_layer: float,
    path: str | Path,
) -> Path:
    """Test loss (log scale) against the number of layers ``L``: for each ``(variant,
    covariance)`` of ``measured`` (``L -> test losses of the seeds``) a dot per seed and a line
    through the means; the exact loss of the optimal ``L`` GD steps (``optimal``: ``L -> loss``)
    and the one-layer closed form ``one_layer`` (dashed)."""
    fig = Figure(figsize=(6.4, 4.6))
    ax = fig.subplots()
    Ls = sorted(optimal)
    ax.plot(Ls, [optimal[L] for L in Ls], "s-", color="black", lw=1.5, ms=6,
            label="optimal GD steps (exact)", zorder=3)  # fmt: skip
    ax.axhline(one_layer, color=OTHER_COLOR, ls="--", lw=1,
               label=f"one layer, closed form {one_layer:.4f}")  # fmt: skip
    for i, ((variant, cov), by_L) in enumerate(sorted(measured.items())):
        color = _COLORS.get((variant, cov), f"C{i}")
        shift = {"identity": -0.06, "rotated": 0.06}.get(cov, 0.0)
        xs = sorted(by_L)
        means = [float(np.mean(by_L[L])) for L in xs]
        ax.plot(np.add(xs, shift), means, "-", color=color, lw=1.2,
                label=f"trained {variant}, {cov}")  # fmt: skip
        for L in xs:
            ax.plot(np.full(len(by_L[L]), L + shift), by_L[L], "o", color=color, ms=4, alpha=0.8)
    ax.set_yscale("log")
    ax.set_xticks(Ls, [str(L) for L in Ls])
    ax.set_xlabel("layers L (steps of GD)")
    ax.set_ylabel("test loss E (yhat - y)^2")
    ax.set_title("In-context regression, d = 5, N = 20")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_parameter_maps(
    rows: Sequence[tuple[str, np.ndarray]],
    title: str,
    path: str | Path,
) -> Path:
    """Heatmaps of matrices, a row of panels per entry of ``rows``: ``(name, M (L, d, d))``, one
    panel per layer ``l`` titled ``name`` with ``l`` (``{l}`` in ``name`` is replaced by it),
    each value written in its cell; one symmetric color scale per row."""
    n_rows = len(rows)
    n_cols = max(len(M) for _, M in rows)
    fig = Figure(figsize=(2.6 * n_cols + 0.6, 2.5 * n_rows + 0.5), layout="constrained")
    axes = np.array(fig.subplots(n_rows, n_cols, squeeze=False))
    for r, (name, M) in enumerate(rows):
        scale = float(np.max(np.abs(M))) or 1.0
        for l in range(n_cols):
            ax = axes[r, l]
            if l >= len(M):
                ax.axis("off")
                continue
            im = ax.imshow(M[l], cmap="RdBu_r", vmin=-scale, vmax=scale)
            d = M[l].shape[0]
            for i in range(d):
                for j in range(d):
                    ax.text(j, i, f"{M[l][i, j]:.2f}", ha="center", va="center", fontsize=6)
            ax.set_xticks([])
            ax.set_yticks([])
            ax.set_title(name.replace("{l}", str(l)), fontsize=9)
        fig.colorbar(im, ax=list(axes[r]), shrink=0.8)
    fig.suptitle(title, fontsize=10)
    return save_figure(fig, path, dpi=DPI)  # the constrained layout leaves room for the colorbars
