"""The MLP experiment: the lecture's iris MLP trained by mini-batch SGD, from a plain config dict
to a run folder and its metrics.

:func:`run_experiment` is what the training script, the sweeps and the notebook call. A config
holds the options of :data:`DEFAULTS`. The seed sets the train/test split, the initialization and
the shuffling. The learning rate is constant or ``lr / (1 + t / decay_steps)`` with
``decay_steps`` a tenth of the run's updates (a resumed run keeps its own).
"""

from __future__ import annotations

import math
import platform
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from mlp.data import CLASS_NAMES, IrisSplit, load_iris_split
from mlp.network import MLP
from mlp.train.data import Dataset
from mlp.train.folders import create_run_dir, finish_run, resume_from, save_arrays, write_json
from mlp.train.optim import SCHEDULES, SGD, make_schedule
from mlp.train.trainer import Trainer
from mlp.validation import check_seed, choice, known_options, positive

#: Every option of an experiment, with its default. ``scale`` None is the lecture's N(0, 1)
#: init; ``decay_steps`` None is a tenth of the run's updates; ``checkpoint_every`` is in epochs.
#: What sweeps and run ids call this experiment.
NAME = "mlp"
DEFAULTS: dict[str, Any] = {
    "features": 2,
    "hidden": 10,
    "lr": 0.1,
    "schedule": "inverse",
    "batch_size": 16,
    "epochs": 200,
    "seed": 0,
    "scale": None,
    "checkpoint_every": 20,
    "decay_steps": None,
}

#: What a run imports on first use (the iris data, the figures): a sweep's worker processes
#: start with these imported.
PRELOAD = ("sklearn.datasets", "sklearn.model_selection", "mlp.plots")
#: The options a resumed experiment may change; every other one is the run folder's own.
CHANGEABLE_ON_RESUME = ("epochs",)
#: The final metrics and the history columns they are read from.
METRICS = {
    "train_accuracy": "train_accuracy",
    "test_accuracy": "test_accuracy",
    "final_loss": "train_loss",
    "test_loss": "test_loss",
}
#: The files of a run folder (``metrics.json`` is written last).
FILES = (
    "config.json",
    "checkpoint.npz",
    "history.csv",
    "params.npz",
    "curves.png",
    "decision_regions.png",
    "metrics.json",
)


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` completed by :data:`DEFAULTS` and checked: an unknown key or a bad value
    raises ``ValueError`` naming the option."""
    known_options(config, DEFAULTS)
    opts = {**DEFAULTS, **config}
    features = opts["features"]
    if (
        isinstance(features, bool)
        or not isinstance(features, (int, np.integer))
        or features not in (2, 4)
    ):
        raise ValueError(f"features: expected 2 or 4, received {opts['features']!r}")
    for name in ("hidden", "batch_size", "epochs", "checkpoint_every"):
        positive(name, opts[name], integer=True)
    opts["lr"] = float(positive("lr", opts["lr"]))  # 1 and 1.0: the same config
    choice("schedule", opts["schedule"], SCHEDULES)
    check_seed(opts["seed"])
    for name in ("scale", "decay_steps"):
        if opts[name] is not None:
            opts[name] = float(positive(name, opts[name]))
    return opts


@dataclass
class Experiment:
    """A prepared experiment: resolved ``options``, the iris ``split``, the ``model`` and the
    ``trainer``."""

    options: dict[str, Any]
    split: IrisSplit
    model: MLP
    trainer: Trainer

    @property
    def decay_steps(self) -> float | None:
        if self.options["schedule"] != "inverse":
            return None
        return self.options["decay_steps"] or self.trainer.steps / 10

    def metrics(self) -> dict[str, Any]:
        """Final train and test accuracy and loss (at the last evaluation; None before the
        first), the seed and the steps done."""
        last = self.trainer.history.last
        return {
            **{name: last.get(column) for name, column in METRICS.items()},
            "seed": self.options["seed"],
            "steps": self.trainer.step,
        }

    def config(self) -> dict[str, Any]:
        """What ``config.json`` holds: the options, the derived sizes and the versions."""
        import matplotlib  # for their versions only: not at import (scripts start fast)
        import sklearn

        return {
            **self.options,
            "decay_steps": self.decay_steps,
            "optimizer": "sgd",
            "steps": self.trainer.steps,
            "steps_per_epoch": self.trainer.steps_per_epoch,
            "n_train": len(self.split.y_train),
            "n_test": len(self.split.y_test),
            "feature_names": list(self.split.feature_names),
            "versions": {
                "python": platform.python_version(),
                "numpy": np.__version__,
                "scikit-learn": sklearn.__version__,
                "matplotlib": matplotlib.__version__,
            },
        }


def prepare(
    config: Mapping[str, Any],
    checkpoint: str | Path | None = None,
    progress: bool | None = None,
) -> Experiment:
    """The split, model and trainer of an experiment (raises ``ValueError`` on bad options)."""
    opts = resolve(config)
    seed = opts["seed"]
    split = load_iris_split(features=opts["features"], seed=seed)
    model = MLP(opts["features"], opts["hidden"], len(CLASS_NAMES), seed=seed, scale=opts["scale"])
    train = Dataset(split.X_train, split.y_train)
    if opts["batch_size"] > len(train):
        raise ValueError(
            f"batch_size: expected at most the {len(train)} training samples, "
            f"received {opts['batch_size']}"
        )
    steps_per_epoch = math.ceil(len(train) / opts["batch_size"])
    steps = opts["epochs"] * steps_per_epoch
    decay = opts["decay_steps"] or steps / 10
    trainer = Trainer(
        model,
        SGD(),
        train,
        steps=steps,
        lr=make_schedule(opts["schedule"], opts["lr"], decay_steps=decay, steps=steps),
        batch_size=opts["batch_size"],
        test=Dataset(split.X_test, split.y_test),
        eval_every=steps_per_epoch,
        seed=seed,
        checkpoint=checkpoint,
        checkpoint_every=opts["checkpoint_every"] * steps_per_epoch,
        progress=progress,
        description=f"seed {seed}",
    )
    return Experiment(opts, split, model, trainer)


def run_experiment(
    config: Mapping[str, Any],
    run_dir: str | Path | None = None,
    *,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train the experiment of ``config`` into a new run folder: ``run_dir``, or (None) a new
    ``runs/mlp-<time>-<suffix>``. Returns what ``metrics.json`` holds, and ``run_dir``.

    The options are checked before the folder is created; a folder that already holds a run is
    refused (:func:`mlp.train.folders.create_run_dir`). ``config.json`` is written before
    training (so a killed run can be resumed), then :func:`finish` writes ``checkpoint.npz``,
    ``history.csv`` (a row per epoch), ``params.npz``, ``curves.png``,
    ``decision_regions.png`` and, last, ``metrics.json``. Many seeds: the ``mlp`` experiment of
    :mod:`mlp.train.sweep`."""
    experiment = prepare(config, progress=progress)
    run_dir = create_run_dir(run_dir, "mlp", config=experiment.config(), files=FILES)
    experiment.trainer.checkpoint = run_dir / "checkpoint.npz"
    return finish(experiment, run_dir)


def resume_experiment(
    run_dir: str | Path, epochs: int | None = None, progress: bool | None = None
) -> Experiment:
    """Rebuild the experiment of ``run_dir`` with its own options (``config.json``; ``epochs``:
    the new total) and load its last checkpoint; :func:`finish` then trains it to the end
    (or only writes the files, for a run interrupted after training), bit-identical to a run
    never interrupted."""
    return resume_from(run_dir, DEFAULTS, prepare, {"epochs": epochs}, progress, check=resolve)


def finish(experiment: Experiment, run_dir: str | Path) -> dict[str, Any]:
    """Train ``experiment`` to its last step, write its run folder and draw its figures, then
    ``metrics.json`` (its metrics and the ``stop_reason``:
    :func:`mlp.train.folders.finish_run`). Returns what ``metrics.json`` holds, and
    ``run_dir``."""
    run_dir = Path(run_dir)

    def write_files() -> None:
        from mlp.plots import plot_curves, plot_decision_regions

        history = experiment.trainer.history
        write_json(run_dir / "config.json", experiment.config())
        history.to_csv(run_dir / "history.csv")
        save_arrays(run_dir / "params.npz", experiment.model.params)
        opts, split = experiment.options, experiment.split
        plot_curves(
            history,
            run_dir / "curves.png",
            title=f"iris MLP, {opts['features']} features, {opts['hidden']} hidden units, "
            f"seed {opts['seed']}",
        )
        plot_decision_regions(
            experiment.model.params,
            split.X_train,
            split.y_train,
            split.X_test,
            split.y_test,
            run_dir / "decision_regions.png",
            feature_names=split.feature_names,
        )

    return finish_run(run_dir, experiment.trainer, write_files, experiment.metrics, FILES)
