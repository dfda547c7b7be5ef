"""Attention maps: the weights ``S (p, c, j)`` of a few prompts at the end of training, the weight
on the target token over training, and an animation of the maps at every recorded step.

Column ``j`` of ``S[i]`` holds query ``j``'s weights over the ``c`` key tokens (it sums to 1).
``square`` maps (one query per token: ``j = c``) are drawn as images, the others as a bar per
token. Every function takes arrays; reading a run folder is its study's job.
"""

from __future__ import annotations

import math
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import PillowWriter
from matplotlib.figure import Figure
from matplotlib.image import AxesImage
from matplotlib.patches import Rectangle

from attnlab.blocks.readout import weight_on_target
from attnlab.plots._style import DPI, OTHER_COLOR, TARGET_COLOR, label
from mlp.train.folders import replacing, save_figure
from mlp.validation import positive


def _grid(p: int, ncols: int) -> tuple[int, int]:
    ncols = min(ncols, p)
    return math.ceil(p / ncols), ncols


def _panel_title(
    i: int, index: Sequence[int] | None, y: float, pred: float, names: Sequence[str] | None
) -> tuple[str, str]:
    """The panel title, and its color: black if the prediction is right, red if wrong."""
    which = f"test prompt {index[i]}" if index is not None else f"prompt {i}"
    text = f"{which}: true {label(y, names)}, predicted {label(pred, names)}"
    return text, ("black" if y == pred else TARGET_COLOR)


def _attention_panels(
    S: np.ndarray,
    target: np.ndarray,
    titles: Sequence[tuple[str, str]],
    square: bool,
    pool: str,
    target_name: str,
    ncols: int,
) -> tuple[Figure, list]:
    """The panels of :func:`plot_attention_maps` for ``S (p, c, j)``, without the suptitle:
    the figure and, per prompt, what holds its weights (the ``AxesImage`` of a ``c x j`` map,
    or the ``BarContainer`` of the bars), so an animation can replace them frame by frame.
    ``titles``: each panel's title and its color."""
    p, c, j = S.shape
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
    square: bool | None = None,
) -> Path:
    """Attention weights ``S (p, c, j)`` of ``p`` prompts, one panel each, the target marked
    (``attention`` names the attention in the title).

    ``square`` (default: ``j = c``, one query per token, as in self and kq attention): the
    ``c x c`` map (x: query token ``j``, y: key token ``c``),
    one shared colorbar, the target token's key row outlined in red (and, for ``pool='last'``,
    the query column the head reads outlined dashed). Otherwise: a bar per token
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
    if square is None:
        square = j == S.shape[1]
    titles = [_panel_title(i, index, float(y[i]), float(pred[i]), class_names) for i in range(p)]
    fig, _ = _attention_panels(S, target, titles, square, pool, target_name, ncols)
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
            label=f"{which} ({label(float(y[i]), class_names)})",
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


def _bar_heights(S: np.ndarray, pool: str) -> np.ndarray:
    """The weight a bar panel shows per token of ``S (c, j)``: mean or last query column."""
    return S.mean(axis=1) if pool == "mean" else S[:, -1]


@dataclass(frozen=True)
class AttentionFrames:
    """The attention maps of ``p`` fixed prompts over training, for :func:`animate_attention`:
    ``S (t, p, c, j)`` at ``steps (t,)``, the target tokens ``target (p,)`` and labels ``y (p,)``;
    how to draw them (``square``, ``pool``) and name them (``class_names``, the prompts'
    ``index`` in their set, ``target_name``, and ``where``: a line saying what run this is)."""

    S: np.ndarray
    steps: np.ndarray
    target: np.ndarray
    y: np.ndarray
    square: bool
    pool: str = "mean"
    class_names: Sequence[str] | None = None
    index: Sequence[int] | None = None
    target_name: str = "marked token"
    where: str = ""


def animate_attention(
    frames: AttentionFrames, path: str | Path, fps: float = 4.0, dpi: int = 80
) -> Path:
    """The attention maps of ``frames`` at every recorded step, as an animated GIF at ``path``.

    One frame per step, drawn with the layout and the fixed color scale 0..1 of
    :func:`plot_attention_maps`; each frame's title gives its step and the mean weight on the
    target token over the ``p`` prompts. Panel titles give the true class only. Written with
    matplotlib's Pillow writer at ``fps`` frames per second and ``dpi``. ``ValueError`` when there
    is no recorded step or no prompt.
    """
    positive("fps", fps)
    dpi = positive("dpi", dpi, integer=True)
    S, steps, target, y, pool = frames.S, frames.steps, frames.target, frames.y, frames.pool
    if S.ndim != 4 or S.shape[0] == 0 or S.shape[1] == 0:
        raise ValueError(
            f"S: expected attention snapshots of shape (t, p, c, j) with t, p >= 1, received "
            f"{S.shape}: train with at least one evaluation to animate it"
        )
    mean_weight = weight_on_target(S, target, pool).mean(axis=1)  # (t,)
    titles = []
    for i in range(S.shape[1]):
        which = f"test prompt {frames.index[i]}" if frames.index is not None else f"prompt {i}"
        titles.append((f"{which}: true {label(float(y[i]), frames.class_names)}", "black"))
    fig, holders = _attention_panels(
        S[0], target, titles, frames.square, pool, frames.target_name, 3
    )

    def draw(frame: int) -> None:
        for i, holder in enumerate(holders):
            if isinstance(holder, AxesImage):
                holder.set_data(S[frame, i])
            else:
                for bar, height in zip(holder, _bar_heights(S[frame, i], pool), strict=True):
                    bar.set_height(height)
        fig.suptitle(
            f"step {int(steps[frame])}: mean weight on the {frames.target_name} over these "
            f"{len(titles)} prompts {mean_weight[frame]:.3f}\n{frames.where}",
            fontsize=11,
        )

    # lay the figure out once, on the first frame, then keep every frame in that layout
    draw(0)
    fig.canvas.draw()
    fig.set_layout_engine("none")
    writer = PillowWriter(fps=fps)
    path = Path(path)
    with replacing(path) as tmp, writer.saving(fig, str(tmp), dpi):  # never through a link
        for frame in range(S.shape[0]):
            draw(frame)
            writer.grab_frame()
    plt.close(fig)
    return path
