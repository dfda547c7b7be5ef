"""Learning curves of a training run and the error of the softmax backward against the score
scale."""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np

from attnlab.plots._style import DPI
from mlp.train.folders import save_figure
from mlp.train.trainer import History


def plot_attention_curves(
    history: History,
    path: str | Path,
    title: str | None = None,
    context: int | None = None,
    target_name: str = "marked token",
) -> Path:
    """Three panels over training steps: the mean loss, the accuracy and the mean attention
    weight on the target token, each for the training and the test prompts.

    Reads the history columns ``step``, ``{train,test}_loss``, ``{train,test}_accuracy`` and
    ``{train,test}_attention_on_target``; ``context`` (c) draws the uniform level ``1/c``.
    The loss axis is logarithmic when the loss falls by more than a factor 10.
    """
    step = history.column("step")
    if step.size == 0:
        raise ValueError("history: expected at least one recorded row, received none")
    fig, axes = plt.subplots(1, 3, figsize=(14, 4.2), constrained_layout=True)
    panels = (
        ("loss", "mean loss", "Loss"),
        ("accuracy", "accuracy", "Accuracy"),
        (
            "attention_on_target",
            f"mean weight on the {target_name}",
            f"Attention on the {target_name}",
        ),
    )
    for ax, (key, ylabel, name) in zip(axes, panels, strict=True):
        for split, color, style in (("train", "C0", "-"), ("test", "C3", "--")):
            values = history.column(f"{split}_{key}")
            if np.isfinite(values).any():
                ax.plot(step, values, color=color, ls=style, lw=1.7, label=split)
        ax.set(xlabel="training step", ylabel=ylabel, title=name)
        if key == "loss":
            loss = history.column("train_loss")
            if not np.isfinite(loss).any():  # a stream: no training-set loss, the test one
                loss = history.column("test_loss")
            finite = loss[np.isfinite(loss)]
            if finite.size and finite.min() > 0 and finite.max() > 10 * finite.min():
                ax.set_yscale("log")
                ax.set_ylabel("mean loss (log scale)")
        else:
            ax.set_ylim(-0.02, 1.02)
        ax.grid(alpha=0.3)
        if step[-1] > step[0]:
            ax.set_xlim(step[0], step[-1])
    if context:
        axes[2].axhline(1.0 / context, color="0.4", lw=1, ls=":", label=f"uniform (1/{context})")
    for ax in axes:
        if ax.lines:
            ax.legend(frameon=False, loc="best")
    if title:
        fig.suptitle(title)
    save_figure(fig, path, dpi=DPI)
    plt.close(fig)
    return Path(path)


def plot_backward_error(
    scales: np.ndarray,
    errors: Mapping[str, np.ndarray],
    path: str | Path,
    title: str | None = None,
) -> Path:
    """The relative error of ``dQ`` against the score scale, one line per backward
    (``errors``: name -> ``(k,)`` for ``scales (k,)``, as :func:`attnlab.precision.dq_errors`
    returns), on a logarithmic error axis with float64's machine epsilon for reference."""
    scales = np.asarray(scales, dtype=np.float64)
    if scales.ndim != 1 or scales.size == 0:
        raise ValueError(f"scales: expected shape (k,) with k >= 1, received {scales.shape}")
    if not errors:
        raise ValueError("errors: expected at least one named curve, received none")
    for name, err in errors.items():
        if np.shape(err) != scales.shape:
            raise ValueError(
                f"errors[{name!r}]: expected shape {scales.shape} like scales, "
                f"received {np.shape(err)}"
            )
    colors = {"exact": "tab:blue", "textbook": "tab:red"}
    fig, ax = plt.subplots(figsize=(8.4, 4.8), constrained_layout=True)
    for k, (name, err) in enumerate(errors.items()):
        err = np.asarray(err, dtype=np.float64)
        shown = np.where(err > 0, err, np.nan)  # an error of exactly 0 has no place on a log axis
        ax.semilogy(scales, shown, "o-", ms=3.5, color=colors.get(name, f"C{k}"), label=name)
    eps = np.finfo(np.float64).eps
    ax.axhline(eps, color="0.4", lw=1, ls=":", label=f"float64 epsilon ({eps:.1e})")
    ax.set_xlabel("score scale: the largest |score| of each prompt")
    ax.set_ylabel("relative error of dQ (worst prompt)")
    ax.grid(alpha=0.3, which="both")
    ax.legend(frameon=False)
    ax.set_title(title or "Softmax backward: dQ against a high-precision reference")
    save_figure(fig, path, dpi=DPI)
    plt.close(fig)
    return Path(path)
