"""Figures of an MLP run: training curves and decision regions, written to PNG files.

Functions take arrays (or a :class:`~mlp.train.trainer.History`) and a path, draw with matplotlib's
non-interactive Agg backend and return the path. Not imported by ``mlp/__init__``, so importing
``mlp`` never touches matplotlib.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.colors import to_rgb
from matplotlib.lines import Line2D
from matplotlib.patches import Patch

from mlp.data import CLASS_NAMES
from mlp.network import accuracy, predict
from mlp.train.folders import save_figure
from mlp.train.trainer import History

CLASS_COLORS = ("#1f77b4", "#ff7f0e", "#2ca02c", "#d62728", "#9467bd", "#8c564b")
DPI = 120


def _lighten(color: str, amount: float) -> tuple[float, float, float]:
    """Mix ``color`` with white: ``amount`` 0 keeps it, 1 gives white."""
    rgb = np.array(to_rgb(color))
    return tuple(rgb + (1.0 - rgb) * amount)  # type: ignore[return-value]


def plot_curves(history: History, path: str | Path, title: str | None = None) -> Path:
    """Two panels over epochs: the mean cross-entropy (train, and test if recorded) and the
    train/test accuracy. Reads the history columns ``epoch``, ``train_loss``, ``test_loss``,
    ``train_accuracy``, ``test_accuracy``."""
    epoch = history.column("epoch")
    fig, (ax_loss, ax_acc) = plt.subplots(1, 2, figsize=(11, 4.2), constrained_layout=True)
    ax_loss.plot(epoch, history.column("train_loss"), color="C0", lw=1.8, label="train")
    test_loss = history.column("test_loss")
    if np.isfinite(test_loss).any():
        ax_loss.plot(epoch, test_loss, color="C3", lw=1.4, ls="--", label="test")
    ax_loss.set(xlabel="epoch", ylabel="mean cross-entropy", title="Loss")
    ax_loss.legend(frameon=False)
    ax_acc.plot(epoch, history.column("train_accuracy"), color="C0", lw=1.8, label="train")
    test_acc = history.column("test_accuracy")
    if np.isfinite(test_acc).any():
        ax_acc.plot(epoch, test_acc, color="C3", lw=1.4, ls="--", label="test")
    ax_acc.set(xlabel="epoch", ylabel="accuracy", title="Accuracy", ylim=(0.0, 1.02))
    ax_acc.legend(frameon=False, loc="lower right")
    for ax in (ax_loss, ax_acc):
        ax.grid(alpha=0.3)
        ax.set_xlim(epoch[0], epoch[-1])
    if title:
        fig.suptitle(title)
    save_figure(fig, path, dpi=DPI)
    plt.close(fig)
    return Path(path)


def plot_decision_regions(
    theta: dict[str, np.ndarray],
    X_train: np.ndarray,
    y_train: np.ndarray,
    X_test: np.ndarray,
    y_test: np.ndarray,
    path: str | Path,
    feature_names: Sequence[str],
    class_names: Sequence[str] = CLASS_NAMES,
    resolution: int = 400,
) -> Path:
    """The predicted class over the plane of the first two (centered) features.

    Training points are circles, test points crosses, colored by their true class; the regions
    are the network's ``argmax`` prediction. With more than two features, the others are fixed
    at 0 (the training mean, since features are centered) and the title says so.
    """
    d = X_train.shape[1]
    both = np.concatenate([X_train[:, :2], X_test[:, :2]])
    lo, hi = both.min(axis=0), both.max(axis=0)
    pad = 0.08 * (hi - lo) + 0.1
    g0 = np.linspace(lo[0] - pad[0], hi[0] + pad[0], resolution)
    g1 = np.linspace(lo[1] - pad[1], hi[1] + pad[1], resolution)
    xx, yy = np.meshgrid(g0, g1)
    grid = np.zeros((xx.size, d))
    grid[:, 0], grid[:, 1] = xx.ravel(), yy.ravel()
    regions = predict(grid, theta).reshape(xx.shape)

    k = theta["W2"].shape[1]
    colors = [CLASS_COLORS[c % len(CLASS_COLORS)] for c in range(k)]
    fig, ax = plt.subplots(figsize=(8.4, 6), constrained_layout=True)
    ax.contourf(
        xx,
        yy,
        regions,
        levels=np.arange(k + 1) - 0.5,
        colors=[_lighten(c, 0.7) for c in colors],
    )
    ax.contour(xx, yy, regions, levels=np.arange(1, k) - 0.5, colors="0.35", linewidths=0.8)
    for c in range(k):
        tr, te = X_train[y_train == c], X_test[y_test == c]
        ax.scatter(tr[:, 0], tr[:, 1], s=32, marker="o", c=colors[c], edgecolors="k", lw=0.6)
        ax.scatter(te[:, 0], te[:, 1], s=60, marker="x", c=colors[c], lw=2.2)
        ax.scatter(te[:, 0], te[:, 1], s=60, marker="x", c="k", lw=0.5)  # thin dark core
    handles = [
        Patch(facecolor=_lighten(colors[c], 0.7), edgecolor=colors[c], label=class_names[c])
        for c in range(k)
    ]
    handles += [
        Line2D([], [], ls="", marker="o", color="0.4", mec="k", label=f"train ({len(y_train)})"),
        Line2D([], [], ls="", marker="x", color="0.3", mew=2, ms=8, label=f"test ({len(y_test)})"),
    ]
    ax.legend(handles=handles, loc="upper left", bbox_to_anchor=(1.01, 1.0), frameon=False)
    ax.set_xlabel(f"{feature_names[0]}, centered (minus the training mean)")
    ax.set_ylabel(f"{feature_names[1]}, centered (minus the training mean)")
    acc_tr = accuracy(X_train, y_train, theta)
    acc_te = accuracy(X_test, y_test, theta)
    title = f"MLP decision regions: train accuracy {acc_tr:.3f}, test accuracy {acc_te:.3f}"
    if d > 2:
        others = ", ".join(feature_names[2:])
        title += f"\nshown in the first two features; {others} fixed at 0 (the training mean)"
    ax.set_title(title, fontsize=10.5)
    save_figure(fig, path, dpi=DPI)
    plt.close(fig)
    return Path(path)
