"""The attention of a stack: one map per layer and head for one prompt, and an animation of the
maps over training.

``S (l, h, c, c)`` holds, for each layer and head, the weights ``S[.., s, t]`` of query token ``t``
(a column) over the key tokens ``s`` (rows): every column sums to 1, masked keys are exactly 0.
With the prompt's ``tokens`` given, the axes are labelled by them (short prompts) so that a
previous-token head (a diagonal just below the main one) and an induction head (weight on the
token after an earlier copy of the query's token) can be read off the picture.
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import matplotlib.pyplot as plt
import numpy as np
from matplotlib.animation import PillowWriter
from matplotlib.figure import Figure

from attnlab.plots._style import DPI
from mlp.train.folders import replacing, save_figure
from mlp.validation import positive

#: Prompts up to this long get a tick per token (labelled with the token when given).
_TICK_EVERY_TOKEN = 24


def _check(S: np.ndarray, ndim: int, what: str) -> np.ndarray:
    S = np.asarray(S)
    if S.ndim != ndim or S.shape[-1] != S.shape[-2] or 0 in S.shape:
        raise ValueError(f"S: expected shape {what} with c x c maps, received {S.shape}")
    return S


def _panels(
    S: np.ndarray, tokens: Sequence[int] | None, panel: float
) -> tuple[Figure, np.ndarray, list]:
    """A grid of ``l`` rows by ``h`` columns of ``c x c`` images on the fixed scale 0..1."""
    L, H, c, _ = S.shape
    fig, axes = plt.subplots(
        L, H, figsize=(panel * H + 1.4, panel * L + 0.9), squeeze=False, constrained_layout=True
    )
    images = []
    ticks = np.arange(c) if c <= _TICK_EVERY_TOKEN else np.arange(0, c, max(2, c // 8))
    for l in range(L):
        for h in range(H):
            ax = axes[l, h]
            images.append(ax.imshow(S[l, h], cmap="viridis", vmin=0.0, vmax=1.0, aspect="equal"))
            labels = [str(tokens[k]) for k in ticks] if tokens is not None else ticks
            ax.set_xticks(ticks, labels, fontsize=7)
            ax.set_yticks(ticks, labels, fontsize=7)
            ax.set_title(f"layer {l + 1}, head {h + 1}", fontsize=10)
            if h == 0:
                ax.set_ylabel("key s" + (" (its token)" if tokens is not None else ""))
            if l == L - 1:
                ax.set_xlabel("query t" + (" (its token)" if tokens is not None else ""))
    bar = fig.colorbar(images[0], ax=axes.ravel().tolist(), shrink=0.85)
    bar.set_label("attention weight S[s, t] (each column sums to 1)")
    return fig, axes, images


def plot_layer_maps(
    S: np.ndarray,
    path: str | Path,
    tokens: Sequence[int] | None = None,
    title: str | None = None,
    panel: float = 3.2,
) -> Path:
    """Every layer's and head's attention on one prompt: ``S (l, h, c, c)`` (keys ``s`` as rows,
    queries ``t`` as columns), a row per layer and a column per head, on the fixed color scale
    0..1; ``tokens (c,)``: the prompt's tokens, written on the axes of short prompts."""
    S = _check(S, 4, "(l, h, c, c)")
    if tokens is not None and len(tokens) != S.shape[-1]:
        raise ValueError(f"tokens: expected {S.shape[-1]} tokens, received {len(tokens)}")
    fig, _, _ = _panels(S, tokens, panel)
    fig.suptitle(title or f"Attention of {S.shape[0]} layers x {S.shape[1]} heads", fontsize=11)
    save_figure(fig, path, dpi=DPI)
    plt.close(fig)
    return Path(path)


@dataclass(frozen=True)
class LayerFrames:
    """A stack's attention on one prompt over training, for :func:`animate_layer_maps`:
    ``S (t, l, h, c, c)`` recorded at ``steps (t,)``, the prompt's ``tokens (c,)`` if any, and
    ``where``: a line saying what run this is."""

    S: np.ndarray
    steps: np.ndarray
    tokens: Sequence[int] | None = None
    where: str = ""


def animate_layer_maps(
    frames: LayerFrames, path: str | Path, fps: float = 4.0, dpi: int = 80
) -> Path:
    """The maps of :func:`plot_layer_maps` at every recorded step, as an animated GIF: one frame
    per step, the layout and color scale of the first. ``ValueError`` without a recorded step."""
    positive("fps", fps)
    dpi = positive("dpi", dpi, integer=True)
    S = _check(frames.S, 5, "(t, l, h, c, c) with t >= 1")
    steps = np.asarray(frames.steps)
    if steps.shape != (S.shape[0],):
        raise ValueError(f"steps: expected shape ({S.shape[0]},) like S, received {steps.shape}")
    fig, _, images = _panels(S[0], frames.tokens, 3.2)
    H = S.shape[2]

    def draw(k: int) -> None:
        for i, image in enumerate(images):
            image.set_data(S[k, i // H, i % H])
        fig.suptitle(f"step {int(steps[k])}\n{frames.where}", fontsize=11)

    draw(0)
    fig.canvas.draw()
    fig.set_layout_engine("none")  # every frame in the first frame's layout
    writer = PillowWriter(fps=fps)
    path = Path(path)
    with replacing(path) as tmp, writer.saving(fig, str(tmp), dpi):  # never through a link
        for k in range(S.shape[0]):
            draw(k)
            writer.grab_frame()
    plt.close(fig)
    return path
