"""The attention experiment: one configured training of the context-window model on a prompt
task, from a plain config dict to a run folder and its metrics.

:func:`run_experiment` is what the training script, the sweeps and the notebook call. A config
holds the options of :data:`DEFAULTS` (``None``: the task's default, see :func:`resolve`).
:func:`prepare` builds the task, the :class:`ContextWindowModel` and the one
:class:`mlp.train.Trainer`, with a few fixed test prompts as snapshots;
:meth:`Experiment.save` writes the run folder; :func:`resume_experiment` continues one from its
checkpoint; :func:`load` rebuilds the trained model and its snapshots from a run folder,
checking every file against what it must hold. The run-folder rules (one run per folder,
``metrics.json`` last, atomic writes, no links) are those of :mod:`mlp.train.folders`.
"""

from __future__ import annotations

import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.blocks.memory import check_fits
from attnlab.blocks.queries import VARIANTS
from attnlab.models.context_window import HEADS, POOLS, ContextWindowModel
from attnlab.studies.attention.runs import SavedRun, animate_run, load, plot_run
from attnlab.tasks import REGISTRY, Task, fixed_head, make_task
from mlp.data import CLASS_NAMES
from mlp.train.data import Dataset
from mlp.train.folders import create_run_dir, finish_run, resume_from, save_arrays, write_json
from mlp.train.optim import OPTIMIZERS, make_optimizer
from mlp.train.trainer import History, Trainer
from mlp.validation import check_seed, choice, known_options, positive

__all__ = [
    "DEFAULTS",
    "NAME",
    "PRELOAD",
    "Experiment",
    "SavedRun",
    "animate_run",
    "finish",
    "load",
    "plot_run",
    "prepare",
    "resolve",
    "resume_experiment",
    "run_experiment",
]

#: What sweeps and run ids call this experiment.
NAME = "attention"
#: Every option of an experiment, with its default (``None``: decided per task by
#: :func:`resolve`).
DEFAULTS = {
    "task": "iris-in-context",
    "attention": None,
    "pool": None,
    "head": None,
    "features": None,
    "context": None,
    "optimizer": None,
    "lr": None,
    "steps": None,
    "batch_size": None,
    "seed": 0,
    "eval_every": None,
    "checkpoint_every": None,
    "snapshots": 6,
}

#: Defaults of the demo task, one set for prompt, self and kq attention, chosen with
#: a sweep over seeds (mean over seeds 0-4: with 4 features test accuracy
#: >= 0.93 and attention on the marked flower >= 0.9, with 2 features accuracy >= 0.72).
#: ``steps`` depends on the features: see :data:`IRIS_STEPS`.
IRIS_DEFAULTS = {
    "attention": "self",
    "pool": "last",
    "head": "mlp",
    "features": 4,
    "context": 16,
    "optimizer": "sgd",
    "lr": 0.3,
    "steps": None,
    "batch_size": 64,
}
#: Default steps per number of features. With 4 features the attention needs the longer run to
#: leave the detours it takes on some seeds (the weight on the marked flower keeps rising);
#: with 2 (sepal) features two classes overlap, the weight on the marked flower is up by 2000
#: steps, and longer training only overfits the MLP head (test accuracy falls).
IRIS_STEPS = {4: 6000, 2: 2000}


#: What a run imports on first use (the iris data, the figures): a sweep's worker processes
#: start with these imported.
PRELOAD = ("sklearn.datasets", "sklearn.model_selection", "attnlab.plots")
#: The options a resumed experiment may change; every other one is the run folder's own.
CHANGEABLE_ON_RESUME = ("steps",)
#: The final metrics and the history columns they are read from.
METRICS = {
    "test_accuracy": "test_accuracy",
    "attention_on_target": "test_attention_on_target",
    "train_accuracy": "train_accuracy",
    "train_attention_on_target": "train_attention_on_target",
    "final_loss": "train_loss",
    "test_loss": "test_loss",
}
#: The files of a run folder (``metrics.json`` is written last).
FILES = (
    "config.json",
    "checkpoint.npz",
    "history.csv",
    "params.npz",
    "snapshots.npz",
    "curves.png",
    "attention_map.png",
    "attention_over_training.png",
    "metrics.json",
)


def prompt_tasks() -> tuple[str, ...]:
    """The tasks of this experiment: those of the registry (as it is now) with a fixed set of
    real-valued prompts."""
    return tuple(name for name, spec in REGISTRY.items() if not spec.stream)


def default_options(task: str = "iris-in-context", features: int | None = None) -> dict[str, Any]:
    """Every option's default for ``task`` (and, for iris-in-context, ``features``).

    ``batch_size`` None is full batch; ``eval_every`` None is 30 evaluations per run;
    ``checkpoint_every`` None is at every evaluation.
    """
    choice("task", task, prompt_tasks())
    opts = dict(DEFAULTS, task=task)
    if task == "iris-in-context":
        opts.update(IRIS_DEFAULTS)
        if features is not None:
            opts["features"] = features
        opts["steps"] = IRIS_STEPS.get(opts["features"], IRIS_STEPS[4])
    else:
        opts.update(REGISTRY[task].settings)  # the published settings, with the fixed head
    return opts


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """The options of ``config`` (``None`` or absent: the default) completed by
    :func:`default_options` and checked: an unknown key or a bad value raises ``ValueError``
    naming the option."""
    known_options(config, DEFAULTS)
    task = DEFAULTS["task"] if config.get("task") is None else config["task"]
    features = config.get("features")
    if features is not None and (
        isinstance(features, bool) or not isinstance(features, (int, np.integer))
    ):
        raise ValueError(f"features: expected 2 or 4, received {features!r}")
    opts = default_options(task, features)
    if task != "iris-in-context" and config.get("features") is not None:
        raise ValueError(
            f"features: only the iris-in-context task has a choice of features, the task is "
            f"{task!r} (received features={config['features']})"
        )
    opts.update({k: v for k, v in config.items() if v is not None})
    choice("attention", opts["attention"], tuple(VARIANTS))
    choice("pool", opts["pool"], POOLS)
    choice("head", opts["head"], HEADS)
    choice("optimizer", opts["optimizer"], OPTIMIZERS)
    if task == "iris-in-context" and opts["features"] not in (2, 4):
        raise ValueError(f"features: expected 2 or 4, received {opts['features']!r}")
    for name in ("context", "steps", "snapshots"):
        positive(name, opts[name], integer=True)
    for name in ("batch_size", "eval_every", "checkpoint_every"):
        if opts[name] is not None:
            positive(name, opts[name], integer=True)
    opts["lr"] = float(positive("lr", opts["lr"]))  # 1 and 1.0: the same config
    check_seed(opts["seed"])
    if opts["eval_every"] is None:
        opts["eval_every"] = max(1, opts["steps"] // 30)
    if opts["checkpoint_every"] is None:
        opts["checkpoint_every"] = opts["eval_every"]
    return opts


@dataclass
class Experiment:
    """A prepared experiment: resolved ``options``, the ``task``, the ``model``, the ``trainer``
    and the ``snapshot`` prompts (``index``: their rows in ``task.test``)."""

    options: dict[str, Any]
    task: Task
    model: ContextWindowModel
    trainer: Trainer
    snapshot: Dataset
    index: np.ndarray

    @property
    def class_names(self) -> list[str]:
        """Names of the label values: iris species, or ``-1``/``+1`` for binary tasks."""
        return list(CLASS_NAMES) if self.task.n_classes == 3 else ["-1", "+1"]

    def metrics(self) -> dict[str, Any]:
        """Final numbers (at the last evaluation; None before the first): test/train accuracy,
        attention on the target token (test prompts), final training loss, test loss, the task
        and the steps done."""
        last = self.trainer.history.last
        return {
            **{name: last.get(column) for name, column in METRICS.items()},
            "task": self.options["task"],
            "steps": self.trainer.step,
        }

    def config(self) -> dict[str, Any]:
        """What ``config.json`` holds: the resolved options (under their own names, so
        :func:`resume_experiment` can rebuild the experiment), the model's constructor
        arguments, the trainable keys, the data sizes and the library versions."""
        import matplotlib  # for its version only: not at import (scripts start fast)

        return {
            **self.options,
            "model": self.model.config,
            "trainable": self.trainer.trainable,
            "n_train": len(self.task.train),
            "n_test": len(self.task.test),
            "d": self.task.d,
            "class_names": self.class_names,
            "feature_names": list(self.task.info.get("feature_names", [])),
            "versions": {
                "python": platform.python_version(),
                "numpy": np.__version__,
                "matplotlib": matplotlib.__version__,
            },
        }

    def save(self, run_dir: str | Path) -> dict[str, Path]:
        """Write ``config.json``, ``history.csv``, ``params.npz`` and ``snapshots.npz`` into
        ``run_dir``; returns the paths by name.

        ``snapshots.npz`` holds the snapshot prompts ``X (p, d, c)``, ``y (p,)``,
        ``target (p,)``, ``index (p,)`` (rows of the test set), the evaluation ``steps (t,)``
        and the attention weights ``S (t, p, c, j)`` at those steps (and ``Z (p, d, j)`` for
        cross attention).
        """
        out = Path(run_dir)
        history: History = self.trainer.history
        snap = self.snapshot
        S = (
            np.stack(history.snapshots)
            if history.snapshots
            else np.zeros((0, len(snap), *snap.X.shape[2:], 1))
        )
        return {
            "config": write_json(out / "config.json", self.config()),
            "history": history.to_csv(out / "history.csv"),
            "params": save_arrays(out / "params.npz", self.model.params),
            "snapshots": save_arrays(
                out / "snapshots.npz",
                {
                    "X": snap.X,
                    "y": snap.y,
                    "target": snap.inputs.get("target", np.zeros(0, np.int64)),
                    "index": self.index,
                    "steps": np.asarray(history.snapshot_steps, dtype=np.int64),
                    "S": S,
                    **({"Z": snap.inputs["Z"]} if "Z" in snap.inputs else {}),
                },
            ),
        }


def _snapshot_index(task: Task, count: int) -> np.ndarray:
    """The first test prompts, taking the classes in turn (``count`` or all, if fewer)."""
    y = task.test.y
    per_class = [np.flatnonzero(y == c) for c in np.unique(y)]
    picked: list[int] = []
    for r in range(max(len(p) for p in per_class)):
        picked += [int(p[r]) for p in per_class if r < len(p)]
    return np.array(sorted(picked[:count]), dtype=np.int64)


def prepare(
    config: Mapping[str, Any],
    checkpoint: str | Path | None = None,
    progress: bool | None = None,
) -> Experiment:
    """Build the task, model and trainer of an experiment from ``config`` (see :func:`resolve`).

    For ``max-margin`` and ``prompt-norm`` with the ``linear`` head, the head is the task's
    fixed vector ``v`` and only the attention's parameters are trained.
    """
    opts = resolve(config)
    name, seed = opts["task"], opts["seed"]
    # before the task's prompts are made (they grow with the context too): the attention
    # weights S (n, c, j) of one step, which need no data, must fit; the model checks the rest
    c, batch = opts["context"], opts["batch_size"] or 1
    j = c if VARIANTS[opts["attention"]].per_token else 1
    check_fits(
        {"the attention weights S (n, c, j)": batch * c * j * 8},
        f"a training step on a batch of {batch} prompts of c={c} tokens (j={j}, float64)",
    )
    if name == "iris-in-context":
        task = make_task(name, context=opts["context"], features=opts["features"], seed=seed)
    else:
        task = make_task(name, context=opts["context"], seed=seed)
    model = ContextWindowModel(
        task.d,
        attention=opts["attention"],
        pool=opts["pool"],
        head=opts["head"],
        n_classes=task.n_classes,
        seed=seed,
    )
    trainable = fixed_head(task, model)
    index = _snapshot_index(task, opts["snapshots"])
    snapshot = task.test.subset(index)
    batch_size = opts["batch_size"]
    if batch_size is not None and batch_size > len(task.train):
        raise ValueError(
            f"batch_size: expected at most the {len(task.train)} training prompts of task "
            f"{name!r}, received {batch_size}"
        )
    # before any folder or array exists: a step and an evaluation chunk must fit in memory
    j = task.train.Z.shape[2] if "Z" in task.train.inputs else None
    model.check_fits(batch_size or len(task.train), task.train.X.shape[2], True, j)
    trainer = Trainer(
        model,
        make_optimizer(opts["optimizer"]),
        task.train,
        steps=opts["steps"],
        lr=opts["lr"],
        batch_size=batch_size,
        test=task.test,
        eval_every=opts["eval_every"],
        seed=seed,
        trainable=trainable,
        snapshot=snapshot,
        checkpoint=checkpoint,
        checkpoint_every=opts["checkpoint_every"],
        progress=progress,
        description=f"{name}, {opts['attention']} attention",
    )
    return Experiment(opts, task, model, trainer, snapshot, index)


def resume_experiment(
    run_dir: str | Path, steps: int | None = None, progress: bool | None = None
) -> Experiment:
    """Rebuild the experiment of ``run_dir`` with its own options (``config.json``) and load its
    last checkpoint (``checkpoint.npz``: parameters, optimizer state, step, history, snapshots).

    ``steps`` is the new total number of updates (None: the run's own); :func:`finish` then
    continues from the checkpoint's step (or only writes the files, for a run interrupted
    after training), and ends bit-identical to a run never interrupted. A missing, garbled or
    linked file raises :class:`mlp.train.folders.RunFolderError` or
    :class:`mlp.train.checkpoint.CheckpointError` (both ``ValueError``) naming it.
    """
    return resume_from(run_dir, DEFAULTS, prepare, {"steps": steps}, progress, check=resolve)


def run_experiment(
    config: Mapping[str, Any],
    run_dir: str | Path | None = None,
    *,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train the experiment of ``config`` into a new run folder: ``run_dir``, or (None) a new
    ``runs/attention-<time>-<suffix>``. Returns what ``metrics.json`` holds, and ``run_dir``.

    The options and the task are checked before the folder is created; a folder that already
    holds a run is refused (:func:`mlp.train.folders.create_run_dir`). ``config.json`` is
    written before training, so a run killed on the way can be resumed
    (:func:`resume_experiment`, then :func:`finish`); :func:`finish` writes the rest.
    """
    experiment = prepare(config, progress=progress)
    run_dir = create_run_dir(run_dir, "attention", config=experiment.config(), files=FILES)
    experiment.trainer.checkpoint = run_dir / "checkpoint.npz"
    return finish(experiment, run_dir)


def finish(experiment: Experiment, run_dir: str | Path) -> dict[str, Any]:
    """Train ``experiment`` to its last step and complete ``run_dir``: the files of
    :meth:`Experiment.save`, ``checkpoint.npz``, the figures ``curves.png``,
    ``attention_map.png`` and ``attention_over_training.png`` (drawn from the files, read back
    with :func:`load`), then ``metrics.json`` with the ``stop_reason``
    (:func:`mlp.train.folders.finish_run`). Returns what ``metrics.json`` holds, and
    ``run_dir``."""
    run_dir = Path(run_dir)

    def write_files() -> None:
        from attnlab.plots import plot_attention_curves

        experiment.save(run_dir)
        opts = experiment.options
        plot_attention_curves(
            experiment.trainer.history,
            run_dir / "curves.png",
            title=f"{opts['task']}, {opts['attention']} attention, pool {opts['pool']}, "
            f"{opts['head']} head, {opts['optimizer']} lr {opts['lr']:g}, seed {opts['seed']}",
            context=opts["context"],
            target_name=REGISTRY[opts["task"]].target_name,
        )
        plot_run(run_dir, run_dir)

    return finish_run(run_dir, experiment.trainer, write_files, experiment.metrics, FILES)
