"""In-context linear regression: what a linear self-attention layer learns (Zhang, Frei and
Bartlett 2023, arXiv 2306.09927) and how it compares with one step of gradient descent (von
Oswald et al. 2023, arXiv 2212.07677).

A prompt ``E (d+1, N+1)`` holds the examples ``(x_i, y_i)`` as columns, then the query
``(x_q, 0)`` (see :func:`attnlab.tasks.regression_prompts`). The model is the linear form of the
layer with the last column pooled and a linear head: the prediction is

    yhat = v^T E E^T W e_q / N          W (d+1, d+1), v (d+1, 1), e_q = (x_q, 0)

trained on the squared loss ``(yhat - <w, x_q>)^2 / 2``. With ``u`` the last entry of ``v`` and
``W11`` the top-left ``d x d`` block of ``W``, gradient flow from the paper's init reaches

    u W11 = Gamma^-1,     Gamma = (1 + 1/N) Lambda + (tr(Lambda) / N) I_d

(the other blocks stay near zero), so that ``yhat = x_q^T Gamma^-1 (1/N) sum_i y_i x_i``. The
risk of a predictor ``yhat = x_q^T A (1/M) sum_i y_i x_i`` on prompts of ``M`` examples is

    R(M) = (tr(Lambda A Lambda Gamma_M A^T) - 2 tr(Lambda A Lambda) + tr(Lambda)) / 2

One step of GD from ``w = 0`` on the prompt's least squares predicts ``eta x_q^T (1/N) sum_i
y_i x_i``; for ``Lambda = I``, ``Gamma^-1 = N / (N + d + 1) I``: the trained layer is that step.

:func:`run_experiment` trains one model (the engine's :class:`mlp.train.Trainer` on a stream of
fresh prompts) and writes its run folder; :func:`reproduce` runs every covariance and seed and
measures the length generalization, the comparison with GD and the covariate shift.
"""

from __future__ import annotations

import math
import multiprocessing
import os
import time
from collections.abc import Callable, Iterable, Mapping
from concurrent.futures import ProcessPoolExecutor, as_completed
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.models.context_window import ContextWindowModel
from attnlab.tasks import (
    COVARIANCES,
    Task,
    covariance_matrix,
    linear_regression_in_context,
    regression_test_prompts,
)
from mlp.contract import contract
from mlp.train.data import Dataset
from mlp.train.folders import save_arrays, write_json
from mlp.train.optim import SGD, Averaged, make_schedule
from mlp.train.trainer import Trainer
from mlp.validation import as_float_array, check_seed, choice, positive

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
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"options: unknown {unknown}; expected some of {sorted(DEFAULTS)}")
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


# --- the closed forms ------------------------------------------------------------------------


def _covariance(Lambda: object) -> np.ndarray:
    Lam = as_float_array("Lambda", Lambda, ndim=2)
    if Lam.shape[0] != Lam.shape[1] or Lam.shape[0] == 0:
        raise ValueError(f"Lambda: expected a square (d, d) matrix, received {Lam.shape}")
    return Lam


def gamma(Lambda: np.ndarray, N: int) -> np.ndarray:
    """``Gamma = (1 + 1/N) Lambda + (tr(Lambda) / N) I_d``: ``(d, d)`` for ``Lambda (d, d)``.

    For ``N`` Gaussian ``x_i ~ N(0, Lambda)`` and ``Lambda_hat = (1/N) sum_i x_i x_i^T``, Wick's
    theorem gives ``E[Lambda_hat B Lambda_hat] = (1 + 1/N) Lambda B Lambda + (tr(B Lambda) / N)
    Lambda`` for a symmetric ``B``, whose trace is ``tr(B Lambda Gamma)``: the quadratic term of
    the risk (:func:`risk`)."""
    Lam = _covariance(Lambda)
    N = positive("N", N, integer=True)
    return (1.0 + 1.0 / N) * Lam + (np.trace(Lam) / N) * np.eye(Lam.shape[0])


def risk(A: np.ndarray, Lambda: np.ndarray, M: int) -> float:
    """``R(M)``: expected ``(yhat - y_q)^2 / 2`` of ``yhat = x_q^T A (1/M) sum_i y_i x_i`` on
    prompts of ``M`` examples, ``(tr(Lambda A Lambda Gamma_M A^T) - 2 tr(Lambda A Lambda) +
    tr(Lambda)) / 2``. ``A (d, d)``."""
    Lam = _covariance(Lambda)
    A = as_float_array("A", A, ndim=2)
    if A.shape != Lam.shape:
        raise ValueError(f"A: expected shape {Lam.shape} like Lambda, received {A.shape}")
    quad = np.trace(Lam @ A @ Lam @ gamma(Lam, M) @ A.T)
    return float(quad - 2 * np.trace(Lam @ A @ Lam) + np.trace(Lam)) / 2


def shift_risk(A: np.ndarray, Lambda: np.ndarray, M: int, c: float) -> float:
    """The risk of :func:`risk` when every ``x`` (examples and query) is scaled by ``c``: the
    labels and the target scale as ``c``, the prediction as ``c^3``, so the risk is
    ``c^2 (c^4 a - 2 c^2 b + tr(Lambda)) / 2`` with ``a = tr(Lambda A Lambda Gamma_M A^T)``,
    ``b = tr(Lambda A Lambda)``."""
    Lam = _covariance(Lambda)
    c = float(positive("c", c))
    a = np.trace(Lam @ A @ Lam @ gamma(Lam, M) @ A.T)
    b = np.trace(Lam @ A @ Lam)
    return float(c**2 * (c**4 * a - 2 * c**2 * b + np.trace(Lam))) / 2


def _split(E: object) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """``x (n, d, M)``, ``y (n, M)`` of the examples and the query ``x_q (n, d)`` of prompts
    ``E (n, d+1, M+1)``."""
    E = as_float_array("E", E, ndim=3)
    if E.shape[1] < 2 or E.shape[2] < 2:
        raise ValueError(
            f"E: expected prompts (n, d+1, M+1) with d >= 1 and M >= 1, received {E.shape}"
        )
    return E[:, :-1, :-1], E[:, -1, :-1], E[:, :-1, -1]


def _h(E: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``h = (1/M) sum_i y_i x_i (n, d)`` and ``x_q (n, d)``."""
    x, y, xq = _split(E)
    return contract("n d c, n c -> n d", x, y) / x.shape[2], xq


def linear_predict(E: np.ndarray, A: np.ndarray) -> np.ndarray:
    """``yhat = x_q^T A (1/M) sum_i y_i x_i``: ``(n,)`` for prompts ``E (n, d+1, M+1)`` and
    ``A (d, d)`` (``Gamma^-1``: the closed-form optimum; ``eta I``: one step of GD)."""
    h, xq = _h(E)
    return contract("n d, n d -> n", xq, contract("n e, d e -> n d", h, A))


def one_step_gd(E: np.ndarray, eta: float) -> np.ndarray:
    """One step of GD from ``w = 0`` on ``(1/2M) sum_i (y_i - w^T x_i)^2``, then ``w^T x_q``:
    ``yhat = eta x_q^T (1/M) sum_i y_i x_i (n,)``."""
    h, xq = _h(E)
    return float(eta) * contract("n d, n d -> n", xq, h)


def gd_sensitivity(E: np.ndarray, eta: float) -> np.ndarray:
    """``d yhat / d x_q`` of :func:`one_step_gd`: ``eta (1/M) sum_i y_i x_i``, ``(n, d)``."""
    return float(eta) * _h(E)[0]


def layer_sensitivity(E: np.ndarray, W: np.ndarray, v: np.ndarray) -> np.ndarray:
    """``d yhat / d x_q (n, d)`` of the layer ``yhat = v^T (S + e e^T) W e / M`` with ``S`` the
    examples' ``sum_i e_i e_i^T`` and ``e = (x_q, 0)``: the first ``d`` entries of
    ``(W^T S v + (e^T W e) v + (v^T e) (W + W^T) e) / M``."""
    E = as_float_array("E", E, ndim=3)
    x, _, _ = _split(E)
    M = x.shape[2]
    ctx = E[:, :, :-1]
    e = E[:, :, -1].copy()
    e[:, -1] = 0.0
    v = np.asarray(v, dtype=np.float64).reshape(-1)
    Sv = contract("n d c, n c -> n d", ctx, contract("n d c, d -> n c", ctx, v))
    WtSv = contract("n d, d e -> n e", Sv, W)
    eWe = contract("n d, n d -> n", e, contract("n e, d e -> n d", e, W))
    ve = e @ v
    sym = contract("n e, d e -> n d", e, W + W.T)
    grad = WtSv + eWe[:, None] * v[None, :] + ve[:, None] * sym
    return grad[:, :-1] / M


# --- the model and its init ------------------------------------------------------------------


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


def product(params: Mapping[str, np.ndarray]) -> np.ndarray:
    """``u W11 (d, d)``: the last entry of ``v`` times the top-left block of ``W``."""
    W, v = params["W"], params["v"]
    return float(v[-1, 0]) * W[:-1, :-1]


def rel_error(params: Mapping[str, np.ndarray], Lambda: np.ndarray, N: int) -> float:
    """``||u W11 - Gamma^-1||_F / ||Gamma^-1||_F``."""
    target = np.linalg.inv(gamma(Lambda, N))
    return float(np.linalg.norm(product(params) - target) / np.linalg.norm(target))


def off_block_norm(params: Mapping[str, np.ndarray]) -> float:
    """Frobenius norm of everything but ``W11`` and ``u``: the last row and column of ``W`` and
    the first ``d`` entries of ``v`` (all zero at the optimum)."""
    W, v = params["W"], params["v"]
    return float(math.sqrt(np.sum(W**2) - np.sum(W[:-1, :-1] ** 2) + np.sum(v[:-1] ** 2)))


# --- one run ---------------------------------------------------------------------------------


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
    config: Mapping[str, Any], run_dir: str | Path, *, progress: bool | None = None
) -> dict[str, Any]:
    """Train one run and write ``run_dir``: ``config.json`` (the options and the model's
    constructor arguments), ``params.npz`` (the final ``W (d+1, d+1)``, ``v (d+1, 1)``: the mean
    of the iterates when averaging), ``history.csv`` (the trainer's), ``errors.npz`` (``step``,
    ``rel_error`` of the live iterate) and ``metrics.json``. Returns the
    metrics: ``rel_error``, ``u``, ``off_block_norm``, ``test_loss`` and ``closed_form_loss``
    (on the same ``n_test`` test prompts), their theory ``risk`` ``R(N)``, and ``wall_s``."""
    start = time.perf_counter()
    run = prepare(config, progress=progress)
    o = run.options
    out = Path(run_dir)
    out.mkdir(parents=True, exist_ok=True)
    write_json(out / "config.json", {**o, "model": run.model.config})
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
    write_json(out / "metrics.json", metrics)
    return metrics


# --- the reproduction ------------------------------------------------------------------------

#: Test prompt lengths of the length-generalization curve and the covariate-shift factors.
LENGTHS = (5, 10, 20, 40, 80, 160)
SHIFTS = (0.5, 0.75, 1.0, 1.25, 1.5, 1.75, 2.0)
#: The targets the reproduction is checked against.
TARGETS = {
    "rel_error": 0.01,
    "test_vs_closed_form": 0.001,
    "gd_cosine": 0.9999,
    "gd_rel_l2": 0.01,
    "length": 0.03,
}


def _cosine(a: np.ndarray, b: np.ndarray) -> float:
    return float(np.vdot(a, b) / (np.linalg.norm(a) * np.linalg.norm(b)))


def compare_with_gd(
    params: Mapping[str, np.ndarray], d: int, N: int, seed: int, n: int
) -> tuple[dict[str, float], np.ndarray, np.ndarray]:
    """The trained layer against one step of GD with ``eta = N / (N + d + 1)`` on ``n`` test
    prompts with ``Lambda = I``: the cosine and the relative L2 distance ``||yhat - yhat_gd|| /
    ||yhat_gd||`` of the predictions, and the mean over prompts of the cosine of the
    sensitivities ``d yhat / d x_q``. Returns them with the predictions ``yhat``, ``yhat_gd``
    ``(n,)``."""
    eta = N / (N + d + 1)
    model = make_model(d)
    model.params.update({k: np.asarray(v) for k, v in params.items()})
    (E,) = (p.X for p in regression_test_prompts(n, N, np.eye(d), seed, chunk=n))
    yhat, ygd = model.predict(E), one_step_gd(E, eta)
    s, g = layer_sensitivity(E, params["W"], params["v"]), gd_sensitivity(E, eta)
    per_prompt = np.sum(s * g, axis=1) / (np.linalg.norm(s, axis=1) * np.linalg.norm(g, axis=1))
    metrics = {
        "eta": eta,
        "cosine": _cosine(yhat, ygd),
        "rel_l2": float(np.linalg.norm(yhat - ygd) / np.linalg.norm(ygd)),
        "sensitivity_cosine": float(np.mean(per_prompt)),
    }
    return metrics, yhat, ygd


def _usable_cores() -> int:
    try:
        return len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        return os.cpu_count() or 1


def train_runs(
    configs: Mapping[str, Mapping[str, Any]],
    out: Path,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, dict[str, Any]]:
    """:func:`run_experiment` for each ``name: config`` into ``out / name``, on ``workers``
    processes (None: the usable cores; 1: in this process). Returns the metrics by name, in the
    order of ``configs``; ``log`` gets a line as each run ends. The runs are independent, so
    their results do not depend on ``workers``."""
    workers = _usable_cores() if workers is None else positive("workers", workers, integer=True)
    workers = min(workers, len(configs))
    say = log or (lambda line: None)
    done: dict[str, dict[str, Any]] = {}

    def report(name: str, m: dict[str, Any]) -> None:
        done[name] = m
        say(
            f"{name}: rel_error {m['rel_error']:.4f}, test loss {m['test_loss']:.5f} (closed "
            f"form {m['closed_form_loss']:.5f}), {m['wall_s']:.1f} s [{len(done)}/{len(configs)}]"
        )

    if workers == 1:
        for name, config in configs.items():
            report(name, run_experiment(config, out / name, progress=False))
    else:
        context = multiprocessing.get_context("spawn")  # no fork of a threaded BLAS
        with ProcessPoolExecutor(workers, mp_context=context) as pool:
            futures = {
                pool.submit(run_experiment, config, out / name, progress=False): name
                for name, config in configs.items()
            }
            for future in as_completed(futures):
                report(futures[future], future.result())
    return {name: done[name] for name in configs}


def reproduce(
    out: str | Path,
    *,
    d: int = 5,
    N: int = 20,
    sigma: float = 0.1,
    seeds: Iterable[int] = range(5),
    steps: int | None = None,
    n_test: int | None = None,
    n_gd: int = 10_000,
    workers: int | None = None,
    log: Callable[[str], None] | None = None,
) -> dict[str, Any]:
    """Train every covariance of :data:`attnlab.tasks.COVARIANCES` and seed (one run folder
    each, ``<covariance>-seed<seed>``, see :func:`run_experiment`; on ``workers`` processes,
    see :func:`train_runs`), then on the first identity run measure the loss against the test
    length ``M`` with ``R(M)``, the comparison with one step of GD (``n_gd`` prompts) and the
    loss under covariate shift. Writes ``results.json``, ``results.md`` and the figures
    ``rel_error.png``, ``length.png``, ``gd.png``, ``shift.png`` into ``out``; ``log`` gets a
    line per finished part. Returns the results."""
    from attnlab.plots import plot_icl_gd, plot_icl_length, plot_icl_rel_error, plot_icl_shift

    seeds = [check_seed(s) for s in seeds]
    if not seeds:
        raise ValueError("seeds: expected at least one seed, received none")
    n_gd = positive("n_gd", n_gd, integer=True)
    say = log or (lambda line: None)
    out = Path(out)
    base = resolve({"d": d, "N": N, "sigma": sigma, "steps": steps, "n_test": n_test})
    out.mkdir(parents=True, exist_ok=True)
    configs = {
        f"{cov}-seed{seed}": {**base, "covariance": cov, "seed": seed}
        for cov in COVARIANCES
        for seed in seeds
    }
    metrics = train_runs(configs, out, workers, log)
    keys = ("rel_error", "u", "off_block_norm", "test_loss", "closed_form_loss", "wall_s")
    runs, errors = [], {}
    for name, m in metrics.items():
        runs.append({"covariance": m["covariance"], "seed": m["seed"], "run_dir": name})
        runs[-1].update({k: m[k] for k in keys})
        with np.load(out / name / "errors.npz") as f:
            curve = (m["seed"], f["step"], f["rel_error"], m["rel_error"])
        errors.setdefault(m["covariance"], []).append(curve)
    first = out / f"identity-seed{seeds[0]}"
    with np.load(first / "params.npz") as f:
        params = {k: f[k] for k in f.files}
    model = make_model(base["d"])
    model.params.update(params)
    I, n, s0 = np.eye(base["d"]), base["n_test"], seeds[0]
    A = np.linalg.inv(gamma(I, base["N"]))

    def loss(M: int, transform: Callable[[Dataset], Dataset] | None = None) -> float:
        return evaluate_predictors({"": model.predict}, I, M, s0, n, transform)[""]

    length = [{"M": M, "measured": loss(M), "theory": risk(A, I, M)} for M in LENGTHS]
    say(
        "length: " + ", ".join(f"M={r['M']} {r['measured'] / r['theory'] - 1:+.4f}" for r in length)
    )
    gd, yhat, ygd = compare_with_gd(params, base["d"], base["N"], s0, n_gd)
    say(f"gd: cosine {gd['cosine']:.6f}, relative L2 {gd['rel_l2']:.5f}")
    shift = [{"c": c, "loss": loss(base["N"], scale_inputs(c))} for c in SHIFTS]
    results = {"runs": runs, "length": length, "gd": gd, "shift": shift}
    write_json(out / "results.json", results)
    (out / "results.md").write_text(results_markdown(results, base))
    plot_icl_rel_error(errors, TARGETS["rel_error"], out / "rel_error.png")
    plot_icl_length(length, base["N"], out / "length.png")
    plot_icl_gd(yhat, ygd, gd, out / "gd.png")
    theory = [shift_risk(A, I, base["N"], c) for c in SHIFTS]
    plot_icl_shift(shift, theory, out / "shift.png")
    return results


def results_markdown(results: Mapping[str, Any], options: Mapping[str, Any]) -> str:
    """``results.md``: the tables of :func:`reproduce` with the paper's formulas and the
    targets next to the measured values."""
    d, N = options["d"], options["N"]
    t = TARGETS
    lines = [
        "# In-context linear regression: the trained linear layer against the closed form",
        "",
        f"d = {d}, N = {N}, sigma = {options['sigma']}, SGD {options['steps']} steps of "
        f"{options['batch_size']} fresh prompts, lr {options['lr']} divided by "
        f"{1 / options['factor']:g} at {', '.join(f'{m:.0%}' for m in options['milestones'])} "
        f"of the run"
        + (
            f", the parameters the mean of the iterates from {options['average']:.0%} on"
            if options["average"] is not None
            else ""
        )
        + f"; test losses on {options['n_test']} test prompts.",
        "",
        "Paper: `u W11 -> Gamma^-1` with `Gamma = (1 + 1/N) Lambda + (tr(Lambda)/N) I_d`; "
        "the closed-form predictor `x_q^T Gamma^-1 (1/N) sum_i y_i x_i` has the risk "
        "`R(N) = (tr(Lambda A Lambda Gamma A^T) - 2 tr(Lambda A Lambda) + tr(Lambda)) / 2`, "
        "`A = Gamma^-1`.",
        "",
        f"| covariance | seed | rel_error (<= {t['rel_error']}) | u | off-block norm | "
        f"test loss | closed-form loss | test / closed form - 1 (<= {t['test_vs_closed_form']}) "
        "| wall s |",
        "| --- | --- | --- | --- | --- | --- | --- | --- | --- |",
    ]
    for r in results["runs"]:
        gap = r["test_loss"] / r["closed_form_loss"] - 1
        lines.append(
            f"| {r['covariance']} | {r['seed']} | {r['rel_error']:.4f} | {r['u']:.3f} | "
            f"{r['off_block_norm']:.4f} | {r['test_loss']:.5f} | {r['closed_form_loss']:.5f} | "
            f"{gap:+.5f} | {r['wall_s']:.1f} |"
        )
    for cov in COVARIANCES:
        A = np.linalg.inv(gamma(covariance_matrix(cov, d), N))
        lines.append("")
        lines.append(f"`R(N)` for {cov}: {risk(A, covariance_matrix(cov, d), N):.5f}")
    lines += [
        "",
        "## Length generalization (identity, first seed)",
        "",
        "Trained at N, tested on prompts of M examples (the layer divides by M); theory "
        "`R(M)` with `A = Gamma_N^-1` and `Gamma_M` in the quadratic term.",
        "",
        f"| M | measured | R(M) | measured / R(M) - 1 (within +-{t['length']}) |",
        "| --- | --- | --- | --- |",
    ]
    for r in results["length"]:
        lines.append(
            f"| {r['M']} | {r['measured']:.5f} | {r['theory']:.5f} | "
            f"{r['measured'] / r['theory'] - 1:+.4f} |"
        )
    gd = results["gd"]
    lines += [
        "",
        "## One step of gradient descent (identity, first seed)",
        "",
        "`yhat_gd = eta x_q^T (1/N) sum_i y_i x_i` with `eta = N / (N + d + 1)` "
        f"= {gd['eta']:.6f} (for `Lambda = I`, `Gamma^-1 = eta I`).",
        "",
        "| cosine of predictions (>= 0.9999) | relative L2 (<= 0.01) | "
        "mean cosine of d yhat / d x_q |",
        "| --- | --- | --- |",
        f"| {gd['cosine']:.6f} | {gd['rel_l2']:.5f} | {gd['sensitivity_cosine']:.6f} |",
        "",
        "## Covariate shift (identity, first seed)",
        "",
        "Every test x scaled by c: the target scales as c, the prediction as c^3, so the "
        "closed form's risk is `c^2 (c^4 a - 2 c^2 b + tr(Lambda)) / 2` with "
        "`a = tr(Lambda A Lambda Gamma A^T)`, `b = tr(Lambda A Lambda)`.",
        "",
        "| c | measured loss | theory |",
        "| --- | --- | --- |",
    ]
    I = np.eye(d)
    A = np.linalg.inv(gamma(I, N))
    for r in results["shift"]:
        lines.append(f"| {r['c']:g} | {r['loss']:.5f} | {shift_risk(A, I, N, r['c']):.5f} |")
    return "\n".join(lines) + "\n"
