"""An attention run folder read back (:func:`load`, every file checked against what it must
hold) and its attention figures redrawn from it (:func:`plot_run`)."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any

import numpy as np

from attnlab.blocks.queries import VARIANTS
from attnlab.models.context_window import ContextWindowModel
from attnlab.tasks import REGISTRY
from mlp.train.folders import Member, RunFolderError, load_arrays, load_model
from mlp.validation import check_seed, choice, positive

if TYPE_CHECKING:  # matplotlib only when a figure is drawn: scripts start fast
    from attnlab.plots.maps import AttentionFrames

#: The arrays of ``snapshots.npz`` (and ``Z`` for the queries of cross attention).
SNAPSHOT_KEYS = ("X", "y", "target", "index", "steps", "S")


@dataclass
class SavedRun:
    """A run folder read back: the ``model`` with its trained parameters, the ``config`` dict
    and the ``snapshots`` arrays (see :meth:`Experiment.save`)."""

    model: ContextWindowModel
    config: dict[str, Any]
    snapshots: dict[str, np.ndarray]

    @property
    def inputs(self) -> dict[str, np.ndarray]:
        """Extra model inputs of the snapshot prompts (``Z`` for cross attention)."""
        return {"Z": self.snapshots["Z"]} if "Z" in self.snapshots else {}


def load(run_dir: str | Path) -> SavedRun:
    """Rebuild the model of a run folder from ``config.json`` + ``params.npz`` and read
    ``snapshots.npz``, each checked against what it must hold (the snapshot arrays' headers
    before their data, then the labels and token indices); a missing, linked, garbled or
    mismatched file raises :class:`mlp.train.folders.RunFolderError` naming it."""

    def build(cfg: dict[str, Any]) -> ContextWindowModel:
        return ContextWindowModel(**cfg)

    run_dir = Path(run_dir)
    model, config = load_model(run_dir, build)
    _check_config(config, model, run_dir / "config.json")
    path = run_dir / "snapshots.npz"
    snapshots = load_arrays(path, check=lambda members: _check_snapshots(members, model, path))
    try:
        model._labels(snapshots["y"], len(snapshots["y"]))
        tokens = snapshots["X"].shape[2]
        for name in ("target", "index", "steps"):
            a = snapshots[name]
            if a.size and a.min() < 0:
                raise ValueError(f"{name}: expected integers >= 0, received {a.min()}")
        if snapshots["target"].size and snapshots["target"].max() >= tokens:
            raise ValueError(
                f"target: expected token indices in 0..{tokens - 1}, received "
                f"{snapshots['target'].max()}"
            )
    except ValueError as err:
        raise RunFolderError(f"run folder: {path}: {err}") from None
    return SavedRun(model, config, snapshots)  # type: ignore[arg-type]


def _check_config(config: dict[str, Any], model: ContextWindowModel, path: Path) -> None:
    """The entries of ``config.json`` that :func:`plot_run` reads."""
    try:
        choice("task", config.get("task"), tuple(REGISTRY))
        for name in ("attention", "pool"):
            if config.get(name) != getattr(model, name):
                raise ValueError(
                    f"{name}: expected the model's {getattr(model, name)!r}, received "
                    f"{config.get(name)!r}"
                )
        check_seed(config.get("seed"))
        names = config.get("class_names")
        want = max(model.n_classes, 2)
        if not (
            isinstance(names, list)
            and len(names) == want
            and all(isinstance(n, str) for n in names)
        ):
            raise ValueError(f"class_names: expected a list of {want} names, received {names!r}")
    except ValueError as err:
        raise RunFolderError(f"run folder: {path}: {err}") from None


def _check_snapshots(members: dict[str, Member], model: ContextWindowModel, path: Path) -> None:
    """The headers of ``snapshots.npz``: ``X (p, d, c)``, ``y, target, index (p,)``,
    ``steps (t,)``, ``S (t, p, c, j)`` (and ``Z (p, d, j)`` for cross attention)."""
    missing = [k for k in SNAPSHOT_KEYS if k not in members]
    if missing:
        raise RunFolderError(f"run folder: {path} lacks the arrays {missing}")
    other = sorted(set(members) - {*SNAPSHOT_KEYS, "Z"})  # Z: the queries of cross attention
    if other:
        raise RunFolderError(f"run folder: {path} holds arrays a run never writes: {other}")
    X, S = members["X"], members["S"]
    p, c = (X.shape[0], X.shape[2]) if X.ndim == 3 else (-1, -1)
    shapes = {
        "X": (X.ndim == 3 and X.shape[1] == model.d, f"(p, d={model.d}, c)", "f"),
        "y": (members["y"].shape == (p,), f"(p={p},)", "biuf"),
        "target": (members["target"].shape == (p,), f"(p={p},)", "iu"),
        "index": (members["index"].shape == (p,), f"(p={p},)", "iu"),
        "steps": (members["steps"].ndim == 1, "(t,)", "iu"),
        "S": (
            S.ndim == 4 and S.shape[:3] == (members["steps"].shape[0], p, c),
            "(t, p, c, j) with steps (t,) and X (p, d, c)",
            "f",
        ),
        "Z": (
            "Z" not in members
            or (members["Z"].ndim == 3 and members["Z"].shape[:2] == X.shape[:2]),
            "(p, d, j)",
            "f",
        ),
    }
    for name, (ok, shape, kinds) in shapes.items():
        if name in members and (not ok or members[name].dtype.kind not in kinds):
            m = members[name]
            raise RunFolderError(
                f"run folder: {path}: {name!r} has shape {m.shape} {m.dtype}, expected {shape} "
                f"{'floats' if kinds == 'f' else 'integers' if kinds == 'iu' else 'numbers'}"
            )


def frames(saved: SavedRun) -> AttentionFrames:
    """The snapshot prompts' attention over training of a loaded run, with the words its
    figures use (the task's target, the class names, the prompts' rows in the test set)."""
    from attnlab.plots.maps import AttentionFrames

    cfg, snap = saved.config, saved.snapshots
    steps = int(snap["steps"][-1]) if snap["steps"].size else 0
    return AttentionFrames(
        S=snap["S"],
        steps=snap["steps"],
        target=snap["target"],
        y=snap["y"],
        square=VARIANTS[cfg["attention"]].per_token,
        pool=cfg["pool"],
        class_names=cfg.get("class_names"),
        # the reproduction tasks have no held-out prompts (test is train): number them plainly
        index=[int(i) for i in snap["index"]] if cfg["task"] == "iris-in-context" else None,
        target_name=REGISTRY[cfg["task"]].target_name,
        where=f"{cfg['task']}, {cfg['attention']} attention, pool {cfg['pool']}, "
        f"seed {cfg['seed']}, after {steps} steps",
    )


def plot_run(
    run_dir: str | Path, out: str | Path | None = None, animate: bool = False
) -> dict[str, Path]:
    """Reload a run folder (:func:`load`) and draw its attention maps at the end of training
    (``attention_map.png``) and the weight on the target token over training
    (``attention_over_training.png``) into ``out`` (default: the run folder); ``animate=True``
    adds the maps at every recorded step (``attention_over_training.gif``). Predictions in the
    panel titles come from the reloaded model on the snapshot prompts. A run folder that cannot
    be animated (no recorded step) raises :class:`RunFolderError` naming ``snapshots.npz``."""
    from attnlab.plots import plot_attention_maps, plot_target_weight

    saved = load(run_dir)
    f = frames(saved)
    out = Path(run_dir) if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    X, inputs = saved.snapshots["X"], saved.inputs
    paths = {
        "attention_map": plot_attention_maps(
            saved.model.attention_weights(X, **inputs),
            f.target,
            f.y,
            saved.model.predict(X, **inputs),
            out / "attention_map.png",
            attention=saved.config["attention"],
            pool=f.pool,
            class_names=f.class_names,
            index=f.index,
            note=f.where,
            target_name=f.target_name,
            square=f.square,
        )
    }
    if f.S.shape[0] > 0:
        paths["attention_over_training"] = plot_target_weight(
            f.S,
            f.steps,
            f.target,
            f.y,
            out / "attention_over_training.png",
            pool=f.pool,
            class_names=f.class_names,
            index=f.index,
            title=f"Weight on the {f.target_name} during training\n{f.where}",
            target_name=f.target_name,
        )
    if animate:
        paths["attention_animation"] = _animate(f, Path(run_dir), out)
    return paths


def animate_run(
    run_dir: str | Path, out: str | Path | None = None, fps: float = 4.0, dpi: int = 80
) -> Path:
    """The attention maps of a run folder's snapshot prompts at every recorded step, as the
    animated GIF ``attention_over_training.gif`` in ``out`` (default: the run folder); see
    :func:`attnlab.plots.animate_attention` for ``fps`` and ``dpi``. A run folder without
    recorded steps, or with a missing or garbled ``snapshots.npz``, raises
    :class:`RunFolderError` naming the file."""
    positive("fps", fps)
    dpi = positive("dpi", dpi, integer=True)
    f = frames(load(run_dir))
    out = Path(run_dir) if out is None else Path(out)
    out.mkdir(parents=True, exist_ok=True)
    return _animate(f, Path(run_dir), out, fps, dpi)


def _animate(f: AttentionFrames, run_dir: Path, out: Path, fps: float = 4.0, dpi: int = 80) -> Path:
    from attnlab.plots import animate_attention

    if f.S.shape[0] == 0 or f.S.shape[1] == 0:
        raise RunFolderError(
            f"run folder: {run_dir / 'snapshots.npz'} holds no attention snapshots "
            f"(S has shape {f.S.shape}): train with at least one evaluation to animate it"
        )
    return animate_attention(f, out / "attention_over_training.gif", fps, dpi)
