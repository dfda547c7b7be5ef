"""``svm-kq``: the ``(K, Q)`` runs of Tarzanagh et al. ("Transformers as Support Vector Machines",
arXiv 2308.16898, ``TFasSVM/local_converge.ipynb``): ``W = WK WQ^T`` trained by per-factor
normalized GD, its direction against the nuclear-norm SVM ``W_*``.

The setting is the ``max-margin`` task (:func:`attnlab.tasks.max_margin`: n = 6 prompts of
T = 8 unit tokens, d = 10, unit queries, a fixed unit head ``v``, labels +-1), cross attention
with the scores ``x_t^T WK WQ^T z_i``, the logistic loss, lr 0.1, 2000 iterations, float64. Each
factor starts ``U(-1/sqrt(d), 1/sqrt(d))`` (PyTorch's ``nn.Linear`` default, which the authors
use unseeded), drawn here by ``default_rng(seed)``, ``WK`` first. Three ways to take a step:

- ``authors``: the authors' recipe. The loss gets the penalty ``eps (||WK||_F^2 + ||WQ||_F^2)``
  and each factor moves by ``lr g / (||g||_F + eps)``, ``eps`` = float64's machine epsilon; the
  loss's gradients are exact (:class:`attnlab.models.logspace.LogSpaceKQModel` with
  ``scaled=False``: ``exp(M) G``, which agrees with :class:`attnlab.ContextWindowModel`'s exact
  backward to rounding and is four times faster here; the penalty holds the scores near 40, far
  from underflow).
- ``logspace``: no penalty, no epsilon; the direction ``g / ||g||_F`` of each factor from the
  gradient carried in log space (:mod:`attnlab.models.logspace`), which keeps its relative
  accuracy where float64's gradient is exactly zero.
- ``plain``: no penalty, no epsilon, the float64 gradient: it stalls once every non-selected
  softmax weight underflows (the gradient is exactly zero); ``stalled_at`` is that step.

A run writes ``config.json``, ``task.npz`` (``X (n, d, T)``, ``Z (n, d)``, ``y (n,)``,
``v (d,)``), ``params.npz`` (``WK``, ``WQ``), ``svm.npz`` (the selected tokens, ``W_*`` and the
Frobenius SVM ``W_mm``), ``curves.npz`` and ``metrics.json`` (last). The curves have one entry
per step ``s = 0..steps`` (a stalled run holds its last value): ``correlation`` (with ``W_*``),
``correlation_frobenius`` (with ``W_mm``), ``max_softmax`` (the largest softmax weight, mean over
prompts), ``norm_WK``, ``norm_WQ``, ``norm_W``. The selected token of a prompt is the argmax of
its final softmax. :mod:`attnlab.studies.svm_kq_report` runs the seeds and writes the report.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any

import numpy as np
from einops import rearrange

from attnlab.models.context_window import ContextWindowModel
from attnlab.models.logspace import LogSpaceKQModel
from attnlab.models.penalized import Penalized
from attnlab.svm import attention_svm, attention_svm_nuclear, cosines
from attnlab.tasks import REGISTRY, Task, fixed_head, make_task
from mlp.contract import contract
from mlp.numerics import softmax
from mlp.train.folders import create_run_dir, save_arrays, write_json
from mlp.train.optim import NormalizedGD
from mlp.train.trainer import Trainer
from mlp.validation import check_seed, choice, positive

__all__ = [
    "DEFAULTS",
    "EPS",
    "NAME",
    "SOFTMAX_STEP",
    "VARIANTS",
    "resolve",
    "run_experiment",
    "train",
]

NAME = "svm-kq"
#: The penalty and the epsilon of the authors' recipe: float64's machine epsilon, 2.2e-16
#: (``torch.finfo(torch.double).eps`` in their notebook).
EPS = float(np.finfo(np.float64).eps)
#: The three ways to take a step, and what each is.
VARIANTS = {
    "authors": "penalty eps(||WK||^2 + ||WQ||^2), steps lr g / (||g|| + eps), exact gradients",
    "logspace": "no penalty, steps lr g / ||g|| with g carried in log space",
    "plain": "no penalty, steps lr g / ||g|| with the float64 gradient (stalls at g = 0)",
}
#: The iteration at which the mean largest softmax weight is reported (``max_softmax_150``).
SOFTMAX_STEP = 150
_SETTING = REGISTRY["max-margin"].settings
DEFAULTS: dict[str, Any] = {
    "seed": 0,
    "variant": "authors",
    "steps": _SETTING["steps"],
    "lr": _SETTING["lr"],
    "eps": EPS,
}
#: A sweep's workers import these first (the SVM solvers are slow to import).
PRELOAD = ("cvxpy", "scipy.optimize")


def resolve(config: Mapping[str, Any]) -> dict[str, Any]:
    """``config`` completed by :data:`DEFAULTS` and checked; ``ValueError`` names an unknown
    option or a bad value."""
    if not isinstance(config, Mapping):
        raise TypeError(f"config: expected a mapping of options, received {type(config).__name__}")
    unknown = sorted(set(config) - set(DEFAULTS))
    if unknown:
        raise ValueError(f"config: unknown option(s) {unknown}; expected some of {list(DEFAULTS)}")
    cfg = {**DEFAULTS, **config}
    cfg["seed"] = check_seed(cfg["seed"])
    choice("variant", cfg["variant"], tuple(VARIANTS))
    cfg["steps"] = positive("steps", cfg["steps"], integer=True)
    cfg["lr"] = float(positive("lr", cfg["lr"]))
    cfg["eps"] = float(positive("eps", cfg["eps"]))
    return cfg


def _build(cfg: Mapping[str, Any]) -> tuple[Task, Any, NormalizedGD]:
    """The task of ``cfg['seed']``, the model of ``cfg['variant']`` with the task's head and the
    seeded factors, and its optimizer."""
    task = make_task("max-margin", context=_SETTING["context"], seed=cfg["seed"])
    d = task.d
    if cfg["variant"] in ("authors", "logspace"):
        model: Any = LogSpaceKQModel(d, scaled=cfg["variant"] == "logspace")
        model.params["v"] = np.asarray(task.info["v"], dtype=np.float64)[:, None]
    else:
        model = ContextWindowModel(d, attention="cross-kq", pool="mean", head="linear")
        fixed_head(task, model)
    rng = np.random.default_rng(cfg["seed"])
    bound = 1.0 / np.sqrt(d)
    for key in ("WK", "WQ"):
        model.params[key] = rng.uniform(-bound, bound, (d, d))
    if cfg["variant"] == "authors":
        return (
            task,
            Penalized(model, cfg["eps"], ("WK", "WQ")),
            NormalizedGD(per_param=True, eps=cfg["eps"]),
        )
    return task, model, NormalizedGD(per_param=True)


def max_softmax(X: np.ndarray, Z: np.ndarray, Ws: np.ndarray) -> np.ndarray:
    """``(s, n, c)`` softmax weights of prompts ``X (n, d, c)`` with queries ``Z (n, d)`` under
    each ``W_s`` of ``Ws (s, d, d)`` (scores ``x_t^T W_s z_i``)."""
    WZ = contract("n d, s e d -> s n e", Z, Ws)
    return softmax(rearrange(contract("s n e, n e c -> n s c", WZ, X), "n s c -> s n c"), axis=2)


def train(cfg: Mapping[str, Any], progress: bool | None = False) -> dict[str, Any]:
    """One run of the resolved ``cfg``: the task's arrays, the trained factors, the SVMs of the
    selected tokens, the curves and the metrics (see the module docstring)."""
    task, model, optimizer = _build(cfg)
    steps = cfg["steps"]
    d = task.d
    Ws, norms = np.empty((steps + 1, d, d)), np.empty((steps + 1, 2))

    def record(step: int, params: dict[str, np.ndarray]) -> None:
        Ws[step] = params["WK"] @ params["WQ"].T
        norms[step] = np.linalg.norm(params["WK"]), np.linalg.norm(params["WQ"])

    record(0, model.params)
    trainer = Trainer(
        model,
        optimizer,
        task.train,
        steps=steps,
        lr=cfg["lr"],
        trainable=["WK", "WQ"],
        eval_every=steps,
        progress=progress,
        description=f"svm-kq {cfg['variant']}, seed {cfg['seed']}",
        on_step=record,
    )
    trainer.run()
    done = trainer.step
    Ws[done + 1 :], norms[done + 1 :] = Ws[done], norms[done]  # a stalled run holds its values
    X, Z = task.train.X, task.train.inputs["Z"][:, :, 0]
    S = max_softmax(X, Z, Ws)  # (s, n, c)
    selected = np.argmax(S[-1], axis=1)
    nuclear = attention_svm_nuclear(X, Z, selected)
    frobenius = attention_svm(X, Z, selected)
    curves = {
        "correlation": cosines(Ws, nuclear.solution),
        "correlation_frobenius": cosines(Ws, frobenius.solution),
        "max_softmax": S.max(axis=2).mean(axis=1),
        "norm_WK": norms[:, 0],
        "norm_WQ": norms[:, 1],
        "norm_W": np.linalg.norm(Ws.reshape(steps + 1, -1), axis=1),
    }
    at = min(SOFTMAX_STEP, steps)
    metrics = {
        "correlation": float(curves["correlation"][-1]),
        "correlation_frobenius": float(curves["correlation_frobenius"][-1]),
        f"max_softmax_{SOFTMAX_STEP}": float(curves["max_softmax"][at]),
        "max_softmax": float(curves["max_softmax"][-1]),
        "stalled_at": None if trainer.stop_reason == "completed" else done,
        "norm_WK": float(norms[-1, 0]),
        "norm_WQ": float(norms[-1, 1]),
        "selects_optimal": int(np.sum(selected == task.train.target)),
        "nuclear_kkt": float(max(nuclear.kkt.values())),
        "stop_reason": trainer.stop_reason,
    }
    svm = {"selected": selected, "W_nuclear": nuclear.solution, "W_frobenius": frobenius.solution}
    task_arrays = {"X": X, "Z": Z, "y": task.train.y, "v": np.asarray(task.info["v"])}
    params = {k: model.params[k] for k in ("WK", "WQ")}
    return {"task": task_arrays, "params": params, "svm": svm, "curves": curves, "metrics": metrics}


def run_experiment(
    config: Mapping[str, Any], run_dir: str | Path, *, progress: bool | None = None
) -> dict[str, Any]:
    """One seed and variant (``config``, see :data:`DEFAULTS`) written to the run folder
    ``run_dir`` (see the module docstring); returns the metrics."""
    cfg = resolve(config)
    out = create_run_dir(run_dir, NAME, files=("curves.npz", "task.npz", "svm.npz"))
    run = train(cfg, progress)
    n, d, c = run["task"]["X"].shape
    write_json(
        out / "config.json",
        {
            **cfg,
            "variant_meaning": VARIANTS[cfg["variant"]],
            "task": {"name": "max-margin", "n": n, "d": d, "context": c},
            "init": "WK, WQ ~ U(-1/sqrt(d), 1/sqrt(d)) by default_rng(seed), WK first",
        },
    )
    save_arrays(out / "task.npz", run["task"])
    save_arrays(out / "params.npz", run["params"])
    save_arrays(out / "svm.npz", run["svm"])
    save_arrays(out / "curves.npz", run["curves"])
    write_json(out / "metrics.json", run["metrics"])  # last: the run folder is complete
    return run["metrics"]
