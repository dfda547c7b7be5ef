"""One run of the induction-head study: the options (:data:`DEFAULTS`, :func:`resolve`), the two
models (:func:`make_model`: the minimal model, or the two-layer attention-only stack at Edelman
et al.'s initialization), the optimizer of each, the probes recorded during training, and
:func:`run_experiment`, which writes the run folder through the run-folder layer.

Training data: ``markov-in-context`` (:func:`attnlab.tasks.markov_in_context`), a fresh batch of
in-context Markov chains at every update, ``k = states`` states, ``context`` tokens, the loss at
every position. Every ``record_every`` updates (and at step 0) the history gets, besides the
trainer's ``test_loss`` and ``test_accuracy`` on ``n_curve`` test sequences, the last-token
``test_kl`` on the same sequences (:func:`attnlab.induction.last_token_kl`); the stack also gets
``prev_token_score`` (layer 1 on ``n_probe`` test sequences) and ``induction_score`` (layer 2
on ``n_probe`` sequences of repeated random tokens), the minimal model ``v_margin``
(``v[1] - max_{o != 1} v[o]``, also checked after every update for ``jump_step``). At the end
the same metric and probes are measured on ``n_test`` sequences each.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.induction import (
    baselines,
    induction_score,
    kl_divergence,
    previous_token_score,
    true_next,
)
from attnlab.models.stack import AttentionStack
from attnlab.studies.induction.minimal import MinimalModel
from attnlab.studies.induction.transformer import FactoredValues, decayed, make_stack
from attnlab.tasks import Task, markov_in_context, repeated_tokens
from mlp.numerics import cross_entropy_unchecked, softmax
from mlp.train.data import Dataset
from mlp.train.folders import create_run_dir, finish_run, save_arrays
from mlp.train.optim import SGD, AdamW
from mlp.train.trainer import Trainer
from mlp.validation import check_seed, choice, known_options, positive

#: The models of a run: the minimal model, the stack with factored values, or the stack.
Model = MinimalModel | FactoredValues | AttentionStack
#: What sweeps and run ids call this experiment.
NAME = "induction"
#: The models and the stack's two position forms.
MODELS = ("minimal", "stack")
POSITIONS = ("relative-key", "relative")
#: The stack's value path: the authors' two matrices per layer, or the stack's one.
VALUES = ("factored", "single")
#: Thresholds of the summary numbers: the jump of the minimal model (``v[1]`` above every other
#: offset's score by this much), the drop of the stack's KL below this, and the plateau's steps.
JUMP_MARGIN = 2.0
DROP_KL = 0.05
PLATEAU = (200, 500)
#: The modules a run imports on first use (a sweep's workers start with them imported).
PRELOAD = ("attnlab.models.stack", "attnlab.studies.induction.minimal", "attnlab.tasks")

#: Every option of one run; ``None``: the model's default (:data:`MODEL_DEFAULTS`).
DEFAULTS: dict[str, Any] = {
    "model": "stack",
    "positions": "relative-key",
    "seed": 0,
    "states": 2,
    "context": 100,
    "d": 16,
    "values": "factored",
    "steps": None,
    "batch_size": None,
    "lr": None,
    "v_lr": None,
    "w_init": None,
    "init_std": None,
    "weight_decay": None,
    "clip_norm": None,
    "record_every": None,
    "n_curve": 500,
    "n_probe": 64,
    "n_test": 2000,
    "snapshot_every": None,
}

#: Each model's defaults for the options left at None, and None for the options it does not
#: have. The minimal model: the authors' SGD, ``W`` at rate ``lr`` from ``w_init``, ``v`` at
#: rate ``v_lr`` from 0 (their code: ``v_lr`` 1.0; 3.0 here, see docs/induction.md). The
#: stack: AdamW (betas 0.9, 0.95, eps 1e-8) with decoupled weight decay on the matrices and
#: ``clip_norm`` 0 (no clipping, as the authors' code runs; see docs/induction.md).
MODEL_DEFAULTS: dict[str, dict[str, Any]] = {
    "minimal": {
        "positions": None,
        "d": None,
        "values": None,
        "steps": 200,
        "batch_size": 128,
        "lr": 0.01,
        "v_lr": 3.0,
        "w_init": 0.01,
        "init_std": None,
        "weight_decay": None,
        "clip_norm": None,
        "record_every": 5,
        "snapshot_every": None,
    },
    "stack": {
        "steps": 2000,
        "batch_size": 64,
        "lr": 5e-4,
        "v_lr": None,
        "w_init": None,
        "init_std": 0.02,
        "weight_decay": 0.1,
        "clip_norm": 0.0,
        "record_every": 20,
    },
}


def _number(name: str, value: Any, low: float = 0.0) -> float:
    """``value`` as a finite float ``>= low``, else ``ValueError`` naming the option."""
    if (
        isinstance(value, bool)
        or not isinstance(value, (int, float, np.integer, np.floating))
        or not np.isfinite(value)
        or value < low
    ):
        raise ValueError(f"{name}: expected a finite number >= {low:g}, received {value!r}")
    return float(value)


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` completed by :data:`DEFAULTS` and the model's :data:`MODEL_DEFAULTS`, and
    checked: an unknown key or a bad value raises ``ValueError`` naming the option. The options
    a model does not have (None in its :data:`MODEL_DEFAULTS`) resolve to None whatever was
    given, so that one grid over ``model`` and ``positions`` runs the minimal model once per
    seed, and fixed options of the other model apply where they mean something."""
    known_options(config, DEFAULTS)
    model = choice("model", config.get("model", DEFAULTS["model"]), MODELS)
    opts = {**DEFAULTS, **{k: v for k, v in config.items() if v is not None}}
    for k, v in MODEL_DEFAULTS[model].items():
        if v is None or config.get(k) is None:
            opts[k] = v
    opts["seed"] = check_seed(opts["seed"])
    for name in ("steps", "batch_size", "record_every", "n_curve", "n_probe", "n_test"):
        opts[name] = positive(name, opts[name], integer=True)
    opts["lr"] = float(positive("lr", opts["lr"]))
    if positive("states", opts["states"], integer=True) < 2:
        raise ValueError(f"states: expected at least 2 states, received {opts['states']}")
    context = positive("context", opts["context"], integer=True)
    if context < 4 or context % 2:
        raise ValueError(
            f"context: expected an even number of tokens >= 4 (the induction probe repeats "
            f"half a sequence), received {context}"
        )
    if opts["n_curve"] > opts["n_test"]:
        raise ValueError(
            f"n_curve: expected at most n_test={opts['n_test']} sequences (the curve's are the "
            f"first of the test set), received {opts['n_curve']}"
        )
    if model == "stack":
        choice("positions", opts["positions"], POSITIONS)
        choice("values", opts["values"], VALUES)
        opts["d"] = positive("d", opts["d"], integer=True)
        opts["init_std"] = float(positive("init_std", opts["init_std"]))
        opts["weight_decay"] = _number("weight_decay", opts["weight_decay"])
        opts["clip_norm"] = _number("clip_norm", opts["clip_norm"])
        every = opts["snapshot_every"]
        if (
            every is not None
            and positive("snapshot_every", every, integer=True) % opts["record_every"]
        ):
            raise ValueError(
                f"snapshot_every: expected a multiple of record_every={opts['record_every']}, "
                f"received {every}"
            )
    else:
        opts["v_lr"] = float(positive("v_lr", opts["v_lr"]))
        opts["w_init"] = _number("w_init", opts["w_init"], low=-np.inf)
    return opts


def make_model(o: Mapping[str, Any]) -> Model:
    """The model of resolved options ``o``."""
    if o["model"] == "minimal":
        return MinimalModel(o["states"], o["context"], o["w_init"])
    return make_stack(o["d"], o["states"], o["context"], o["positions"], o["seed"],
                      o["init_std"], o["values"])  # fmt: skip


def make_optimizer(o: Mapping[str, Any], model: Model) -> SGD | AdamW:
    """SGD with ``v`` at ``v_lr`` (the rate given to the trainer is ``lr``, the rate of ``W``)
    for the minimal model; AdamW (0.9, 0.95, eps 1e-8) with ``weight_decay`` on
    :func:`decayed` and, for ``clip_norm > 0``, gradient-norm clipping at it, for the stack."""
    if o["model"] == "minimal":
        return SGD(lr_factors={"v": o["v_lr"] / o["lr"]})
    return AdamW(0.9, 0.95, 1e-8, o["weight_decay"], decay=decayed(model),
                 clip_norm=o["clip_norm"] or None)  # fmt: skip


def predict_last(model: Model, X: np.ndarray, chunk: int = 250) -> np.ndarray:
    """``(n, k)``: the model's distribution of the token after the last one of each sequence
    ``X (n, c)``, computed ``chunk`` sequences at a time."""
    parts = [model.forward(X[i : i + chunk])[:, :, -1] for i in range(0, len(X), chunk)]
    return softmax(np.concatenate(parts), axis=1)


class Probed:
    """A model with the engine's contract whose ``metrics`` hook adds ``kl``, the last-token
    KL to the true transition row given as the input ``transitions (n, k, k)``: the trainer's
    test set carries it, so one forward pass gives ``test_loss``, ``test_accuracy`` and
    ``test_kl``. ``params`` is the wrapped model's dict itself."""

    def __init__(self, model: Model) -> None:
        self.model = model
        self.params = model.params

    def loss_and_grads(self, X: np.ndarray, y: np.ndarray, **inputs: Any) -> tuple[float, dict]:
        return self.model.loss_and_grads(X, y)

    def metrics(self, X: np.ndarray, y: np.ndarray, **inputs: Any) -> dict[str, float]:
        z = self.model.forward(X)  # (n, k, c)
        n, k, c = z.shape
        loss, _ = cross_entropy_unchecked(z.transpose(0, 2, 1).reshape(n * c, k), y.reshape(-1))
        row = {"loss": loss, "accuracy": float(np.mean(np.argmax(z, axis=1) == y))}
        if "transitions" in inputs:
            q = softmax(z[:, :, -1], axis=1)
            row["kl"] = float(np.mean(kl_divergence(true_next(inputs["transitions"], X), q)))
        return row

    def snapshot(self, X: np.ndarray, **inputs: Any) -> np.ndarray:
        return np.stack(self.model.attention_weights(X), axis=1).astype(np.float32)


def probe_scores(model: Model, markov: np.ndarray, repeated: np.ndarray) -> dict[str, float]:
    """``prev_token_score`` of layer 1 on the sequences ``markov (n, c)`` and (the stack only)
    ``induction_score`` of layer 2 on ``repeated (n, c)``, ``[r_1..r_m, r_1..r_m]``, averaged
    over pieces of 250 sequences (:mod:`attnlab.induction`)."""

    def mean(data: np.ndarray, score: Callable[[np.ndarray], float]) -> float:
        parts = [data[i : i + 250] for i in range(0, len(data), 250)]
        return float(sum(score(p) * len(p) for p in parts) / len(data))

    out = {"prev_token_score": mean(markov, lambda x: previous_token_score(
        model.attention_weights(x)[0])[0])}  # fmt: skip
    if not isinstance(model, MinimalModel):
        out["induction_score"] = mean(
            repeated, lambda x: induction_score(model.attention_weights(x)[1], x)[0]
        )
    return out


@dataclass
class Run:
    """A prepared run: resolved ``options``, the Markov ``task`` and the ``repeated`` probe
    sequences, the ``model``, the ``trainer``, the probes recorded by step (``probes``), and for
    the minimal model the margin ``v[1] - max_{o != 1} v[o]`` after every update (``margins``,
    index = step)."""

    options: dict[str, Any]
    task: Task
    repeated: Dataset
    model: Model
    trainer: Trainer
    probes: dict[int, dict[str, float]] = field(default_factory=dict)
    margins: list[float] = field(default_factory=list)

    def record(self, step: int, params: Mapping[str, np.ndarray]) -> None:
        """The trainer's ``on_step``: the margin after every update, the probes every
        ``record_every`` updates and at the end."""
        o = self.options
        if isinstance(self.model, MinimalModel):
            self.margins.append(self.model.jump_margin())
        if step % o["record_every"] == 0 or step == o["steps"]:
            n = o["n_probe"]
            row = probe_scores(self.model, self.task.test.X[:n], self.repeated.X[:n])
            if isinstance(self.model, MinimalModel):
                row["v_margin"] = self.margins[-1]
            self.probes[step] = row


def prepare(config: Mapping[str, Any], progress: bool | None = None) -> Run:
    """The task, the model, the optimizer and the trainer of one run (see :func:`resolve`);
    the probes at step 0 are recorded here."""
    o = resolve(config)
    task = markov_in_context(o["states"], o["context"], o["seed"], o["batch_size"], o["n_test"])
    repeated = repeated_tokens(o["states"], o["context"], o["seed"], 1, o["n_test"]).test
    model = make_model(o)
    P = task.info["transitions"]
    curve = Dataset(task.test.X[: o["n_curve"]], task.test.y[: o["n_curve"]],
                    transitions=P[: o["n_curve"]])  # fmt: skip
    snapshot = task.test.subset(np.arange(1)) if o["snapshot_every"] else None
    where = o["model"] + (f", {o['positions']}" if o["positions"] else "")
    run = Run(o, task, repeated, model, None)  # type: ignore[arg-type]
    run.trainer = Trainer(
        Probed(model), make_optimizer(o, model), task.train, steps=o["steps"], lr=o["lr"],
        test=curve, eval_every=o["record_every"], eval_batch_size=250, seed=o["seed"],
        snapshot=snapshot, progress=progress, description=f"{where}, seed {o['seed']}",
        on_step=run.record,
    )  # fmt: skip
    run.record(0, model.params)
    return run


def summarize(steps: np.ndarray, kl: np.ndarray, margins: np.ndarray | None) -> dict[str, Any]:
    """The numbers of a KL curve ``kl`` recorded at ``steps``: ``plateau_kl`` (the mean over
    the steps of :data:`PLATEAU`, None if none is recorded), ``drop_step`` (the first recorded
    step with KL below :data:`DROP_KL`, None if none) and, given the minimal model's margins
    after every update, ``jump_step`` (the first step whose margin reaches
    :data:`JUMP_MARGIN`, None if none)."""
    on = (steps >= PLATEAU[0]) & (steps <= PLATEAU[1])
    below = np.flatnonzero(kl < DROP_KL)
    out = {
        "plateau_kl": float(np.mean(kl[on])) if on.any() else None,
        "drop_step": int(steps[below[0]]) if below.size else None,
    }
    if margins is not None:
        hit = np.flatnonzero(margins >= JUMP_MARGIN)
        out["jump_step"] = int(hit[0]) if hit.size else None
    return out


def run_experiment(
    config: Mapping[str, Any], run_dir: str | Path | None = None, *, progress: bool | None = None
) -> dict[str, Any]:
    """Train one run and write the new run folder ``run_dir`` (None: a new
    ``runs/induction-<time>-<suffix>``; a folder holding a run is refused): ``config.json``
    (the options and ``model_config``, before training), ``params.npz`` (the stack's keys; for
    the minimal model its layers' parameters under the stack's keys, see
    :meth:`MinimalModel.layer_params`), ``history.csv`` (every ``record_every`` steps:
    the trainer's columns, ``test_kl`` and the probes), ``curves.npz`` (``step``, ``kl`` and
    the probes of the history; the minimal model's ``margin`` after every update), with
    ``snapshot_every`` also ``snapshots.npz`` (``S (t, l, h, c, c)`` float16, both layers'
    attention on the first test sequence every ``snapshot_every`` steps and at the end,
    ``steps (t,)``, the sequence's ``tokens (c,)``), then ``metrics.json``.

    Returns the metrics: ``final_kl`` (on ``n_test`` sequences), the probes at the end (on
    ``n_test`` sequences each), :func:`summarize`'s numbers, the ``baselines`` on the test
    sequences, ``test_loss``, ``steps``, ``wall_s`` and ``cpu_s`` (the process's CPU time: with
    other work on the machine, the wall time says less)."""
    start, cpu = time.perf_counter(), time.process_time()
    run = prepare(config, progress=progress)
    o, model, trainer = run.options, run.model, run.trainer
    files = ("curves.npz",) + (("snapshots.npz",) if o["snapshot_every"] else ())
    out = create_run_dir(run_dir, NAME, config={**o, "model_config": model.config}, files=files)
    metrics: dict[str, Any] = {"model": o["model"], "positions": o["positions"], "seed": o["seed"]}

    def write_files() -> None:
        rows = trainer.history.rows
        for row in rows:
            row.update(run.probes.get(int(row["step"]), {}))
        steps = np.array([r["step"] for r in rows], dtype=int)
        kl = np.array([r["test_kl"] for r in rows])
        margins = np.array(run.margins) if run.margins else None
        X = run.task.test.X
        if isinstance(model, MinimalModel):
            params = model.layer_params()
        else:
            params = model.stack_params() if isinstance(model, FactoredValues) else model.params
        save_arrays(out / "params.npz", params)
        trainer.history.to_csv(out / "history.csv")
        curves = {"step": steps, "kl": kl}
        for name in ("prev_token_score", "induction_score", "v_margin"):
            if name in rows[0]:
                curves[name] = np.array([r[name] for r in rows])
        if margins is not None:
            curves["margin"] = margins
        save_arrays(out / "curves.npz", curves)
        if o["snapshot_every"]:
            snap_steps = np.array(trainer.history.snapshot_steps)
            keep = snap_steps % o["snapshot_every"] == 0
            keep[-1] = True
            S = np.stack(trainer.history.snapshots)[keep, 0]
            save_arrays(out / "snapshots.npz", {"S": S.astype(np.float16),
                        "steps": snap_steps[keep], "tokens": X[0]})  # fmt: skip
        P = run.task.info["transitions"]
        metrics["final_kl"] = float(np.mean(kl_divergence(true_next(P, X), predict_last(model, X))))
        metrics.update(probe_scores(model, X, run.repeated.X))
        metrics.update(summarize(steps, kl, margins))
        metrics["baselines"] = baselines(P, X)
        metrics["test_loss"] = rows[-1]["test_loss"]
        metrics["steps"] = trainer.step
        metrics["wall_s"] = time.perf_counter() - start
        metrics["cpu_s"] = time.process_time() - cpu

    return finish_run(
        out, trainer, write_files, lambda: metrics, ("params.npz", "history.csv", *files)
    )
