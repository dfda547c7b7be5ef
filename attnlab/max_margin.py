"""The max-margin experiments of Tarzanagh et al., run with the project's own model and trainer.

``max-margin`` ("Transformers as Support Vector Machines", arXiv 2308.16898, ``local_converge``):
cross attention, only ``W`` trained by normalized GD; its direction converges to the attention
SVM ``W_mm`` of the tokens the trained softmax selects. ``prompt-norm`` ("Max-Margin Token
Selection in Attention Mechanism", arXiv 2306.13596, ``multi_input_converge``): prompt attention,
only ``p`` trained; under normalized GD ``||p||`` grows linearly, under plain GD slowly.

``max-margin-kq`` (the same paper, ``local_converge`` with the ``(K, Q)`` parametrization):
the same cross attention with ``W = WK WQ^T`` and the two factors trained by per-factor
normalized GD; the product's direction tends to the nuclear-norm SVM ``W_*``
(:func:`attnlab.svm.attention_svm_nuclear`, which needs cvxpy).

Each run records the trained parameter after every update (through the trainer's ``on_step``)
and derives the curves from that trajectory. Axis ``s`` is the step: ``s = 0`` is the
initialization, ``s = iterations`` the end.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from attnlab.model import ContextWindowModel
from attnlab.svm import SVMSolution, attention_svm, attention_svm_nuclear, prompt_svm
from attnlab.tasks import Task, max_margin, prompt_norm
from mlp.contract import contract
from mlp.numerics import softmax
from mlp.train.optim import SGD, NormalizedGD, ZeroGradientError
from mlp.train.trainer import Trainer
from mlp.validation import choice, positive

__all__ = [
    "INITS",
    "KQ_INITS",
    "MaxMarginKQRun",
    "MaxMarginRun",
    "PromptNormRun",
    "kq_loss_and_grads",
    "run_max_margin",
    "run_max_margin_kq",
    "run_prompt_norm",
]


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


def _selection(
    Ws: np.ndarray, X: np.ndarray, Z: np.ndarray
) -> tuple[np.ndarray, np.ndarray, np.ndarray, int]:
    """What a cross-attention trajectory ``Ws (s, e, d)`` selects on prompts ``X (n, d, c)``
    with queries ``Z (n, d, 1)``: ``selected (n,)`` (the argmax of the last softmax), its
    weight per step ``probability (s,)`` (mean over prompts), ``norm (s,)`` (``||W_s||_F``) and
    ``settled``: the first step from which every prompt's argmax is ``selected``."""
    WZ = contract("s e d, n d j -> s n e j", Ws, Z)
    S = softmax(contract("n e c, s n e j -> s n c j", X, WZ)[..., 0], axis=2)  # (s, n, c)
    selected = np.argmax(S[-1], axis=1)
    probability = S[:, np.arange(X.shape[0]), selected].mean(axis=1)
    norm = np.linalg.norm(Ws.reshape(len(Ws), -1), axis=1)
    changed = np.flatnonzero(np.any(np.argmax(S, axis=2) != selected, axis=1))
    return selected, probability, norm, int(changed[-1] + 1) if changed.size else 0


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
    selected, probability, norm, settled = _selection(Ws, X, Z)
    svm = attention_svm(X, Z, selected)
    return MaxMarginRun(
        seed=seed,
        textbook_backward=textbook_backward,
        correlation=_cosines(Ws, svm.solution),
        probability=probability,
        norm=norm,
        selected=selected,
        optimal=np.asarray(task.train.target),
        settled=settled,
        svm=svm,
        stop_reason=stop_reason,
    )


@dataclass(frozen=True)
class MaxMarginKQRun:
    """One seed of ``max-margin-kq``: curves over the steps ``s = 0..iterations`` of the product
    ``W_s = WK_s WQ_s^T (d, d)``.

    ``correlation (s,)``: ``<W_s, W_*> / (||W_s|| ||W_*||)`` with the nuclear-norm SVM ``W_*``;
    ``correlation_frobenius (s,)``: the same with the Frobenius SVM ``W_mm``; ``probability``,
    ``norm``, ``selected``, ``optimal``, ``settled`` as in :class:`MaxMarginRun`. ``svm``: the
    Frobenius SVM and ``nuclear``: the nuclear-norm SVM, both of ``selected``. ``rank``: the
    inner dimension ``r`` of ``WK, WQ (d, r)``. ``stopped``: the step at which the gradient
    became exactly zero in float64 (every non-selected softmax weight underflowed), or
    ``iterations``; the factors cannot move after it, so the curves hold their last value.
    """

    seed: int
    rank: int
    correlation: np.ndarray
    correlation_frobenius: np.ndarray
    probability: np.ndarray
    norm: np.ndarray
    selected: np.ndarray
    optimal: np.ndarray
    settled: int
    svm: SVMSolution
    nuclear: SVMSolution
    stopped: int
    stop_reason: str


KQ_INITS = ("uniform", "small")


def kq_loss_and_grads(
    model: ContextWindowModel,
    WK: np.ndarray,
    WQ: np.ndarray,
    X: np.ndarray,
    y: np.ndarray,
    Z: np.ndarray,
) -> tuple[float, np.ndarray, np.ndarray]:
    """Loss and factor gradients of a cross-attention ``model`` at ``W = WK WQ^T``.

    ``WK, WQ (d, r)``; ``X (n, d, c)``, ``y (n,)``, ``Z (n, d, j)``. The scores are
    ``x_t^T WK WQ^T z``. Sets ``model.params['W'] = WK WQ^T``, takes ``dW (d, d)`` from
    ``model.loss_and_grads`` and applies the chain rule: ``dWK = dW WQ``, ``dWQ = dW^T WK``
    (both ``(d, r)``). Returns ``(loss, dWK, dWQ)``.
    """
    if model.attention != "cross":
        raise ValueError(f"model: expected attention 'cross', received {model.attention!r}")
    d = model.params["W"].shape[0]
    for name, F in (("WK", WK), ("WQ", WQ)):
        if F.ndim != 2 or F.shape[0] != d:
            raise ValueError(f"{name}: expected shape (d={d}, r), received {F.shape}")
    if WK.shape != WQ.shape:
        raise ValueError(f"WQ: expected the shape of WK {WK.shape}, received {WQ.shape}")
    model.params["W"] = WK @ WQ.T
    loss, grads = model.loss_and_grads(X, y, Z)
    dW = grads["W"]
    return loss, dW @ WQ, dW.T @ WK


def run_max_margin_kq(
    seed: int,
    iterations: int = 2000,
    lr: float = 0.1,
    rank: int | None = None,
    init: str = "uniform",
) -> MaxMarginKQRun:
    """Train ``max-margin`` seed ``seed`` with ``W = WK WQ^T`` and compare with ``W_*``.

    Data, model and head as in :func:`run_max_margin`; ``WK, WQ (d, r)`` with ``r = rank``
    (``d`` if None). The factors start random, drawn by ``default_rng(seed)``: ``init="uniform"``
    ``U(-1/sqrt(d), 1/sqrt(d))`` (PyTorch's default ``nn.Linear`` scale, as in the papers) or
    ``init="small"`` ``N(0, (0.1/sqrt(d))^2)``; not zero, where both factor gradients are zero.
    Each step is per-factor normalized GD (``NormalizedGD(per_param=True)``): ``WK <- WK - lr
    dWK / ||dWK||`` and the same for ``WQ``, with the gradients of :func:`kq_loss_and_grads`.
    A short explicit loop instead of :class:`mlp.train.trainer.Trainer`, whose model would need
    ``WK, WQ`` as parameters. Since each factor grows by up to ``lr`` per step, ``||W||`` grows
    quadratically and the softmax saturates within a few hundred steps; once the gradient is
    exactly zero in float64 the run stops (``stopped``). Needs cvxpy for ``W_*``.
    """
    positive("iterations", iterations, integer=True)
    positive("lr", lr)
    choice("init", init, KQ_INITS)
    task = max_margin(seed=seed)
    X, Z, y, d = task.train.X, task.train.Z, task.train.y, task.d
    r = d if rank is None else rank
    positive("rank", r, integer=True)
    model = ContextWindowModel(d, attention="cross", pool="mean", head="linear")
    model.params["v"] = task.info["v"][:, None].copy()
    rng = np.random.default_rng(seed)
    if init == "uniform":
        bound = 1.0 / np.sqrt(d)
        factors = {k: rng.uniform(-bound, bound, (d, r)) for k in ("WK", "WQ")}
    else:
        factors = {k: (0.1 / np.sqrt(d)) * rng.standard_normal((d, r)) for k in ("WK", "WQ")}
    optimizer = NormalizedGD(per_param=True)
    Ws = np.empty((iterations + 1, d, d))
    Ws[0] = factors["WK"] @ factors["WQ"].T
    stopped, stop_reason = iterations, "completed"
    for step in range(iterations):
        _, dWK, dWQ = kq_loss_and_grads(model, factors["WK"], factors["WQ"], X, y, Z)
        try:
            optimizer.step(factors, {"WK": dWK, "WQ": dWQ}, lr)
        except ZeroGradientError as err:
            stopped, stop_reason = step, f"stopped at step {step + 1}: {err}"
            Ws[step + 1 :] = Ws[step]
            break
        Ws[step + 1] = factors["WK"] @ factors["WQ"].T
    selected, probability, norm, settled = _selection(Ws, X, Z)
    svm = attention_svm(X, Z, selected)
    nuclear = attention_svm_nuclear(X, Z, selected)
    return MaxMarginKQRun(
        seed=seed,
        rank=r,
        correlation=_cosines(Ws, nuclear.solution),
        correlation_frobenius=_cosines(Ws, svm.solution),
        probability=probability,
        norm=norm,
        selected=selected,
        optimal=np.asarray(task.train.target),
        settled=settled,
        svm=svm,
        nuclear=nuclear,
        stopped=stopped,
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
