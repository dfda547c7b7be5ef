"""Figures of an attention run: learning curves, attention maps, the weight on the target token;
the max-margin and in-context regression reproductions.

Functions take arrays (or a :class:`mlp.train.trainer.History`) and a path, draw with matplotlib's
non-interactive Agg backend and return the path. Attention weights are ``S (p, c, j)`` for ``p``
prompts: column ``j`` holds query ``j``'s weights over the ``c`` key tokens (it sums to 1).
Not imported by ``attnlab/__init__``, so importing ``attnlab`` never touches matplotlib.
"""

from __future__ import annotations

import math
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING

import matplotlib

matplotlib.use("Agg")

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import PillowWriter
from matplotlib.axes import Axes
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from attnlab.models.context_window import weight_on_target
from attnlab.blocks.queries import ATTENTIONS
from mlp.train.folders import RunFolderError, replacing, save_figure
from mlp.train.trainer import History
from mlp.validation import choice, positive

if TYPE_CHECKING:
    from attnlab.studies.attention import SavedRun
    from attnlab.studies.max_margin import MaxMarginKQRun, MaxMarginRun, PromptNormRun

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


def _attention_panels(
    S: np.ndarray,
    target: np.ndarray,
    titles: Sequence[tuple[str, str]],
    attention: str,
    pool: str,
    target_name: str,
    ncols: int,
) -> tuple[Figure, list]:
    """The panels of :func:`plot_attention_maps` for ``S (p, c, j)``, without the suptitle:
    the figure and, per prompt, what holds its weights (the ``AxesImage`` of a ``c x j`` map,
    or the ``BarContainer`` of the bars), so an animation can replace them frame by frame.
    ``titles``: each panel's title and its color."""
    p, c, j = S.shape
    square = attention in ("self", "kq")
    rows, cols = _grid(p, ncols)
    size = (4.3 * cols + (1.2 if square else 0), (4.1 if square else 3.0) * rows + 0.6)
    fig, axes = plt.subplots(rows, cols, figsize=size, squeeze=False, constrained_layout=True)
    ticks = np.arange(0, c, 1 if c <= 10 else max(2, c // 8))
    image = None
    holders: list = []
    for i, ax in enumerate(axes.flat):
        if i >= p:
            ax.axis("off")
            continue
        t = int(target[i])
        if square:
            image = ax.imshow(S[i], cmap="viridis", vmin=0.0, vmax=1.0, aspect="equal")
            holders.append(image)
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
            w = _bar_heights(S[i], pool)
            colors = [TARGET_COLOR if k == t else OTHER_COLOR for k in range(c)]
            holders.append(ax.bar(np.arange(c), w, color=colors, width=0.8))
            ax.set_ylim(0.0, 1.02)
            ax.set_xlim(-0.6, c - 0.4)
            ax.set_xticks(ticks)
            ax.set_xlabel(f"token c (red: the {target_name})")
            ax.set_ylabel("attention weight")
            ax.grid(axis="y", alpha=0.3)
        text, color = titles[i]
        ax.set_title(text, fontsize=9.5, color=color)
    if square and image is not None:
        cbar = fig.colorbar(image, ax=axes.ravel().tolist(), shrink=0.85)
        cbar.set_label("attention weight S[c, j] (each column sums to 1)")
    return fig, holders


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
    p, _, j = S.shape
    target, y, pred = np.asarray(target), np.asarray(y), np.asarray(pred)
    for name, a in (("target", target), ("y", y), ("pred", pred)):
        if a.shape != (p,):
            raise ValueError(f"{name}: expected shape (p={p},), received {a.shape}")
    choice("attention", attention, ATTENTIONS)
    titles = [_panel_title(i, index, float(y[i]), float(pred[i]), class_names) for i in range(p)]
    fig, _ = _attention_panels(S, target, titles, attention, pool, target_name, ncols)
    square = attention in ("self", "kq")
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


@dataclass(frozen=True)
class _Run:
    """A run folder read back for its figures: the saved run (model, config, snapshots) and
    the words its figures use."""

    saved: SavedRun
    class_names: list[str] | None
    target_name: str
    index: list[int] | None
    where: str


def _read_run(run_dir: str | Path) -> _Run:
    """Load ``run_dir`` (:func:`attnlab.studies.attention.load` checks every file, the arrays of
    ``snapshots.npz`` included; a :class:`RunFolderError` otherwise)."""
    from attnlab.studies.attention import load  # imported here: experiment imports this module

    saved = load(run_dir)
    cfg, snap = saved.config, saved.snapshots
    return _Run(
        saved=saved,
        class_names=cfg.get("class_names"),
        target_name=TARGET_NAMES.get(cfg["task"], "target token"),
        # the reproduction tasks have no held-out prompts (test is train): number them plainly
        index=[int(i) for i in snap["index"]] if cfg["task"] == "iris-in-context" else None,
        where=f"{cfg['task']}, {cfg['attention']} attention, pool {cfg['pool']}, "
        f"seed {cfg['seed']}",
    )


def plot_run(
    run_dir: str | Path, out: str | Path | None = None, animate: bool = False
) -> dict[str, Path]:
    """Reload a run folder (see :func:`attnlab.studies.attention.load`) and draw its attention maps at
    the end of training (``attention_map.png``) and the weight on the target token over
    training (``attention_over_training.png``) into ``out`` (default: the run folder);
    ``animate=True`` adds the maps at every recorded step (:func:`animate_attention`).

    Predictions in the panel titles come from the reloaded model on the snapshot prompts.
    """
    run = _read_run(run_dir)
    out = Path(run_dir) if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    cfg, snap, model = run.saved.config, run.saved.snapshots, run.saved.model
    inputs = run.saved.inputs
    where = f"{run.where}, after {int(snap['steps'][-1]) if snap['steps'].size else 0} steps"
    paths = {
        "attention_map": plot_attention_maps(
            model.attention_weights(snap["X"], **inputs),
            snap["target"],
            snap["y"],
            model.predict(snap["X"], **inputs),
            out / "attention_map.png",
            attention=cfg["attention"],
            pool=cfg["pool"],
            class_names=run.class_names,
            index=run.index,
            note=where,
            target_name=run.target_name,
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
            class_names=run.class_names,
            index=run.index,
            title=f"Weight on the {run.target_name} during training\n{where}",
            target_name=run.target_name,
        )
    if animate:
        paths["attention_animation"] = _animate(run, out / "attention_over_training.gif")
    return paths


def animate_attention(
    run_dir: str | Path, out: str | Path | None = None, fps: float = 4.0, dpi: int = 80
) -> Path:
    """The attention maps of a run folder's snapshot prompts at every recorded step, as an
    animated GIF ``attention_over_training.gif`` in ``out`` (default: the run folder).

    One frame per step of ``snapshots.npz`` (``S (t, p, c, j)`` at ``steps (t,)``), drawn with
    the layout and the fixed color scale 0..1 of ``attention_map.png``; each frame's title
    gives its step and the mean weight on the target token over the ``p`` prompts. Panel titles
    give the true class only (the parameters of intermediate steps are not saved). Written
    with matplotlib's Pillow writer at ``fps`` frames per second and ``dpi``. A run folder
    without recorded steps, or with a missing or garbled ``snapshots.npz``, raises
    :class:`mlp.train.folders.RunFolderError` naming the file.
    """
    positive("fps", fps)
    dpi = positive("dpi", dpi, integer=True)
    run = _read_run(run_dir)
    out = Path(run_dir) if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return _animate(run, out / "attention_over_training.gif", fps, dpi)


def _bar_heights(S: np.ndarray, pool: str) -> np.ndarray:
    """The weight a bar panel shows per token of ``S (c, j)``: mean or last query column."""
    return S.mean(axis=1) if pool == "mean" else S[:, -1]


def _animate(run: _Run, path: Path, fps: float = 4.0, dpi: int = 80) -> Path:
    cfg, snap = run.saved.config, run.saved.snapshots
    S, steps, target, y = snap["S"], snap["steps"], snap["target"], snap["y"]
    if S.shape[0] == 0 or S.shape[1] == 0:
        raise RunFolderError(
            f"run folder: {path.parent / 'snapshots.npz'} holds no attention snapshots "
            f"(S has shape {S.shape}): train with at least one evaluation to animate it"
        )
    attention, pool = cfg["attention"], cfg["pool"]
    mean_weight = weight_on_target(S, target, pool).mean(axis=1)  # (t,)
    titles = []
    for i in range(S.shape[1]):
        which = f"test prompt {run.index[i]}" if run.index is not None else f"prompt {i}"
        titles.append((f"{which}: true {_label(float(y[i]), run.class_names)}", "black"))
    fig, holders = _attention_panels(S[0], target, titles, attention, pool, run.target_name, 3)

    def draw(frame: int) -> None:
        for i, holder in enumerate(holders):
            if isinstance(holder, AxesImage):
                holder.set_data(S[frame, i])
            else:
                for bar, height in zip(holder, _bar_heights(S[frame, i], pool), strict=True):
                    bar.set_height(height)
        fig.suptitle(
            f"step {int(steps[frame])}: mean weight on the {run.target_name} over these "
            f"{len(titles)} prompts {mean_weight[frame]:.3f}\n{run.where}",
            fontsize=11,
        )

    # lay the figure out once, on the first frame, then keep every frame in that layout
    draw(0)
    fig.canvas.draw()
    fig.set_layout_engine("none")
    writer = PillowWriter(fps=fps)
    with replacing(path) as tmp, writer.saving(fig, str(tmp), dpi):  # never through a link
        for frame in range(S.shape[0]):
            draw(frame)
            writer.grab_frame()
    plt.close(fig)
    return path


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
    fig.savefig(path, dpi=DPI)
    plt.close(fig)
    return Path(path)


def plot_max_margin_seeds(
    runs: Sequence[MaxMarginRun], path: str | Path, title: str | None = None
) -> Path:
    """The correlation ``<W_s, W_mm> / (||W_s|| ||W_mm||)`` over the iterations ``s`` for a
    few seeds: mean and +-std over the seeds (left), ``1 - correlation`` on a log scale, mean
    and worst seed (right). ``runs``: :func:`attnlab.studies.max_margin.run_max_margin` results of the
    same number of iterations; only their ``seed`` and ``correlation (s,)`` are read."""
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
    return _correlation_figure(kinds, "<W, W_mm> / (||W|| ||W_mm||)", title, Path(path))


# --- the max-margin experiments (attnlab.studies.max_margin, attnlab.studies.max_margin_report) -------------


# --- in-context linear regression ------------------------------------------------------------


def _save(fig: Figure, path: str | Path) -> Path:
    fig.tight_layout()
    fig.savefig(path, dpi=DPI)
    return Path(path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


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
    return _save(fig, path)


def _band(ax: Axes, curves: np.ndarray, label: str, color: str, std: bool) -> None:
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


def _correlation_figure(
    kinds: Sequence[tuple[str, np.ndarray, str]], ylabel: str, title: str, path: Path
) -> Path:
    """Left: the correlation ``(seeds, s)`` of each kind ``(label, curves, color)``, mean and
    +-std over seeds; right: ``1 - correlation`` on a log scale, mean and worst seed."""
    fig, a1, a2 = _two_panels()
    low = 0.0
    for label, corr, color in kinds:
        _band(a1, corr, label, color, std=True)
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
    return _save_iterations(fig, (a1, a2), title, path)


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
    written = [
        _correlation_figure(
            [(label, np.array([r.correlation for r in runs]), c) for label, runs, c in kinds],
            "correlation <W, W_mm> / (||W|| ||W_mm||)",
            title,
            out / "max_margin_correlation.png",
        )
    ]

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
    kinds = (
        ("with W_mm (Frobenius)", np.array([r.correlation_frobenius for r in runs]), "tab:red"),
        ("with W_* (nuclear)", np.array([r.correlation for r in runs]), "tab:blue"),
    )
    title = f"max-margin-kq: W = WK WQ^T, per-factor normalized GD, {len(runs)} seeds"
    path = Path(out) / "max_margin_kq_correlation.png"
    return [_correlation_figure(kinds, "correlation of WK WQ^T with the SVM", title, path)]


def plot_max_margin_run(path: str | Path, run: MaxMarginRun) -> Path:
    """One seed of max-margin: the correlation of ``W`` with ``W_mm`` over the steps and
    ``1 - correlation`` on a log scale, written to ``path``. Returns the path."""
    backward = "textbook" if run.textbook_backward else "exact"
    title = f"max-margin seed {run.seed}: cross attention, normalized GD, {backward} backward"
    kinds = [("correlation with W_mm", run.correlation[None], "tab:blue")]
    return _correlation_figure(kinds, "<W, W_mm> / (||W|| ||W_mm||)", title, Path(path))
