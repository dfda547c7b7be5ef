"""One run of one-layer in-context linear regression as an experiment: the options
(:data:`DEFAULTS`, :func:`resolve`), the model at the paper's init (:func:`make_model`,
:func:`paper_init`), the trainer on a stream of fresh prompts (:func:`prepare`), and
:func:`run_experiment`, which writes the run folder through the run-folder layer.
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.models.context_window import ContextWindowModel
from attnlab.studies.icl.theory import gamma, linear_predict, off_block_norm, rel_error, risk
from attnlab.tasks import (
    COVARIANCES,
    Task,
    linear_regression_in_context,
    regression_test_prompts,
)
from mlp.train.data import Dataset
from mlp.train.folders import create_run_dir, save_arrays, write_json
from mlp.train.optim import SGD, Averaged, make_schedule
from mlp.train.trainer import Trainer
from mlp.validation import check_seed, choice, known_options, positive

#: What sweeps and run ids call this experiment.
NAME = "icl"
#: Every option of one run, with its default. SGD with a step decay (``lr`` for the first half,
#: ``lr / 10`` to 80%, ``lr / 100`` after) and the mean of the iterates from ``average`` (a
#: fraction of the run) on: a constant rate levels off at 1-2% error, and a larger one is
#: unstable (the bottom row of ``W``, which multiplies the labels, is stiff). The gradients
#: are heavy-tailed (products of up to six Gaussians), and one outlier batch late in the run
#: can move the last iterate by half a percent; the mean of the iterates barely moves.
DEFAULTS: dict[str, Any] = {
    "d": 5,
    "N": 20,
    "sigma": 0.1,
    "covariance": "identity",
    "seed": 0,
    "steps": 20_000,
    "batch_size": 250,
    "lr": 0.03,
    "milestones": (0.5, 0.8),
    "factor": 0.1,
    "average": 0.8,
    "n_test": 100_000,
    "n_history": 2_000,
    "record_every": None,
}


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` completed by :data:`DEFAULTS` and checked: an unknown key or a bad value raises
    ``ValueError`` naming the option. ``record_every`` None: 200 records of the error per run;
    ``average`` in ``[0, 1)``, or ``None`` for the last iterate."""
    known_options(config, DEFAULTS)
    opts = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None or k == "average"}}
    for name in ("d", "N", "steps", "batch_size", "n_test", "n_history"):
        opts[name] = positive(name, opts[name], integer=True)
    for name in ("sigma", "lr", "factor"):
        opts[name] = float(positive(name, opts[name]))
    choice("covariance", opts["covariance"], COVARIANCES)
    opts["seed"] = check_seed(opts["seed"])
    opts["milestones"] = tuple(float(m) for m in opts["milestones"])
    make_schedule("step", 1.0, steps=opts["steps"], milestones=opts["milestones"])  # checks them
    a = opts["average"]
    if a is not None and (
        isinstance(a, bool) or not isinstance(a, (int, float)) or not 0.0 <= a < 1.0
    ):
        raise ValueError(
            f"average: expected a fraction of the run in [0, 1) or None, received {a!r}"
        )
    every = opts["record_every"] or max(1, opts["steps"] // 200)
    opts["record_every"] = positive("record_every", every, integer=True)
    return opts


def make_model(d: int, seed: int = 0) -> ContextWindowModel:
    """The linear layer on prompts of ``d`` features: ``ContextWindowModel(d + 1,
    attention="self", pool="last", head="linear", scores="linear", loss="squared")``; its
    parameters ``W (d+1, d+1)`` and ``v (d+1, 1)``."""
    d = positive("d", d, integer=True)
    return ContextWindowModel(
        d + 1,
        attention="self",
        pool="last",
        head="linear",
        n_classes=1,
        scores="linear",
        loss="squared",
        seed=seed,
    )


def paper_init(d: int, sigma: float, seed: int = 0) -> dict[str, np.ndarray]:
    """The paper's init: ``W = sigma [[Theta Theta^T, 0], [0, 0]]`` with ``Theta (d, d)``
    Gaussian (seeded by ``default_rng([seed, 2])``) scaled so that ``||Theta Theta^T||_F = 1``,
    and ``v = (0, ..., 0, sigma)``. Returns ``{"W": (d+1, d+1), "v": (d+1, 1)}``."""
    d = positive("d", d, integer=True)
    sigma = float(positive("sigma", sigma))
    theta = np.random.default_rng([check_seed(seed), 2]).standard_normal((d, d))
    TT = theta @ theta.T
    W = np.zeros((d + 1, d + 1))
    W[:d, :d] = sigma * TT / np.linalg.norm(TT)
    v = np.zeros((d + 1, 1))
    v[d, 0] = sigma
    return {"W": W, "v": v}


@dataclass
class Run:
    """A prepared run: resolved ``options``, the ``task`` (a stream of training prompts and a
    small test set for the history), the ``model``, the ``trainer``, and the error
    ``||u W11 - Gamma^-1|| / ||Gamma^-1||`` of the live iterate recorded every ``record_every``
    steps. :meth:`finish` puts the mean of the iterates into the model (when averaging)."""

    options: dict[str, Any]
    task: Task
    model: ContextWindowModel
    trainer: Trainer
    steps: list[int] = field(default_factory=list)
    errors: list[float] = field(default_factory=list)

    @property
    def Lambda(self) -> np.ndarray:
        return self.task.info["Lambda"]

    def finish(self) -> None:
        """After training: the model's parameters become the mean of the iterates."""
        opt = self.trainer.optimizer
        if isinstance(opt, Averaged):
            self.model.params.update(opt.averaged(self.model.params))

    def record(self, step: int, params: Mapping[str, np.ndarray]) -> None:
        if step % self.options["record_every"] == 0 or step == self.options["steps"]:
            self.steps.append(step)
            self.errors.append(rel_error(params, self.Lambda, self.options["N"]))


def prepare(
    config: Mapping[str, Any], checkpoint: str | Path | None = None, progress: bool | None = None
) -> Run:
    """The task, the model at the paper's init and the trainer of one run (see :func:`resolve`).

    Update ``t`` trains on ``batch_size`` fresh prompts from ``default_rng([seed, 0, t])``; the
    history's test loss is on ``n_history`` test prompts (of the live iterate); a resumed run
    is bit-identical. Call :meth:`Run.finish` after training."""
    o = resolve(config)
    task = linear_regression_in_context(
        o["d"], o["N"], o["covariance"], o["seed"], o["batch_size"], n_test=o["n_history"]
    )
    model = make_model(o["d"], o["seed"])
    model.params.update(paper_init(o["d"], o["sigma"], o["seed"]))
    run = Run(o, task, model, None)  # type: ignore[arg-type]
    opt = SGD() if o["average"] is None else Averaged(SGD(), math.floor(o["average"] * o["steps"]))
    run.trainer = Trainer(
        model,
        opt,
        task.train,
        steps=o["steps"],
        lr=make_schedule(
            "step", o["lr"], steps=o["steps"], milestones=o["milestones"], factor=o["factor"]
        ),
        test=task.test,
        eval_every=max(1, o["steps"] // 40),
        seed=o["seed"],
        checkpoint=checkpoint,
        progress=progress,
        description=f"{o['covariance']}, seed {o['seed']}",
        on_step=run.record,
    )
    run.record(0, model.params)
    return run


def evaluate_predictors(
    predictors: Mapping[str, Callable[[np.ndarray], np.ndarray]],
    Lambda: np.ndarray,
    M: int,
    seed: int,
    n: int,
    transform: Callable[[Dataset], Dataset] | None = None,
) -> dict[str, float]:
    """Mean ``(predict(E) - t)^2 / 2`` of each ``name: predict`` over the same ``n`` test
    prompts of ``seed`` with ``M`` examples (:func:`attnlab.tasks.regression_test_prompts`,
    generated once, piece by piece), after ``transform`` if given."""
    totals = dict.fromkeys(predictors, 0.0)
    for part in regression_test_prompts(n, M, Lambda, seed):
        part = transform(part) if transform is not None else part
        for name, predict in predictors.items():
            r = predict(part.X) - part.y
            totals[name] += float(r @ r) / 2
    return {name: total / n for name, total in totals.items()}


def scale_inputs(c: float) -> Callable[[Dataset], Dataset]:
    """Covariate shift: every ``x`` of a prompt scaled by ``c`` (so ``y`` and the target too)."""
    c = float(positive("c", c))
    return lambda data: Dataset(data.X * c, data.y * c)


def run_experiment(
    config: Mapping[str, Any],
    run_dir: str | Path | None = None,
    *,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train one run and write the new run folder ``run_dir`` (None: a new
    ``runs/icl-<time>-<suffix>``; a folder that holds a run is refused, see
    :func:`mlp.train.folders.create_run_dir`): ``config.json`` (the options and the model's
    constructor arguments, written before training), ``params.npz`` (the final ``W (d+1, d+1)``,
    ``v (d+1, 1)``: the mean of the iterates when averaging), ``history.csv`` (the trainer's),
    ``errors.npz`` (``step``, ``rel_error`` of the live iterate) and ``metrics.json``. Returns the
    metrics: ``rel_error``, ``u``, ``off_block_norm``, ``test_loss`` and ``closed_form_loss``
    (on the same ``n_test`` test prompts), their theory ``risk`` ``R(N)``, and ``wall_s``."""
    start = time.perf_counter()
    run = prepare(config, progress=progress)
    o = run.options
    out = create_run_dir(
        run_dir, "icl", config={**o, "model": run.model.config}, files=("errors.npz",)
    )
    with np.errstate(over="ignore", invalid="ignore"):  # divergence ends as one message
        run.trainer.run()
    run.finish()
    Lam, N, params = run.Lambda, o["N"], run.model.params
    A = np.linalg.inv(gamma(Lam, N))
    metrics = {
        "covariance": o["covariance"],
        "seed": o["seed"],
        "rel_error": rel_error(params, Lam, N),
        "u": float(params["v"][-1, 0]),
        "off_block_norm": off_block_norm(params),
        **evaluate_predictors(
            {"test_loss": run.model.predict, "closed_form_loss": lambda E: linear_predict(E, A)},
            Lam,
            N,
            o["seed"],
            o["n_test"],
        ),
        "risk": risk(A, Lam, N),
        "steps": run.trainer.step,
    }
    save_arrays(out / "params.npz", params)
    run.trainer.history.to_csv(out / "history.csv")
    save_arrays(
        out / "errors.npz", {"step": np.array(run.steps), "rel_error": np.array(run.errors)}
    )
    metrics["wall_s"] = time.perf_counter() - start
    write_json(out / "metrics.json", metrics)  # last: the run folder is complete
    return {**metrics, "run_dir": str(out)}
