"""Figures of an attention run: learning curves, attention maps, the weight on the target token.

Functions take arrays (or a :class:`mlp.train.trainer.History`) and a path, draw with matplotlib's
non-interactive Agg backend and return the path. Attention weights are ``S (p, c, j)`` for ``p``
prompts: column ``j`` holds query ``j``'s weights over the ``c`` key tokens (it sums to 1).
Not imported by ``attnlab/__init__``, so importing ``attnlab`` never touches matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.patches import Rectangle

from attnlab.model import weight_on_target
from mlp.train.folders import save_figure
from mlp.train.trainer import History

if TYPE_CHECKING:
    from attnlab.max_margin import MaxMarginKQRun, MaxMarginRun, PromptNormRun

DPI = 120
TARGET_COLOR = "#d62728"
OTHER_COLOR = "#8c8c8c"
#: What each task's target token is: the marked flower, or the token of the optimal score.
TARGET_NAMES = {
    "iris-in-context": "marked token",
    "max-margin": "optimal token",
    "prompt-norm": "optimal token",
}


def _label(y: float, class_names: Sequence[str] | None) -> str:
    if class_names is not None and len(class_names) > 2:
        return class_names[int(y)]
    return f"{y:+.0f}"


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
            if np.nanmin(loss) > 0 and np.nanmax(loss) > 10 * np.nanmin(loss):
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


def _grid(p: int, ncols: int) -> tuple[int, int]:
    ncols = min(ncols, p)
    return math.ceil(p / ncols), ncols


def _panel_title(
    i: int, index: Sequence[int] | None, y: float, pred: float, names: Sequence[str] | None
) -> tuple[str, str]:
    """The panel title, and its color: black if the prediction is right, red if wrong."""
    which = f"test prompt {index[i]}" if index is not None else f"prompt {i}"
    text = f"{which}: true {_label(y, names)}, predicted {_label(pred, names)}"
    return text, ("black" if y == pred else TARGET_COLOR)


def plot_attention_maps(
    S: np.ndarray,
    target: np.ndarray,
    y: np.ndarray,
    pred: np.ndarray,
    path: str | Path,
    attention: str,
    pool: str = "mean",
    class_names: Sequence[str] | None = None,
    index: Sequence[int] | None = None,
    title: str | None = None,
    note: str | None = None,
    target_name: str = "marked token",
    ncols: int = 3,
) -> Path:
    """Attention weights ``S (p, c, j)`` of ``p`` prompts, one panel each, the target marked.

    ``self``/``kq`` attention: the ``c x c`` map (x: query token ``j``, y: key token ``c``),
    one shared colorbar, the target token's key row outlined in red (and, for ``pool='last'``,
    the query column the head reads outlined dashed). ``prompt``/``cross``: a bar per token
    (mean over the query columns for ``pool='mean'``, the last column for ``'last'``), the
    target's bar red. Each panel's title gives the true and predicted class (``class_names``;
    ``index``: the prompts' rows in the test set). ``note`` adds a line under the title;
    ``target_name`` is what the legend calls the target (the iris task's "marked token").
    """
    S = np.asarray(S)
    if S.ndim != 3:
        raise ValueError(f"S: expected shape (p, c, j), received {S.shape}")
    p, c, j = S.shape
    target, y, pred = np.asarray(target), np.asarray(y), np.asarray(pred)
    for name, a in (("target", target), ("y", y), ("pred", pred)):
        if a.shape != (p,):
            raise ValueError(f"{name}: expected shape (p={p},), received {a.shape}")
    if attention not in ("prompt", "self", "kq", "cross"):
        raise ValueError(
            f"attention: expected 'prompt', 'self', 'kq' or 'cross', received {attention!r}"
        )
    square = attention in ("self", "kq")
    rows, cols = _grid(p, ncols)
    size = (4.3 * cols + (1.2 if square else 0), (4.1 if square else 3.0) * rows + 0.6)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, constrained_layout=True)
    ticks = np.arange(0, c, 1 if c <= 10 else max(2, c // 8))
    image = None
    for i, ax in enumerate(axes.flat):
        if i >= p:
            ax.axis("off")
            continue
        t = int(target[i])
        if square:
            image = ax.imshow(S[i], cmap="viridis", vmin=0.0, vmax=1.0, aspect="equal")
            ax.add_patch(
                Rectangle((-0.5, t - 0.5), j, 1, fill=False, ec=TARGET_COLOR, lw=2.2, clip_on=False)
            )
            if pool == "last":
                ax.add_patch(
                    Rectangle((j - 1.5, -0.5), 1, c, fill=False, ec="white", lw=1.5, ls="--")
                )
            ax.set_xticks(ticks)
            yt = sorted({int(k) for k in ticks if abs(int(k) - t) > 1} | {t})
            short = target_name.split()[0]
            ax.set_yticks(yt, [f"{short} {k}" if k == t else str(k) for k in yt])
            for k, lab in zip(yt, ax.get_yticklabels(), strict=True):
                if k == t:
                    lab.set_color(TARGET_COLOR)
                    lab.set_fontweight("bold")
            ax.set_xlabel("query token j")
            ax.set_ylabel("key token c")
        else:
            w = S[i].mean(axis=1) if pool == "mean" else S[i, :, -1]
            colors = [TARGET_COLOR if k == t else OTHER_COLOR for k in range(c)]
            ax.bar(np.arange(c), w, color=colors, width=0.8)
            ax.set_ylim(0.0, 1.02)
            ax.set_xlim(-0.6, c - 0.4)
            ax.set_xticks(ticks)
            ax.set_xlabel(f"token c (red: the {target_name})")
            ax.set_ylabel("attention weight")
            ax.grid(axis="y", alpha=0.3)
        text, color = _panel_title(i, index, float(y[i]), float(pred[i]), class_names)
        ax.set_title(text, fontsize=9.5, color=color)
    if square and image is not None:
        cbar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.85)
        cbar.set_label("attention weight S[c, j] (each column sums to 1)")
    if title is None:
        title = f"{attention} attention on {p} test prompts"
        if square:
            title += f": red outline = the {target_name}'s key row"
            if pool == "last":
                title += "; dashed = the query column the head reads (pool=last)"
        elif j > 1:
            title += f" ({'mean over' if pool == 'mean' else 'last of'} {j} query columns)"
    fig.suptitle(title if note is None else f"{title}\n{note}", fontsize=11)
    save_figure(fig, path, dpi=DPI)
    plt.close(fig)
    return Path(path)


def plot_target_weight(
    S: np.ndarray,
    steps: np.ndarray,
    target: np.ndarray,
    y: np.ndarray,
    path: str | Path,
    pool: str = "mean",
    class_names: Sequence[str] | None = None,
    index: Sequence[int] | None = None,
    title: str | None = None,
    target_name: str = "marked token",
) -> Path:
    """The weight on the target token over training, one line per snapshot prompt and their
    mean: ``S (t, p, c, j)`` recorded at ``steps (t,)``, ``target (p,)``, labels ``y (p,)``.
    The uniform level ``1/c`` is drawn for reference."""
    S = np.asarray(S)
    steps = np.asarray(steps)
    if S.ndim != 4 or steps.shape != (S.shape[0],):
        raise ValueError(
            f"S, steps: expected S of shape (t, p, c, j) and steps of shape (t,), received "
            f"{S.shape} and {steps.shape}"
        )
    if S.shape[0] == 0:
        raise ValueError("S: expected at least one snapshot, received none")
    w = weight_on_target(S, target, pool)  # (t, p)
    c = S.shape[2]
    fig, ax = plt.subplots(figsize=(8.4, 4.8), constrained_layout=True)
    cmap = plt.get_cmap("tab10")
    for i in range(w.shape[1]):
        which = f"test prompt {index[i]}" if index is not None else f"prompt {i}"
        ax.plot(
            steps,
            w[:, i],
            color=cmap(i % 10),
            lw=1.3,
            alpha=0.85,
            label=f"{which} ({_label(float(y[i]), class_names)})",
        )
    ax.plot(steps, w.mean(axis=1), color="k", lw=2.6, label="mean over these prompts")
    ax.axhline(1.0 / c, color="0.4", lw=1, ls=":", label=f"uniform (1/{c})")
    ax.set_ylim(-0.02, 1.02)
    if steps[-1] > steps[0]:
        ax.set_xlim(steps[0], steps[-1])
    ax.set_xlabel("training step")
    which_q = "mean over the query columns" if pool == "mean" else "query column the head reads"
    ax.set_ylabel(f"weight on the {target_name}\n({which_q})")
    ax.grid(alpha=0.3)
    ax.legend(loc="center left", bbox_to_anchor=(1.01, 0.5), frameon=False, fontsize=9)
    ax.set_title(title or f"Attention on the {target_name} during training")
    save_figure(fig, path, dpi=DPI)
    plt.close(fig)
    return Path(path)


def plot_run(run_dir: str | Path, out: str | Path | None = None) -> dict[str, Path]:
    """Reload a run folder (see :func:`attnlab.experiment.load`) and draw its attention maps at
    the end of training (``attention_map.png``) and the weight on the target token over
    training (``attention_over_training.png``) into ``out`` (default: the run folder).

    Predictions in the panel titles come from the reloaded model on the snapshot prompts.
    """
    from attnlab.experiment import load  # imported here: experiment imports this module

    saved = load(run_dir)
    out = Path(run_dir) if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg, snap, model = saved.config, saved.snapshots, saved.model
    names = cfg.get("class_names")
    target_name = TARGET_NAMES.get(cfg["task"], "target token")
    # the reproduction tasks have no held-out prompts (test is train): number them plainly
    index = [int(i) for i in snap["index"]] if cfg["task"] == "iris-in-context" else None
    S_final = model.attention_weights(snap["X"], **saved.inputs)
    pred = model.predict(snap["X"], **saved.inputs)
    where = (
        f"{cfg['task']}, {cfg['attention']} attention, pool {cfg['pool']}, "
        f"seed {cfg['seed']}, after {int(snap['steps'][-1]) if snap['steps'].size else 0} steps"
    )
    paths = {
        "attention_map": plot_attention_maps(
            S_final,
            snap["target"],
            snap["y"],
            pred,
            out / "attention_map.png",
            attention=cfg["attention"],
            pool=cfg["pool"],
            class_names=names,
            index=index,
            note=where,
            target_name=target_name,
        )
    }
    if snap["S"].shape[0] > 0:
        paths["attention_over_training"] = plot_target_weight(
            snap["S"],
            snap["steps"],
            snap["target"],
            snap["y"],
            out / "attention_over_training.png",
            pool=cfg["pool"],
            class_names=names,
            index=index,
            title=f"Weight on the {target_name} during training\n{where}",
            target_name=target_name,
        )
    return paths


# --- the max-margin reproduction (scripts/reproduce_max_margin.py) ---------------------------


def _band(ax: Axes, curves: np.ndarray, label: str, color: str, std: bool) -> None:
    """Mean over seeds and its spread: +-1 standard deviation (as in the papers) or min..max."""
    steps = np.arange(curves.shape[1])
    mean = curves.mean(axis=0)
    if std:
        lo, hi, what = mean - curves.std(axis=0), mean + curves.std(axis=0), "+-std"
    else:
        lo, hi, what = curves.min(axis=0), curves.max(axis=0), "min..max"
    ax.fill_between(steps, lo, hi, color=color, alpha=0.2, lw=0, label=f"{label}: {what}")
    ax.plot(steps, mean, color=color, label=f"{label}: mean")


def _two_panels() -> tuple[Figure, Axes, Axes]:
    fig = Figure(figsize=(11, 4.2))
    a1, a2 = fig.subplots(1, 2)
    return fig, a1, a2


def _save_iterations(fig: Figure, axes: tuple[Axes, ...], title: str, path: Path) -> Path:
    """Label every x axis 'iteration', add grids and legends, the title, and save."""
    for ax in axes:
        ax.set_xlabel("iteration")
        ax.grid(alpha=0.3)
        ax.legend(fontsize=8)
    fig.suptitle(title)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    return path


def plot_max_margin(
    out: str | Path,
    exact: list[MaxMarginRun],
    textbook: list[MaxMarginRun],
    ngd: PromptNormRun,
    gd: PromptNormRun,
) -> list[Path]:
    """The papers' figures of the max-margin reproduction, written into ``out``: the
    correlation with ``W_mm`` (mean and spread over seeds), the selected token's weight and
    ``||W||``, exact against textbook backward; and prompt-norm's ``||p||`` and optimal-token
    weight under normalized GD and GD. Returns the paths."""
    out = Path(out)
    title = f"max-margin: cross attention, normalized GD, {len(exact)} seeds"
    kinds = (("textbook backward", textbook, "tab:red"), ("exact backward", exact, "tab:blue"))

    fig, a1, a2 = _two_panels()
    for label, runs, color in kinds:
        corr = np.array([r.correlation for r in runs])
        _band(a1, corr, label, color, std=True)
        gap = 1.0 - corr
        a2.semilogy(gap.mean(axis=0), color=color, label=f"{label}: mean")
        a2.semilogy(gap.max(axis=0), color=color, lw=0.8, ls=":", label=f"{label}: worst seed")
    a1.set_ylim(0.0, 1.01)
    a1.set_ylabel("correlation <W, W_mm> / (||W|| ||W_mm||)")
    a2.set_ylabel("1 - correlation")
    written = [_save_iterations(fig, (a1, a2), title, out / "max_margin_correlation.png")]

    fig, a1, a2 = _two_panels()
    for label, runs, color in kinds:
        _band(a1, np.array([r.probability for r in runs]), label, color, std=False)
        _band(a2, np.array([r.norm for r in runs]), label, color, std=False)
    a1.set_ylabel("weight of the selected token")
    a1.set_title("softmax weight, mean over prompts", fontsize=9)
    a2.set_ylabel("||W||_F")
    written.append(_save_iterations(fig, (a1, a2), title, out / "max_margin_probability_norm.png"))

    fig, a1, a2 = _two_panels()
    for run, color in ((ngd, "tab:blue"), (gd, "tab:orange")):
        label = f"{'normalized GD' if run.optimizer == 'ngd' else 'GD'}, lr {run.lr:g}"
        a1.plot(run.norm, color=color, label=label)
        a2.plot(run.probability, color=color, label=label)
    a1.set_ylabel("||p||")
    a2.set_ylabel("weight of the optimal token")
    a2.set_title("softmax weight, mean over prompts", fontsize=9)
    pn_title = "prompt-norm: prompt attention trained from p = 0"
    written.append(_save_iterations(fig, (a1, a2), pn_title, out / "prompt_norm.png"))
    return written


def plot_max_margin_kq(out: str | Path, runs: list[MaxMarginKQRun]) -> list[Path]:
    """The ``(K, Q)`` figure of the max-margin reproduction, written into ``out``: the
    correlation of ``WK WQ^T`` with the nuclear-norm SVM ``W_*`` and with the Frobenius SVM
    ``W_mm`` (mean and +-std over seeds), and ``1 - correlation`` on a log scale (mean and worst
    seed). Returns the paths."""
    out = Path(out)
    title = f"max-margin-kq: W = WK WQ^T, per-factor normalized GD, {len(runs)} seeds"
    kinds = (
        ("with W_mm (Frobenius)", np.array([r.correlation_frobenius for r in runs]), "tab:red"),
        ("with W_* (nuclear)", np.array([r.correlation for r in runs]), "tab:blue"),
    )
    fig, a1, a2 = _two_panels()
    for label, corr, color in kinds:
        _band(a1, corr, label, color, std=True)
        gap = 1.0 - corr
        a2.semilogy(gap.mean(axis=0), color=color, label=f"{label}: mean")
        a2.semilogy(gap.max(axis=0), color=color, lw=0.8, ls=":", label=f"{label}: worst seed")
    a1.set_ylim(-0.2, 1.01)
    a1.set_ylabel("correlation of WK WQ^T with the SVM")
    a2.set_ylabel("1 - correlation")
    return [_save_iterations(fig, (a1, a2), title, out / "max_margin_kq_correlation.png")]
