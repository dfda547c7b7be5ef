"""The in-context regression figures (Zhang, Frei and Bartlett; von Oswald et al.): the error
of ``u W11`` over training, the loss against the prompt length, the predictions against one GD
step, and the loss under covariate shift."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import numpy as np
from matplotlib.figure import Figure

from attnlab.plots._style import OTHER_COLOR, TARGET_COLOR, save


def plot_icl_rel_error(
    errors: dict[str, list[tuple[int, np.ndarray, np.ndarray, float]]],
    target: float,
    path: str | Path,
) -> Path:
    """One panel per covariance: ``||u W11 - Gamma^-1||_F / ||Gamma^-1||_F`` over the training
    steps (log scale), a line per seed; ``errors[covariance]`` holds ``(seed, steps, errors,
    final)``, ``final`` (a dot at the last step) being the error of the parameters the run
    returns (the mean of the last iterates). The dashed line is ``target``."""
    fig = Figure(figsize=(5.2 * len(errors), 4.0))
    axes = np.atleast_1d(fig.subplots(1, len(errors)))
    for ax, (cov, runs) in zip(axes, errors.items(), strict=True):
        for i, (seed, steps, err, final) in enumerate(runs):
            (line,) = ax.plot(steps, err, lw=1.0, label=f"seed {seed}")
            ax.plot(
                steps[-1], final, "o", color=line.get_color(), ms=5,
                label="mean of the last iterates" if i == 0 else None,
            )  # fmt: skip
        ax.axhline(target, color=OTHER_COLOR, ls="--", lw=1, label=f"target {target:g}")
        ax.set_yscale("log")
        ax.set_xlabel("step")
        ax.set_ylabel("relative error of u W11")
        ax.set_title(f"Lambda = {cov}")
        ax.grid(alpha=0.3, which="both")
        ax.legend(fontsize=8)
    return save(fig, path)


def plot_icl_length(length: Sequence[dict[str, float]], N: int, path: str | Path) -> Path:
    """Test loss of the trained layer against the test prompt length ``M`` (rows ``{"M",
    "measured", "theory"}``) with the closed form's ``R(M)``; the dotted line is the training
    length ``N``."""
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.subplots()
    M = [r["M"] for r in length]
    ax.plot(M, [r["theory"] for r in length], color=OTHER_COLOR, lw=2, label="theory R(M)")
    ax.plot(M, [r["measured"] for r in length], "o", color=TARGET_COLOR, label="trained layer")
    ax.axvline(N, color=OTHER_COLOR, ls=":", lw=1, label=f"training length N = {N}")
    ax.set_xscale("log")
    ax.set_xticks(M, [str(m) for m in M])
    ax.set_xlabel("examples in the test prompt M")
    ax.set_ylabel("test loss (y - yhat)^2 / 2")
    ax.set_title("Length generalization, Lambda = I")
    ax.grid(alpha=0.3)
    ax.legend(fontsize=8)
    return save(fig, path)


def plot_icl_gd(yhat: np.ndarray, ygd: np.ndarray, gd: dict[str, float], path: str | Path) -> Path:
    """Predictions of the trained layer against one step of GD on the same prompts, the
    diagonal, and the numbers of ``gd`` (``eta``, ``cosine``, ``rel_l2``,
    ``sensitivity_cosine``)."""
    fig = Figure(figsize=(5.0, 4.8))
    ax = fig.subplots()
    ax.scatter(ygd, yhat, s=4, alpha=0.4, color=TARGET_COLOR, lw=0)
    lim = float(np.max(np.abs(np.concatenate([yhat, ygd]))))
    ax.plot([-lim, lim], [-lim, lim], color=OTHER_COLOR, lw=1)
    ax.set_xlabel(f"one GD step, eta = N/(N+d+1) = {gd['eta']:.4f}")
    ax.set_ylabel("trained linear attention")
    ax.set_title("Predictions on test prompts, Lambda = I")
    ax.text(
        0.03,
        0.97,
        f"cosine {gd['cosine']:.6f}\nrelative L2 {gd['rel_l2']:.4f}\n"
        f"cosine of d yhat / d x_q {gd['sensitivity_cosine']:.6f}",
        transform=ax.transAxes,
        va="top",
        fontsize=9,
    )
    ax.set_aspect("equal")
    ax.grid(alpha=0.3)
    return save(fig, path)


def plot_icl_shift(
    shift: Sequence[dict[str, float]], theory: Sequence[float], path: str | Path
) -> Path:
    """Test loss when every ``x`` is scaled by ``c`` (rows ``{"c", "loss"}``), with the closed
    form's risk ``theory`` at the same ``c`` (log scale)."""
    fig = Figure(figsize=(5.5, 4.0))
    ax = fig.subplots()
    c = [r["c"] for r in shift]
    ax.plot(c, theory, color=OTHER_COLOR, lw=2, label="theory (closed form)")
    ax.plot(c, [r["loss"] for r in shift], "o", color=TARGET_COLOR, label="trained layer")
    ax.set_yscale("log")
    ax.set_xlabel("scale c of the test inputs x")
    ax.set_ylabel("test loss (y - yhat)^2 / 2")
    ax.set_title("Covariate shift: yhat grows as c^3, y as c")
    ax.grid(alpha=0.3, which="both")
    ax.legend(fontsize=8)
    return save(fig, path)
