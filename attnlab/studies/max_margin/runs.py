"""The max-margin experiments of Tarzanagh et al., run with the project's own model and trainer.

``max-margin`` ("Transformers as Support Vector Machines", arXiv 2308.16898, ``local_converge``):
cross attention, only ``W`` trained by normalized GD; its direction converges to the attention
SVM ``W_mm`` of the tokens the trained softmax selects. ``prompt-norm`` ("Max-Margin Token
Selection in Attention Mechanism", arXiv 2306.13596, ``multi_input_converge``): prompt attention,
only ``p`` trained; under normalized GD ``||p||`` grows linearly, under plain GD slowly.

``max-margin-kq`` (the same paper, ``local_converge`` with the ``(K, Q)`` parametrization):
``cross-kq`` attention, ``W = WK WQ^T``, the two factors trained by per-factor normalized GD;
the product's direction tends to the nuclear-norm SVM ``W_*``
(:func:`attnlab.svm.attention_svm_nuclear`, which needs cvxpy).

Every run is :class:`mlp.train.trainer.Trainer` on a :class:`attnlab.ContextWindowModel` built
from :data:`SETTINGS`, with the task's fixed head (:func:`attnlab.tasks.fixed_head`). It records
the trained parameter after every update and derives the curves from that trajectory. Axis ``s``
is the step: ``s = 0`` is the initialization, ``s = steps`` the end.

:func:`run_experiment` is one seed of ``max-margin`` as an experiment: a config dict (see
:data:`DEFAULTS`) in, a run folder and its metrics out.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange

from attnlab.models.context_window import ContextWindowModel
from attnlab.svm import SVMSolution, attention_svm, attention_svm_nuclear, cosines, prompt_svm
from attnlab.tasks import REGISTRY, Task, fixed_head, make_task
from mlp.contract import contract
from mlp.numerics import softmax
from mlp.train.folders import (
    RunFolderError,
    create_run_dir,
    load_arrays,
    load_model,
    read_json,
    save_arrays,
    write_json,
)
from mlp.train.optim import NormalizedGD, make_optimizer
from mlp.train.trainer import Trainer
from mlp.validation import check_seed, choice, positive

__all__ = [
    "DEFAULTS",
    "GD_LR",
    "INITS",
    "INIT_MEANING",
    "KQ_INITS",
    "SETTINGS",
    "MaxMarginKQRun",
    "MaxMarginRun",
    "PromptNormRun",
    "describe",
    "resolve",
    "run_experiment",
    "run_max_margin",
    "run_max_margin_kq",
    "run_prompt_norm",
]

#: The published settings of the two tasks (from the task registry): the model
#: (``attention``, ``pool``, ``head``), the prompt length ``context``, and the training
#: (``optimizer``, ``lr``, ``steps``), full batch, the head fixed.
SETTINGS: dict[str, dict[str, Any]] = {
    name: dict(REGISTRY[name].settings) for name in ("max-margin", "prompt-norm")
}
#: prompt-norm's comparison: plain gradient descent with this learning rate.
GD_LR = 1.0
#: A max-margin run has found the max-margin direction when its final correlation with
#: ``W_mm`` reaches this (the metric ``correlation_ge_0.99``; every seed's target).
ALIGNED = 0.99
#: How a trained parameter ``(d, ...)`` starts, by name.
INIT_MEANING = {
    "zero": "0",
    "uniform": "U(-1/sqrt(d), 1/sqrt(d)) drawn by default_rng(seed)",
    "small": "N(0, (0.1/sqrt(d))^2) drawn by default_rng(seed)",
}
INITS = ("zero", "uniform")  # of max-margin's W
KQ_INITS = ("uniform", "small")  # of the factors: at zero both factor gradients are zero


@dataclass(frozen=True)
class _CrossRun:
    """What a cross-attention run of ``max-margin`` records, as curves over the steps
    ``s = 0..steps`` of its ``W_s (d, d)``.

    ``correlation (s,)``: ``<W_s, W_mm> / (||W_s|| ||W_mm||)`` (the kq run: with ``W_*``);
    ``probability (s,)``: the softmax weight of the selected token, mean over prompts;
    ``norm (s,)``: ``||W_s||_F``. ``selected (n,)``: the token each prompt's trained softmax
    selects (argmax at the end); ``optimal (n,)``: the task's globally optimal token (best
    ``y_i v^T x_it``); ``settled``: the first step from which the argmax is ``selected`` in every
    prompt; ``svm``: the (Frobenius) attention SVM ``W_mm`` of ``selected``; ``stop_reason``: the
    trainer's (``'completed'`` or why it stopped).
    """

    seed: int
    correlation: np.ndarray
    probability: np.ndarray
    norm: np.ndarray
    selected: np.ndarray
    optimal: np.ndarray
    settled: int
    svm: SVMSolution
    stop_reason: str


@dataclass(frozen=True)
class MaxMarginRun(_CrossRun):
    """One seed of ``max-margin`` (the fields of :class:`_CrossRun`), with
    ``textbook_backward`` and ``model``: the trained model (its final ``params`` and its
    ``config``)."""

    textbook_backward: bool
    model: ContextWindowModel


@dataclass(frozen=True)
class MaxMarginKQRun(_CrossRun):
    """One seed of ``max-margin-kq``, for the product ``W_s = WK_s WQ_s^T``: the fields of
    :class:`_CrossRun`, with ``correlation`` against the nuclear-norm SVM ``W_*``.

    ``correlation_frobenius (s,)``: the correlation with the Frobenius SVM ``W_mm`` (``svm``);
    ``nuclear``: the nuclear-norm SVM of ``selected``. ``rank``: the inner dimension ``r`` of
    ``WK, WQ (d, r)``. ``stopped``: the step at which the gradient became exactly zero in float64
    (every non-selected softmax weight underflowed), or ``steps``; the factors cannot move after
    it, so the curves hold their last value.
    """

    rank: int
    correlation_frobenius: np.ndarray
    nuclear: SVMSolution
    stopped: int


@dataclass(frozen=True)
class PromptNormRun:
    """``prompt-norm`` under one optimizer: curves over the steps ``s = 0..steps``.

    ``norm (s,)``: ``||p_s||``; ``probability (s,)``: the softmax weight of the optimal token
    (token 0), mean over prompts; ``correlation (s,)``: ``<p_s, p_mm> / (||p_s|| ||p_mm||)``
    (NaN at ``p = 0``); ``svm``: the SVM of the optimal tokens.
    """

    optimizer: str
    lr: float
    norm: np.ndarray
    probability: np.ndarray
    correlation: np.ndarray
    svm: SVMSolution
    stop_reason: str


def _build(
    name: str, seed: int, **model_options: Any
) -> tuple[Task, ContextWindowModel, list[str]]:
    """Task ``name`` of ``seed`` and its model from :data:`SETTINGS` (``model_options``
    override), with the task's fixed head; returns ``(task, model, trainable keys)``."""
    s = SETTINGS[name]
    task = make_task(name, context=s["context"], seed=seed)
    options = {"attention": s["attention"], "pool": s["pool"], "head": s["head"], **model_options}
    model = ContextWindowModel(task.d, **options)
    return task, model, fixed_head(task, model)


def describe(name: str, **model_options: Any) -> dict[str, Any]:
    """What a run of task ``name`` is built from, from the code's values: the task's name and
    sizes, the model's constructor arguments and the trained keys (seed 0's)."""
    task, model, trainable = _build(name, 0, **model_options)
    n, d, c = task.train.X.shape
    return {
        "task": {"name": name, "n": n, "d": d, "context": c},
        "model": model.config,
        "trainable": trainable,
    }


def _init(shape: tuple[int, ...], init: str, rng: np.random.Generator) -> np.ndarray:
    """A parameter of ``shape (d, ...)`` drawn as :data:`INIT_MEANING` says."""
    if init == "zero":
        return np.zeros(shape)
    if init == "uniform":
        bound = 1.0 / np.sqrt(shape[0])
        return rng.uniform(-bound, bound, shape)
    return (0.1 / np.sqrt(shape[0])) * rng.standard_normal(shape)


def _train(
    model: ContextWindowModel,
    task: Task,
    trainable: list[str],
    optimizer: Any,
    lr: float,
    steps: int,
    record: Callable[[dict[str, np.ndarray]], np.ndarray],
    progress: bool | None,
) -> tuple[np.ndarray, Trainer]:
    """Full-batch training of the ``trainable`` keys; the trajectory ``(s, ...)`` of
    ``record(params)``. A run stopped early (an exactly zero gradient: the parameters cannot
    move any more) holds its last value to ``s = steps``."""
    first = record(model.params)
    trajectory = np.empty((steps + 1, *first.shape))
    trajectory[0] = first

    def on_step(step: int, params: dict[str, np.ndarray]) -> None:
        trajectory[step] = record(params)

    trainer = Trainer(
        model,
        optimizer,
        task.train,
        steps=steps,
        lr=lr,
        trainable=trainable,
        eval_every=steps,
        progress=progress,
        description=f"{task.name}, {model.attention} attention",
        on_step=on_step,
    )
    trainer.run()
    trajectory[trainer.step + 1 :] = trajectory[trainer.step]
    return trajectory, trainer


def _norms(trajectory: np.ndarray) -> np.ndarray:
    """``||P_s||_F`` for each step of a trajectory ``(s, ...)``."""
    return np.linalg.norm(rearrange(trajectory, "s ... -> s (...)"), axis=1)


def _weight_of(S: np.ndarray, tokens: np.ndarray) -> np.ndarray:
    """The softmax weight of token ``tokens[i]`` in prompt ``i``, mean over prompts: ``S (s, n,
    c)``, ``tokens (n,)`` -> ``(s,)``."""
    return S[:, np.arange(S.shape[1]), tokens].mean(axis=1)


def _cross_softmax(X: np.ndarray, Z: np.ndarray, Ws: np.ndarray) -> np.ndarray:
    """The softmax weights ``(s, n, c)`` of prompts ``X (n, d, c)`` with queries ``Z (n, d, 1)``
    under each ``W_s`` of ``Ws (s, e, d)``: ``softmax_t(x_t^T W_s z)``."""
    WZ = contract("s e d, n d j -> s n e j", Ws, Z)
    return softmax(contract("n e c, s n e j -> s n c j", X, WZ)[..., 0], axis=2)


def _cross_run(seed: int, task: Task, Ws: np.ndarray, trainer: Trainer) -> dict[str, Any]:
    """The fields of :class:`_CrossRun` from a trajectory ``Ws (s, e, d)`` on ``task``: what it
    selects on prompts ``X (n, d, c)`` with queries ``Z (n, d, 1)`` (the argmax of the last
    softmax), that token's weight per step, the step from which every prompt's argmax stays
    the selected token, and the attention SVM of the selection."""
    X, Z = task.train.X, task.train.inputs["Z"]
    S = _cross_softmax(X, Z, Ws)
    selected = np.argmax(S[-1], axis=1)
    changed = np.flatnonzero(np.any(np.argmax(S, axis=2) != selected, axis=1))
    svm = attention_svm(X, Z, selected)
    return {
        "seed": seed,
        "correlation": cosines(Ws, svm.solution),
        "probability": _weight_of(S, selected),
        "norm": _norms(Ws),
        "selected": selected,
        "optimal": np.asarray(task.train.target),
        "settled": int(changed[-1] + 1) if changed.size else 0,
        "svm": svm,
        "stop_reason": trainer.stop_reason,
    }


def run_max_margin(
    seed: int,
    steps: int = SETTINGS["max-margin"]["steps"],
    lr: float = SETTINGS["max-margin"]["lr"],
    textbook_backward: bool = False,
    init: str = "zero",
    progress: bool | None = False,
) -> MaxMarginRun:
    """Train ``max-margin`` seed ``seed`` (data and init) and compare ``W`` with ``W_mm``.

    The data is :func:`attnlab.tasks.max_margin` (n = 6 prompts, c = 8 tokens, d = 10); the
    model is ``ContextWindowModel(d, attention="cross", pool="mean", head="linear")``
    (:data:`SETTINGS`) with the task's fixed unit head ``v (d, 1)``. ``W (d, d)`` starts from
    ``0`` (``init="zero"``: the softmax is uniform and the run is a function of the data alone)
    or from ``U(-1/sqrt(d), 1/sqrt(d))`` drawn by ``default_rng(seed)`` (``init="uniform"``: the
    scale of PyTorch's default ``nn.Linear`` init, which the papers use unseeded), and is trained
    alone by full-batch normalized GD, ``W <- W - lr g / ||g||_F`` with no epsilon, for
    ``steps`` steps. ``textbook_backward=True`` uses the textbook softmax backward (which loses
    its digits once the softmax saturates). ``progress``: the trainer's progress bar.
    """
    positive("steps", steps, integer=True)
    positive("lr", lr)
    choice("init", init, INITS)
    task, model, trainable = _build("max-margin", seed, textbook_backward=textbook_backward)
    model.params["W"] = _init((task.d, task.d), init, np.random.default_rng(seed))
    optimizer = make_optimizer(SETTINGS["max-margin"]["optimizer"])
    Ws, trainer = _train(model, task, trainable, optimizer, lr, steps, lambda p: p["W"], progress)
    return MaxMarginRun(
        **_cross_run(seed, task, Ws, trainer), textbook_backward=textbook_backward, model=model
    )


def run_max_margin_kq(
    seed: int,
    steps: int = SETTINGS["max-margin"]["steps"],
    lr: float = SETTINGS["max-margin"]["lr"],
    rank: int | None = None,
    init: str = "uniform",
    progress: bool | None = False,
) -> MaxMarginKQRun:
    """Train ``max-margin`` seed ``seed`` with ``W = WK WQ^T`` and compare with ``W_*``.

    Data, model and head as in :func:`run_max_margin`, with ``attention="cross-kq"``: the
    scores are ``x_t^T WK WQ^T z`` with ``WK, WQ (d, r)``, ``r = rank`` (``d`` if None). The
    factors start random, drawn by ``default_rng(seed)``: ``init="uniform"``
    ``U(-1/sqrt(d), 1/sqrt(d))`` (PyTorch's default ``nn.Linear`` scale, as in the papers) or
    ``init="small"`` ``N(0, (0.1/sqrt(d))^2)``; not zero, where both factor gradients are zero.
    Each step is per-factor normalized GD (``NormalizedGD(per_param=True)``): ``WK <- WK - lr
    dWK / ||dWK||`` and the same for ``WQ``. Since each factor grows by up to ``lr`` per step,
    ``||W||`` grows quadratically and the softmax saturates within a few hundred steps; once
    the gradient is exactly zero in float64 the run stops (``stopped``). Needs cvxpy for
    ``W_*``.
    """
    positive("steps", steps, integer=True)
    positive("lr", lr)
    choice("init", init, KQ_INITS)
    task, model, trainable = _build("max-margin", seed, attention="cross-kq", rank=rank)
    rng = np.random.default_rng(seed)
    for key in ("WK", "WQ"):
        model.params[key] = _init((task.d, model.rank), init, rng)
    Ws, trainer = _train(
        model,
        task,
        trainable,
        NormalizedGD(per_param=True),
        lr,
        steps,
        lambda p: p["WK"] @ p["WQ"].T,
        progress,
    )
    run = _cross_run(seed, task, Ws, trainer)
    nuclear = attention_svm_nuclear(task.train.X, task.train.inputs["Z"], run["selected"])
    return MaxMarginKQRun(
        **{**run, "correlation": cosines(Ws, nuclear.solution)},
        rank=model.rank,
        correlation_frobenius=run["correlation"],
        nuclear=nuclear,
        stopped=trainer.step,
    )


#: prompt-norm's optimizers: normalized GD, or plain GD (the trainer's ``sgd``, full batch).
OPTIMIZERS = {"ngd": "ngd", "gd": "sgd"}


def run_prompt_norm(
    optimizer: str,
    lr: float,
    steps: int = SETTINGS["prompt-norm"]["steps"],
    progress: bool | None = False,
) -> PromptNormRun:
    """Train ``prompt-norm``'s ``p (d, 1)`` from ``p = 0`` with ``'ngd'`` or ``'gd'``.

    The data is :func:`attnlab.tasks.prompt_norm` (n = 3 prompts, c = 7 tokens, d = 3, token 0
    optimal, all labels +1); the model is ``ContextWindowModel(3, attention="prompt",
    pool="mean", head="linear")`` (:data:`SETTINGS`) with the fixed head ``v = e3``. The scores
    are ``X^T p`` on all three coordinates (the paper masks the third one with
    ``K = Q = diag(1, 1, 0)``).
    """
    choice("optimizer", optimizer, tuple(OPTIMIZERS))
    positive("steps", steps, integer=True)
    positive("lr", lr)
    task, model, trainable = _build("prompt-norm", 0)
    model.params["p"] = np.zeros((task.d, 1))
    opt = make_optimizer(OPTIMIZERS[optimizer])
    Ps, trainer = _train(model, task, trainable, opt, lr, steps, lambda p: p["p"], progress)
    X = task.train.X
    S = softmax(contract("n d c, s d j -> s n c j", X, Ps)[..., 0], axis=2)  # (s, n, c)
    target = np.asarray(task.train.target)
    svm = prompt_svm(X, target)
    return PromptNormRun(
        optimizer=optimizer,
        lr=float(lr),
        norm=_norms(Ps),
        probability=_weight_of(S, target),
        correlation=cosines(Ps, svm.solution),
        svm=svm,
        stop_reason=trainer.stop_reason,
    )


# --- one seed of max-margin as an experiment: config in, run folder and metrics out ---------

#: What a run of :func:`run_experiment` imports on first use (its figure): a sweep's worker
#: processes start with it imported.
PRELOAD = ("attnlab.plots",)
#: What sweeps and run ids call this experiment.
NAME = "max-margin"
#: Every option of :func:`run_experiment` and its default.
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "steps": SETTINGS["max-margin"]["steps"],
    "lr": SETTINGS["max-margin"]["lr"],
    "init": "zero",
    "textbook_backward": False,
}


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` completed by :data:`DEFAULTS` and checked: an unknown key or a bad value
    raises ``ValueError`` (``TypeError`` for a non-boolean ``textbook_backward``) naming it."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a mapping of options, received {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"config: unknown option(s) {unknown}; expected some of {list(DEFAULTS)}")
    cfg = {**DEFAULTS, **config}
    cfg["seed"] = check_seed(cfg["seed"])
    positive("steps", cfg["steps"], integer=True)
    cfg["lr"] = float(positive("lr", cfg["lr"]))  # 1 and 1.0: the same config
    choice("init", cfg["init"], INITS)
    if not isinstance(cfg["textbook_backward"], (bool, np.bool_)):
        raise TypeError(
            f"textbook_backward: expected True or False, received {cfg['textbook_backward']!r}"
        )
    return cfg


def run_experiment(
    config: Mapping[str, Any], run_dir: str | Path, *, progress: bool | None = None
) -> dict[str, Any]:
    """One seed of ``max-margin`` (:func:`run_max_margin` with the options of ``config``, see
    :data:`DEFAULTS`), written to the run folder ``run_dir``.

    Writes ``config.json`` (the resolved options, :data:`SETTINGS`' ``max-margin`` entry and
    :func:`describe`'s task, model constructor arguments and trained keys), ``metrics.json``,
    ``curves.npz`` (``correlation``, ``probability``, ``norm``, each ``(s,)`` for ``s =
    0..steps``), ``params.npz`` (the trained model's parameters: ``W (d, d)`` and the fixed
    ``v (d, 1)``) and ``correlation.png``. Returns the metrics: the final ``correlation`` with
    ``W_mm``, ``correlation_ge_0.99`` (whether it reaches :data:`ALIGNED`: over seeds, the mean
    of this yes/no is the fraction of seeds that do), ``probability`` of the selected token and
    ``norm`` ``||W||_F``, the step at which the selection ``settled``, and the trainer's
    ``stop_reason``.
    """
    from attnlab.plots import plot_max_margin_run  # matplotlib only when a run is written

    cfg = resolve(config)
    out = create_run_dir(run_dir, "max-margin", files=("curves.npz",))
    run = run_max_margin(
        cfg["seed"],
        cfg["steps"],
        cfg["lr"],
        textbook_backward=bool(cfg["textbook_backward"]),
        init=cfg["init"],
        progress=progress,
    )
    metrics = {
        "correlation": float(run.correlation[-1]),
        f"correlation_ge_{ALIGNED:g}": bool(run.correlation[-1] >= ALIGNED),
        "probability": float(run.probability[-1]),
        "norm": float(run.norm[-1]),
        "settled": run.settled,
        "stop_reason": run.stop_reason,
    }
    write_json(
        out / "config.json", {**cfg, "settings": SETTINGS["max-margin"], **describe("max-margin")}
    )
    save_arrays(
        out / "curves.npz",
        {"correlation": run.correlation, "probability": run.probability, "norm": run.norm},
    )
    save_arrays(out / "params.npz", run.model.params)
    plot_max_margin_run(out / "correlation.png", run)
    write_json(out / "metrics.json", metrics)  # last: the run folder is complete
    return metrics


def load_run(run_dir: str | Path) -> MaxMarginRun:
    """The :class:`MaxMarginRun` of a run folder that :func:`run_experiment` wrote: the curves
    of ``curves.npz``, the trained model of ``config.json`` and ``params.npz``, ``settled`` and
    ``stop_reason`` of ``metrics.json``; the task is made again from the seed, and the selected
    tokens and their SVM ``W_mm`` from the final ``W``. :class:`RunFolderError` names a file
    that is missing or does not hold what it must."""
    run_dir = Path(run_dir)
    config = read_json(run_dir / "config.json")
    try:
        cfg = resolve({k: config[k] for k in DEFAULTS})
    except (KeyError, TypeError, ValueError) as err:
        raise RunFolderError(f"run folder: {run_dir / 'config.json'}: {err}") from None
    textbook = bool(cfg["textbook_backward"])
    model, _ = load_model(
        run_dir, lambda kwargs: ContextWindowModel(**kwargs, textbook_backward=textbook)
    )
    metrics = read_json(run_dir / "metrics.json")
    curves = load_arrays(run_dir / "curves.npz")
    shape = (cfg["steps"] + 1,)
    names = ("correlation", "probability", "norm")
    if sorted(curves) != sorted(names) or any(curves[k].shape != shape for k in names):
        got = {k: v.shape for k, v in curves.items()}
        raise RunFolderError(
            f"run folder: {run_dir / 'curves.npz'}: expected {list(names)} of shape {shape}, "
            f"received {got}"
        )
    if not isinstance(metrics.get("settled"), int) or not isinstance(
        metrics.get("stop_reason"), str
    ):
        raise RunFolderError(
            f"run folder: {run_dir / 'metrics.json'}: expected an integer 'settled' and a "
            f"text 'stop_reason', received {metrics.get('settled')!r}, "
            f"{metrics.get('stop_reason')!r}"
        )
    task, _, _ = _build("max-margin", cfg["seed"])
    X, Z = task.train.X, task.train.inputs["Z"]
    selected = np.argmax(_cross_softmax(X, Z, model.params["W"][None])[-1], axis=1)
    return MaxMarginRun(
        seed=cfg["seed"],
        **{k: curves[k] for k in names},
        selected=selected,
        optimal=np.asarray(task.train.target),
        settled=metrics["settled"],
        svm=attention_svm(X, Z, selected),
        stop_reason=metrics["stop_reason"],
        textbook_backward=textbook,
        model=model,
    )
