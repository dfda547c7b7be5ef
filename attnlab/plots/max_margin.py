"""The max-margin figures (Tarzanagh et al.): the correlation of the trained ``W`` with the
attention SVM over the iterations, the selected token's weight and ``||W||``, prompt-norm's
``||p||``, and the ``(K, Q)`` correlation with the nuclear-norm SVM.

The runs are read by their attributes only (``seed``, ``correlation (s,)``, ``probability (s,)``,
``norm (s,)``, ...), so any object with those curves can be drawn.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.plots._style import band, correlation_figure, save_iterations, two_panels


def plot_max_margin_seeds(runs: Sequence[Any], path: str | Path, title: str | None = None) -> Path:
    """The correlation ``<W_s, W_mm> / (||W_s|| ||W_mm||)`` over the iterations ``s`` for a
    few seeds: mean and +-std over the seeds (left), ``1 - correlation`` on a log scale, mean
    and worst seed (right). ``runs``: max-margin runs of the same number of iterations; only
    their ``seed`` and ``correlation (s,)`` are read."""
    if len(runs) == 0:
        raise ValueError("runs: expected at least one max-margin run, received none")
    lengths = sorted({len(r.correlation) for r in runs})
    if len(lengths) > 1:
        raise ValueError(
            f"runs: expected runs of the same number of iterations, received curves of "
            f"{lengths} steps"
        )
    seeds = ", ".join(str(r.seed) for r in runs)
    kinds = [(f"seeds {seeds}", np.array([r.correlation for r in runs]), "tab:blue")]
    title = title or f"max-margin: the direction of W approaches W_mm ({len(runs)} seeds)"
    return correlation_figure(kinds, "<W, W_mm> / (||W|| ||W_mm||)", title, Path(path))


def plot_max_margin(
    out: str | Path,
    exact: Sequence[Any],
    textbook: Sequence[Any],
    ngd: Any,
    gd: Any,
) -> list[Path]:
    """The papers' figures of the max-margin reproduction, written into ``out``: the
    correlation with ``W_mm`` (mean and spread over seeds), the selected token's weight and
    ``||W||``, exact against textbook backward; and prompt-norm's ``||p||`` and optimal-token
    weight under normalized GD and GD. Returns the paths."""
    out = Path(out)
    title = f"max-margin: cross attention, normalized GD, {len(exact)} seeds"
    kinds = (("textbook backward", textbook, "tab:red"), ("exact backward", exact, "tab:blue"))
    written = [
        correlation_figure(
            [(label, np.array([r.correlation for r in runs]), c) for label, runs, c in kinds],
            "correlation <W, W_mm> / (||W|| ||W_mm||)",
            title,
            out / "max_margin_correlation.png",
        )
    ]

    fig, a1, a2 = two_panels()
    for label, runs, color in kinds:
        band(a1, np.array([r.probability for r in runs]), label, color, std=False)
        band(a2, np.array([r.norm for r in runs]), label, color, std=False)
    a1.set_ylabel("weight of the selected token")
    a1.set_title("softmax weight, mean over prompts", fontsize=9)
    a2.set_ylabel("||W||_F")
    written.append(save_iterations(fig, (a1, a2), title, out / "max_margin_probability_norm.png"))

    fig, a1, a2 = two_panels()
    for run, color in ((ngd, "tab:blue"), (gd, "tab:orange")):
        label = f"{'normalized GD' if run.optimizer == 'ngd' else 'GD'}, lr {run.lr:g}"
        a1.plot(run.norm, color=color, label=label)
        a2.plot(run.probability, color=color, label=label)
    a1.set_ylabel("||p||")
    a2.set_ylabel("weight of the optimal token")
    a2.set_title("softmax weight, mean over prompts", fontsize=9)
    pn_title = "prompt-norm: prompt attention trained from p = 0"
    written.append(save_iterations(fig, (a1, a2), pn_title, out / "prompt_norm.png"))
    return written


def plot_max_margin_kq(out: str | Path, runs: Sequence[Any]) -> list[Path]:
    """The ``(K, Q)`` figure of the max-margin reproduction, written into ``out``: the
    correlation of ``WK WQ^T`` with the nuclear-norm SVM ``W_*`` and with the Frobenius SVM
    ``W_mm`` (mean and +-std over seeds), and ``1 - correlation`` on a log scale (mean and worst
    seed). Returns the paths."""
    kinds = (
        ("with W_mm (Frobenius)", np.array([r.correlation_frobenius for r in runs]), "tab:red"),
        ("with W_* (nuclear)", np.array([r.correlation for r in runs]), "tab:blue"),
    )
    title = f"max-margin-kq: W = WK WQ^T, per-factor normalized GD, {len(runs)} seeds"
    path = Path(out) / "max_margin_kq_correlation.png"
    return [correlation_figure(kinds, "correlation of WK WQ^T with the SVM", title, path)]


def plot_max_margin_run(path: str | Path, run: Any) -> Path:
    """One seed of max-margin: the correlation of ``W`` with ``W_mm`` over the steps and
    ``1 - correlation`` on a log scale, written to ``path``. Returns the path."""
    backward = "textbook" if run.textbook_backward else "exact"
    title = f"max-margin seed {run.seed}: cross attention, normalized GD, {backward} backward"
    kinds = [("correlation with W_mm", run.correlation[None], "tab:blue")]
    return correlation_figure(kinds, "<W, W_mm> / (||W|| ||W_mm||)", title, Path(path))
