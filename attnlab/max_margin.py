"""The max-margin experiments of Tarzanagh et al., run with the project's own model and trainer.

``max-margin`` ("Transformers as Support Vector Machines", arXiv 2308.16898, ``local_converge``):
cross attention, only ``W`` trained by normalized GD; its direction converges to the attention
SVM ``W_mm`` of the tokens the trained softmax selects. ``prompt-norm`` ("Max-Margin Token
Selection in Attention Mechanism", arXiv 2306.13596, ``multi_input_converge``): prompt attention,
only ``p`` trained; under normalized GD ``||p||`` grows linearly, under plain GD slowly.

Each run records the trained parameter after every update (through the trainer's ``on_step``)
and derives the curves from that trajectory. Axis ``s`` is the step: ``s = 0`` is the
initialization, ``s = iterations`` the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnlab.model import ContextWindowModel
from attnlab.svm import SVMSolution, attention_svm, prompt_svm
from attnlab.tasks import Task, max_margin, prompt_norm
from mlp.contract import contract
from mlp.numerics import softmax
from mlp.optim import SGD, NormalizedGD
from mlp.trainer import Trainer
from mlp.validation import choice, positive

__all__ = ["INITS", "MaxMarginRun", "PromptNormRun", "run_max_margin", "run_prompt_norm"]


@dataclass(frozen=True)
class MaxMarginRun:
    """One seed of ``max-margin``: curves over the steps ``s = 0..iterations``.

    ``correlation (s,)``: ``<W_s, W_mm> / (||W_s|| ||W_mm||)``; ``probability (s,)``: the
    softmax weight of the selected token, mean over prompts; ``norm (s,)``: ``||W_s||_F``.
    ``selected (n,)``: the token each prompt's trained softmax selects (argmax at the end);
    ``optimal (n,)``: the task's globally optimal token (best ``y_i v^T x_it``); ``settled``:
    the first step from which the argmax is ``selected`` in every prompt; ``svm``: the attention
    SVM of ``selected``; ``stop_reason``: the trainer's (``'completed'`` or why it stopped).
    """

    seed: int
    textbook_backward: bool
    correlation: np.ndarray
    probability: np.ndarray
    norm: np.ndarray
    selected: np.ndarray
    optimal: np.ndarray
    settled: int
    svm: SVMSolution
    stop_reason: str


@dataclass(frozen=True)
class PromptNormRun:
    """``prompt-norm`` under one optimizer: curves over the steps ``s = 0..iterations``.

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


def _train(
    model: ContextWindowModel,
    task: Task,
    key: str,
    optimizer: NormalizedGD | SGD,
    lr: float,
    iterations: int,
) -> tuple[np.ndarray, str]:
    """Full-batch training of ``model.params[key]`` only; its trajectory ``(s, ...)``."""
    trajectory = np.empty((iterations + 1, *model.params[key].shape))
    trajectory[0] = model.params[key]

    def record(step: int, params: dict[str, np.ndarray]) -> None:
        trajectory[step] = params[key]

    trainer = Trainer(
        model,
        optimizer,
        task.train,
        steps=iterations,
        lr=lr,
        trainable=[key],
        eval_every=iterations,
        progress=False,
        on_step=record,
    )
    trainer.run()
    return trajectory[: trainer.step + 1], trainer.stop_reason


def _cosines(trajectory: np.ndarray, target: np.ndarray) -> np.ndarray:
    """``<P_s, T> / (||P_s|| ||T||)`` for each step ``s`` (NaN where ``P_s = 0``)."""
    flat = trajectory.reshape(len(trajectory), -1)
    norms = np.linalg.norm(flat, axis=1)
    with np.errstate(invalid="ignore", divide="ignore"):
        return flat @ target.ravel() / (norms * np.linalg.norm(target))


INITS = ("zero", "uniform")


def run_max_margin(
    seed: int,
    iterations: int = 2000,
    lr: float = 0.1,
    textbook_backward: bool = False,
    init: str = "zero",
) -> MaxMarginRun:
    """Train ``max-margin`` seed ``seed`` (data and init) and compare ``W`` with ``W_mm``.

    The data is :func:`attnlab.tasks.max_margin` (n = 6 prompts, c = 8 tokens, d = 10); the
    model is ``ContextWindowModel(d, attention="cross", pool="mean", head="linear")`` with the
    task's fixed unit head ``v (d, 1)``. ``W (d, d)`` starts from ``0`` (``init="zero"``: the
    softmax is uniform and the run is a function of the data alone) or from
    ``U(-1/sqrt(d), 1/sqrt(d))`` drawn by ``default_rng(seed)`` (``init="uniform"``: the scale of
    PyTorch's default ``nn.Linear`` init, which the papers use unseeded), and is trained alone
    by full-batch normalized GD, ``W <- W - lr g / ||g||_F`` with no epsilon, for ``iterations``
    steps. ``textbook_backward=True`` uses the textbook softmax backward (which loses its
    digits once the softmax saturates).
    """
    positive("iterations", iterations, integer=True)
    positive("lr", lr)
    choice("init", init, INITS)
    task = max_margin(seed=seed)
    X, Z, d = task.train.X, task.train.Z, task.d
    model = ContextWindowModel(
        d, attention="cross", pool="mean", head="linear", textbook_backward=textbook_backward
    )
    model.params["v"] = task.info["v"][:, None].copy()
    if init == "zero":
        model.params["W"] = np.zeros((d, d))
    else:
        bound = 1.0 / np.sqrt(d)
        model.params["W"] = np.random.default_rng(seed).uniform(-bound, bound, (d, d))
    Ws, stop_reason = _train(model, task, "W", NormalizedGD(), lr, iterations)
    WZ = contract("s e d, n d j -> s n e j", Ws, Z)
    S = softmax(contract("n e c, s n e j -> s n c j", X, WZ)[..., 0], axis=2)  # (s, n, c)
    selected = np.argmax(S[-1], axis=1)
    svm = attention_svm(X, Z, selected)
    n = X.shape[0]
    changed = np.flatnonzero(np.any(np.argmax(S, axis=2) != selected, axis=1))
    return MaxMarginRun(
        seed=seed,
        textbook_backward=textbook_backward,
        correlation=_cosines(Ws, svm.solution),
        probability=S[:, np.arange(n), selected].mean(axis=1),
        norm=np.linalg.norm(Ws.reshape(len(Ws), -1), axis=1),
        selected=selected,
        optimal=np.asarray(task.train.target),
        settled=int(changed[-1] + 1) if changed.size else 0,
        svm=svm,
        stop_reason=stop_reason,
    )


OPTIMIZERS = ("ngd", "gd")


def run_prompt_norm(optimizer: str, lr: float, iterations: int = 1000) -> PromptNormRun:
    """Train ``prompt-norm``'s ``p (d, 1)`` from ``p = 0`` with ``'ngd'`` or ``'gd'``.

    The data is :func:`attnlab.tasks.prompt_norm` (n = 3 prompts, c = 7 tokens, d = 3, token 0
    optimal, all labels +1); the model is ``ContextWindowModel(3, attention="prompt",
    pool="mean", head="linear")`` with the fixed head ``v = e3``. The scores are ``X^T p`` on all
    three coordinates (the paper masks the third one with ``K = Q = diag(1, 1, 0)``).
    """
    choice("optimizer", optimizer, OPTIMIZERS)
    positive("iterations", iterations, integer=True)
    positive("lr", lr)
    task = prompt_norm()
    X = task.train.X
    model = ContextWindowModel(task.d, attention="prompt", pool="mean", head="linear")
    model.params["v"] = task.info["v"][:, None].copy()
    model.params["p"] = np.zeros((task.d, 1))
    opt = NormalizedGD() if optimizer == "ngd" else SGD()
    Ps, stop_reason = _train(model, task, "p", opt, lr, iterations)
    S = softmax(contract("n d c, s d j -> s n c j", X, Ps)[..., 0], axis=2)  # (s, n, c)
    target = np.asarray(task.train.target)
    svm = prompt_svm(X, target)
    return PromptNormRun(
        optimizer=optimizer,
        lr=float(lr),
        norm=np.linalg.norm(Ps.reshape(len(Ps), -1), axis=1),
        probability=S[:, np.arange(X.shape[0]), target].mean(axis=1),
        correlation=_cosines(Ps, svm.solution),
        svm=svm,
        stop_reason=stop_reason,
    )
