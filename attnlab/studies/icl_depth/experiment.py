"""One run of in-context regression with depth as an experiment: the options (:data:`DEFAULTS`,
:func:`resolve`), the model at its initialization (:func:`make_model`), the trainer on a stream
of fresh prompts with the optimizers of :mod:`.optimizers` (:func:`prepare`), the measures of a
trained model (:func:`measure`) and :func:`run_experiment`, which writes the run folder through
the run-folder layer.

The model is :class:`attnlab.models.regression_stack.RegressionStack`: ``L`` layers with
``A_l, B_l (d, d)``. Variant ``full`` trains both; ``gd`` holds ``B_l = 0`` (the trainer's
``trainable`` names the ``A_l`` alone), so the layers are steps of preconditioned gradient
descent. Training, on the squared loss ``mean (yhat - y_q)^2`` with ``batch_size`` fresh prompts
at every update (``prompts.stream``): Adam with the global gradient norm clipped at
``clip_norm`` and its rate ``lr`` decaying along a cosine to 0 at update ``sgd_from * steps``;
then plain SGD at the constant rate ``sgd_lr`` (``sgd_from`` None: Adam to the end, the cosine
over the whole run); with ``average``, the parameters returned are the mean of the iterates from
update ``average * steps`` on (Polyak-Ruppert); with ``whiten``, the optimizer works in the
coordinates whitened by the second moment of the first update's ``x``
(:class:`.optimizers.Whitened`; the model and its loss unchanged). Why two phases (``gd``): the
per-prompt loss is heavy tailed (a polynomial of degree ``2L`` in the eigenvalues of the
prompt's covariance), clipped and normalized steps are fast and stable but their fixed point is
biased (they weigh down the rare prompts the loss depends on), plain SGD is unbiased. Why
whitening: in the ``rotated`` setting Adam meets the ill-conditioned loss (``Sigma``'s
eigenvalues 1 to 1/16) in the coordinates ``A_l, B_l``; whitened, it trains as in the
``identity`` setting. The initial ``A_l, B_l`` are ``init_std`` times standard normal draws from
``default_rng([seed, 3])`` (the fourth stream of the run's seed, after training prompts, test
prompts and the rotation).
"""

from __future__ import annotations

import math
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np

from attnlab.models.regression_stack import RegressionStack
from attnlab.studies.icl_depth import forward, prompts, theory
from attnlab.studies.icl_depth.optimizers import AdamThenSGD, Trust, Whitened, second_moment
from mlp.train.folders import create_run_dir, finish_run, save_arrays
from mlp.train.optim import Adam, Averaged
from mlp.train.trainer import Trainer
from mlp.validation import check_seed, choice, known_options, positive

#: What sweeps and run ids call this experiment.
NAME = "icl-depth"
#: The two variants: both blocks trained, or ``B_l = 0`` held fixed.
VARIANTS = ("full", "gd")
#: The first entry of the seed sequence of the model's initialization (see :mod:`.prompts`).
INIT = 3
#: Every option of one run, with its default (the reproduction's setting; see
#: ``docs/icl_depth.md`` for how it was chosen).
DEFAULTS: dict[str, Any] = {
    "d": 5,
    "N": 20,
    "L": 1,
    "variant": "gd",
    "covariance": "identity",
    "seed": 0,
    "steps": 6000,
    "batch_size": 500,
    "lr": 0.1,
    "beta1": 0.9,
    "beta2": 0.999,
    "clip_norm": 0.01,
    "sgd_from": 0.4,
    "sgd_lr": 0.002,
    "average": 0.7,
    "whiten": True,
    "trust": False,
    "init_std": 1e-3,
    "n_test": 100_000,
    "chunk": 10_000,
    "n_history": 2_000,
    "eval_every": None,
}


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` completed by :data:`DEFAULTS` and checked: an unknown key or a bad value raises
    ``ValueError`` naming the option. ``whiten`` is true or false; ``clip_norm``, ``sgd_from``
    and ``average`` may be None (no clipping; Adam to the end; the last iterate); ``sgd_from``
    else a fraction of the run in ``(0, 1)``, ``average`` in ``[0, 1)``; ``eval_every`` None: 40
    rows of history per run."""
    known_options(config, DEFAULTS)
    o = {**DEFAULTS, **config}
    for name in ("d", "N", "L", "steps", "batch_size", "n_test", "chunk", "n_history"):
        o[name] = positive(name, o[name], integer=True)
    for name in ("lr", "sgd_lr", "init_std"):
        o[name] = float(positive(name, o[name]))
    for name in ("beta1", "beta2"):
        b = o[name]
        if isinstance(b, bool) or not isinstance(b, (int, float)) or not 0.0 <= b < 1.0:
            raise ValueError(f"{name}: expected a number in [0, 1), received {b!r}")
        o[name] = float(b)
    if o["clip_norm"] is not None:
        o["clip_norm"] = float(positive("clip_norm", o["clip_norm"]))
    for name in ("whiten", "trust"):
        if not isinstance(o[name], bool):
            raise ValueError(f"{name}: expected true or false, received {o[name]!r}")
    choice("variant", o["variant"], VARIANTS)
    choice("covariance", o["covariance"], prompts.COVARIANCES)
    o["seed"] = check_seed(o["seed"])
    prompts.covariance_root(o["covariance"], o["d"], o["seed"])  # d = 5 for 'rotated'
    if o["variant"] == "full" and o["L"] < 2:
        raise ValueError(
            "L: variant 'full' needs L >= 2 (the value block of the last layer never reaches "
            f"the prediction, so at L = 1 it is the 'gd' variant), received L = {o['L']}"
        )
    for name, low in (("sgd_from", 0.0), ("average", 0.0)):
        f = o[name]
        if f is not None and (
            isinstance(f, bool)
            or not isinstance(f, (int, float))
            or not low <= f < 1.0
            or (name == "sgd_from" and (f == 0.0 or math.floor(f * o["steps"]) < 1))
        ):
            where = "(0, 1), at least one update in" if name == "sgd_from" else "[0, 1)"
            raise ValueError(
                f"{name}: expected a fraction of the run in {where} or None, received {f!r}"
            )
    every = o["eval_every"] or max(1, o["steps"] // 40)
    o["eval_every"] = positive("eval_every", every, integer=True)
    return o


def make_model(o: Mapping[str, Any]) -> RegressionStack:
    """The model of resolved options ``o`` at its initialization: ``A_l`` (and for ``full``
    ``B_l``) ``init_std`` times standard normal draws from ``default_rng([seed, 3])``; ``B_l = 0``
    for ``gd``."""
    model = RegressionStack(o["d"], o["L"], init_std=o["init_std"], seed=o["seed"])
    rng = np.random.default_rng([o["seed"], INIT])
    for l in range(o["L"]):
        model.params[f"A{l}"] = o["init_std"] * rng.standard_normal((o["d"], o["d"]))
        B = o["init_std"] * rng.standard_normal((o["d"], o["d"]))
        model.params[f"B{l}"] = B if o["variant"] == "full" else np.zeros_like(B)
    return model


def trainable(o: Mapping[str, Any]) -> list[str]:
    """The trained keys: every ``A{l}`` and, for ``full``, every ``B{l}``."""
    keys = [f"A{l}" for l in range(o["L"])]
    return keys + ([f"B{l}" for l in range(o["L"])] if o["variant"] == "full" else [])


def switch_step(o: Mapping[str, Any]) -> int:
    """The first update of the SGD phase (``steps`` when Adam runs to the end)."""
    return o["steps"] if o["sgd_from"] is None else math.floor(o["sgd_from"] * o["steps"])


def schedule(o: Mapping[str, Any]) -> Callable[[int], float]:
    """The rate at update ``t``: ``lr (1 + cos(pi t / k)) / 2`` for ``t < k``, the first update
    of the SGD phase (:func:`switch_step`), then ``sgd_lr``."""
    k, lr, sgd_lr = switch_step(o), o["lr"], o["sgd_lr"]
    return lambda t: lr * (1.0 + math.cos(math.pi * t / k)) / 2.0 if t < k else sgd_lr


@dataclass
class Run:
    """A prepared run: resolved ``options``, the ``model``, the ``trainer`` and ``Sigma``."""

    options: dict[str, Any]
    model: RegressionStack
    trainer: Trainer
    Sigma: np.ndarray

    def finish(self) -> None:
        """After training: the parameters become the mean of the averaged iterates."""
        opt = self.trainer.optimizer
        if isinstance(opt, Averaged):
            self.model.params.update(opt.averaged(self.model.params))


def prepare(config: Mapping[str, Any], progress: bool | None = None) -> Run:
    """The model, the optimizer and the trainer of one run (see :func:`resolve`): update ``t``
    trains on ``batch_size`` prompts from ``default_rng([seed, 0, t])``; the history's test loss
    is on the first ``n_history`` test prompts."""
    o = resolve(config)
    model = make_model(o)
    kw = {"n": o["batch_size"], "d": o["d"], "N": o["N"], "covariance": o["covariance"]}
    inner: Any = AdamThenSGD(Adam(o["beta1"], o["beta2"], clip_norm=o["clip_norm"]), switch_step(o))
    if o["trust"]:
        inner = Trust(inner)
    if o["whiten"]:
        first = prompts.train_batch(o["seed"], 0, **kw)  # the first update's prompts
        inner = Whitened(inner, second_moment(first.X, o["d"]))
    opt = inner if o["average"] is None else Averaged(inner, math.floor(o["average"] * o["steps"]))
    (history_set,) = prompts.eval_prompts(
        o["seed"], **{**kw, "n": o["n_history"]}, chunk=o["n_history"]
    )
    trainer = Trainer(
        model,
        opt,
        prompts.stream(o["seed"], **kw),
        steps=o["steps"],
        lr=schedule(o),
        test=history_set,
        eval_every=o["eval_every"],
        eval_batch_size=o["chunk"],
        seed=o["seed"],
        trainable=trainable(o),
        progress=progress,
        description=f"{o['variant']} L={o['L']} {o['covariance']}, seed {o['seed']}",
    )
    Sigma = prompts.covariance_matrix(o["covariance"], o["d"], o["seed"])
    return Run(o, model, trainer, Sigma)


def one_layer_target(covariance: str, Sigma: np.ndarray, N: int) -> np.ndarray:
    """The optimal ``A_0 (d, d)`` of one layer: ``-Gamma^-1`` for ``identity`` (``w ~ N(0,
    I)``), ``-(N / (N + d + 1)) Sigma^-1`` for ``rotated`` (``w ~ N(0, Sigma^-1)``)."""
    Omega = np.eye(len(Sigma)) if covariance == "identity" else np.linalg.inv(Sigma)
    return theory.one_layer_optimum(Sigma, N, Omega)[0]


def measure(
    A: np.ndarray,
    B: np.ndarray,
    o: Mapping[str, Any],
    Sigma: np.ndarray,
) -> dict[str, Any]:
    """The measures of trained ``A, B (L, d, d)`` under resolved options ``o``:

    - ``test_loss`` (mean ``(yhat - y_q)^2`` over the ``n_test`` test prompts of the seed, in
      pieces of ``chunk``) and ``test_loss_se``, its standard error;
    - ``gd_optimal_loss``: the exact loss of the optimal ``L`` GD steps (:func:`theory.
      optimal_rates`; the same in both settings), and ``gd_same_prompts``: the loss of those
      steps (preconditioned by ``Sigma^-1``) on the same test prompts;
    - ``population_loss`` (``gd``; None for ``full``): the exact loss of the learned rates ``a``
      (:func:`theory.gd_loss`: GD preconditioned by ``-a_l Sigma^-1``) plus the mean difference,
      on the test prompts, between the learned matrices and those scalar steps: an unbiased
      estimate of the trained model's population loss whose Monte Carlo part is small (the
      test loss itself is heavy tailed: at ``L = 4`` its standard error on 100,000 prompts is
      several percent);
    - ``a``, ``dist_A``: per layer ``-tr(M_l) / d`` and the distance to identity of ``M_l =
      Sigma^1/2 A_l Sigma^1/2`` (``A_l`` itself for ``identity``, where ``Sigma = I``);
      ``b``, ``dist_B``: ``tr(K_l) / d`` and the distance of ``K_l = Sigma^-1/2 B_l Sigma^1/2``
      for the layers ``0..L-2`` (the last ``B`` never reaches the prediction; None for ``gd``);
    - ``A0_error`` (``L = 1``): ``||A_0 - A*||_F / ||A*||_F`` against :func:`one_layer_target`.
    """
    L, d, N = o["L"], o["d"], o["N"]
    model = RegressionStack(d, L)
    for l in range(L):
        model.params[f"A{l}"], model.params[f"B{l}"] = A[l], B[l]
    M, K = theory.whitened(A, B, Sigma)
    a = np.array([-np.trace(m) / d for m in M])
    rates, gd_loss = theory.optimal_rates(L, d, N)
    Sigma_inv = np.linalg.inv(Sigma)
    optimal = -rates[:, None, None] * Sigma_inv  # the optimal GD steps, preconditioned
    scalar = -a[:, None, None] * Sigma_inv  # the learned rates alone
    n, total, total_sq, total_gd, total_diff = 0, 0.0, 0.0, 0.0, 0.0
    pieces = prompts.eval_prompts(
        o["seed"], n=o["n_test"], d=d, N=N, covariance=o["covariance"], chunk=o["chunk"]
    )
    for part in pieces:
        yhat = model.predict(part.X)
        r2 = (yhat - part.y) ** 2
        g = forward.gd_predict(part.X, optimal) - part.y
        n, total, total_sq, total_gd = (
            n + len(r2),
            total + r2.sum(),
            total_sq + r2 @ r2,
            total_gd + g @ g,
        )
        if o["variant"] == "gd":
            s = forward.gd_predict(part.X, scalar) - part.y
            total_diff += float(r2.sum() - s @ s)
    mean = total / n
    out: dict[str, Any] = {
        "test_loss": float(mean),
        "test_loss_se": float(np.sqrt(max(total_sq / n - mean * mean, 0.0) / max(n - 1, 1))),
        "gd_optimal_loss": gd_loss,
        "gd_same_prompts": float(total_gd / n),
        "population_loss": None,
        "a": [float(v) for v in a],
        "dist_A": [float(theory.distance_to_identity(m)) for m in M],
        "b": None,
        "dist_B": None,
    }
    if o["variant"] == "gd":
        out["population_loss"] = float(theory.gd_loss(a, d, N) + total_diff / n)
    if o["variant"] == "full":
        out["b"] = [float(np.trace(k) / d) for k in K[:-1]]
        out["dist_B"] = [float(theory.distance_to_identity(k)) for k in K[:-1]]
    if L == 1:
        target = one_layer_target(o["covariance"], Sigma, N)
        out["A0_error"] = float(np.linalg.norm(A[0] - target) / np.linalg.norm(target))
    return out


def run_experiment(
    config: Mapping[str, Any],
    run_dir: str | Path | None = None,
    *,
    progress: bool | None = None,
) -> dict[str, Any]:
    """Train one run and write its new run folder ``run_dir`` (None: a new
    ``runs/icl-depth-<time>-<suffix>``; a folder that holds a run is refused): ``config.json``
    (the options, written before training), ``params.npz`` (``A (L, d, d)``, ``B (L, d, d)``,
    zeros for ``gd``, and the run's covariance ``Sigma (d, d)``), ``history.csv`` (the trainer's)
    and ``metrics.json`` (last): the measures of :func:`measure`, ``steps``, ``wall_s`` and the
    run's ``variant``, ``covariance``, ``L`` and ``seed``. Returns the metrics and ``run_dir``."""
    start = time.perf_counter()
    run = prepare(config, progress=progress)
    o = run.options
    out = create_run_dir(run_dir, NAME, config={**o, "model": run.model.config})
    found: dict[str, Any] = {}

    def write_files() -> None:
        run.finish()
        A, B = run.model.stacked()
        found.update(measure(A, B, o, run.Sigma))
        save_arrays(out / "params.npz", {"A": A, "B": B, "Sigma": run.Sigma})
        run.trainer.history.to_csv(out / "history.csv")

    def metrics() -> dict[str, Any]:
        keys = ("variant", "covariance", "L", "seed")
        return {
            **{k: o[k] for k in keys},
            **found,
            "steps": run.trainer.step,
            "wall_s": time.perf_counter() - start,
        }

    return finish_run(out, run.trainer, write_files, metrics, ("params.npz", "history.csv"))
